// Evaluate an mlipkit artifact on an (extended) XYZ structure: read it, build
// a full neighbour list within the artifact's r_max, print energy and forces.
//   mlipkit_example model.pt2 structure.xyz
#include <mlipkit/runtime.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <regex>
#include <sstream>

namespace {

struct Structure {
  std::vector<std::string> symbols;
  torch::Tensor positions;                     // [N, 3] float64
  torch::Tensor cell = torch::zeros({3, 3}, torch::kFloat64);  // rows are lattice vectors
  std::array<bool, 3> pbc{false, false, false};
};

Structure read_xyz(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open structure file " + path);
  std::string line;
  int64_t count = 0;
  if (!std::getline(file, line) || !(std::istringstream(line) >> count) || count <= 0) {
    throw std::runtime_error(path + ": line 1 must be the number of atoms, got '" + line + "'");
  }
  std::string comment;
  std::getline(file, comment);
  Structure structure;
  std::smatch match;
  if (std::regex_search(comment, match, std::regex("Lattice=\"([^\"]*)\""))) {
    std::istringstream values(match[1].str());
    auto cell = structure.cell.accessor<double, 2>();
    for (int i = 0; i < 9; ++i) {
      if (!(values >> cell[i / 3][i % 3])) throw std::runtime_error(path + ": Lattice needs 9 numbers");
    }
    structure.pbc = {true, true, true};
  }
  if (std::regex_search(comment, match, std::regex("pbc=\"([^\"]*)\""))) {
    std::istringstream flags(match[1].str());
    for (auto& periodic : structure.pbc) {
      std::string flag;
      flags >> flag;
      periodic = flag == "T" || flag == "True" || flag == "1";
    }
  }
  structure.positions = torch::zeros({count, 3}, torch::kFloat64);
  auto positions = structure.positions.accessor<double, 2>();
  for (int64_t i = 0; i < count; ++i) {
    std::string symbol;
    if (!std::getline(file, line) || !(std::istringstream(line) >> symbol >> positions[i][0] >> positions[i][1] >> positions[i][2])) {
      throw std::runtime_error(path + ": atom line " + std::to_string(i + 1) + " must be 'symbol x y z', got '" + line + "'");
    }
    structure.symbols.push_back(symbol);
  }
  return structure;
}

// Full neighbour list, sorted by receiver: edge (sender j, receiver i, image S)
// with vector x_i + S.cell - x_j shorter than r_max. Positions are wrapped into
// the cell along periodic directions first.
std::pair<torch::Tensor, torch::Tensor> neighbour_list(const Structure& structure, double r_max) {
  auto positions = structure.positions.clone();
  std::array<int64_t, 3> images{0, 0, 0};
  if (structure.pbc[0] || structure.pbc[1] || structure.pbc[2]) {
    double volume = std::abs(torch::det(structure.cell).item<double>());
    if (volume < 1e-12) throw std::runtime_error("periodic structure with a zero-volume cell");
    auto fractional = torch::matmul(positions, torch::inverse(structure.cell));
    for (int k = 0; k < 3; ++k) {
      if (!structure.pbc[k]) continue;
      fractional.select(1, k).sub_(torch::floor(fractional.select(1, k)));
      auto a = structure.cell[(k + 1) % 3];
      auto b = structure.cell[(k + 2) % 3];
      double plane_spacing = volume / torch::linalg_cross(a, b).norm().item<double>();
      images[k] = static_cast<int64_t>(std::ceil(r_max / plane_spacing));
    }
    positions = torch::matmul(fractional, structure.cell);
  }
  const int64_t n = positions.size(0);
  auto pair_vectors = positions.unsqueeze(1) - positions.unsqueeze(0);  // [receiver, sender, 3]
  auto receivers = torch::arange(n).unsqueeze(1).expand({n, n});
  auto senders = torch::arange(n).unsqueeze(0).expand({n, n});
  std::vector<torch::Tensor> edge_receivers, edge_senders, edge_vectors;
  for (int64_t a = -images[0]; a <= images[0]; ++a) {
    for (int64_t b = -images[1]; b <= images[1]; ++b) {
      for (int64_t c = -images[2]; c <= images[2]; ++c) {
        auto shift = torch::tensor({double(a), double(b), double(c)}, torch::kFloat64).matmul(structure.cell);
        auto vectors = pair_vectors + shift;
        auto lengths = vectors.norm(2, 2);
        auto inside = lengths < r_max;
        if (a == 0 && b == 0 && c == 0) inside &= receivers != senders;
        if ((inside & (lengths < 1e-4)).any().item<bool>()) {
          throw std::runtime_error("two atoms are closer than 1e-4 Angstrom: atoms on top of each other");
        }
        edge_receivers.push_back(receivers.masked_select(inside));
        edge_senders.push_back(senders.masked_select(inside));
        edge_vectors.push_back(vectors.index({inside}));
      }
    }
  }
  auto receiver = torch::cat(edge_receivers);
  auto sender = torch::cat(edge_senders);
  auto order = torch::argsort(receiver * n + sender, /*stable=*/true);
  auto edge_index = torch::stack({sender.index_select(0, order), receiver.index_select(0, order)});
  return {edge_index, torch::cat(edge_vectors).index_select(0, order)};
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " model.pt2|model.pt structure.xyz\n";
    return 2;
  }
  try {
    mlipkit::Model model(argv[1]);
    const auto& metadata = model.metadata();
    Structure structure = read_xyz(argv[2]);
    std::vector<int64_t> types;
    for (const auto& symbol : structure.symbols) {
      auto found = std::find(metadata.type_names.begin(), metadata.type_names.end(), symbol);
      if (found == metadata.type_names.end()) {
        throw std::runtime_error("element '" + symbol + "' is not one of the model's type names");
      }
      types.push_back(found - metadata.type_names.begin());
    }
    auto [edge_index, edge_vectors] = neighbour_list(structure, metadata.r_max);
    auto results = model.evaluate(torch::tensor(types, torch::kInt64), edge_index, edge_vectors.to(metadata.dtype));
    std::printf("atoms %zu edges %ld\n", types.size(), static_cast<long>(edge_index.size(1)));
    std::printf("energy %.15e %s\n", results.energy.item<double>(), metadata.energy_unit.c_str());
    if (results.forces.defined()) {
      auto forces = results.forces.to(torch::kFloat64).cpu();
      auto values = forces.accessor<double, 2>();
      std::printf("forces %s/%s\n", metadata.energy_unit.c_str(), metadata.length_unit.c_str());
      for (size_t i = 0; i < types.size(); ++i) {
        std::printf("%-3s %22.15e %22.15e %22.15e\n", structure.symbols[i].c_str(), values[i][0], values[i][1], values[i][2]);
      }
    }
  } catch (const std::exception& error) {
    std::cerr << "error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
