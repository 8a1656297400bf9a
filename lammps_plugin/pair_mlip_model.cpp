// pair_mlip_model.h on the mlipkit runtime (compiled with torch's C++ string ABI).
#include "pair_mlip_model.h"

#include <mlipkit/runtime.hpp>

#include <algorithm>
#include <optional>
#include <string>

namespace mlipkit_lammps {

namespace {

std::vector<double> to_doubles(const torch::Tensor& tensor) {
  if (!tensor.defined()) return {};
  auto values = tensor.to(torch::kCPU, torch::kFloat64).contiguous();
  return {values.data_ptr<double>(), values.data_ptr<double>() + values.numel()};
}

// The runtime's halo exchange on tensors, through the pair style's on rows of doubles (in place for float64 on
// the CPU; otherwise through a float64 copy, of which forward changes only the other ranks' rows).
class TensorRowsExchange : public mlipkit::HaloExchange {
 public:
  TensorRowsExchange(FeatureExchange& rows, int64_t num_owned) : rows_(rows), num_owned_(num_owned) {}

  void forward(at::Tensor& node_features) override {
    auto rows = node_features.to(torch::kCPU, torch::kFloat64).contiguous();
    rows_.forward(rows.data_ptr<double>(), rows.size(0), static_cast<int>(rows.size(1)));
    if (!rows.is_same(node_features)) node_features.slice(0, num_owned_).copy_(rows.slice(0, num_owned_));
  }

  void reverse(at::Tensor& gradients) override {
    auto rows = gradients.to(torch::kCPU, torch::kFloat64).contiguous();
    rows_.reverse(rows.data_ptr<double>(), rows.size(0), static_cast<int>(rows.size(1)));
    if (!rows.is_same(gradients)) gradients.copy_(rows);
  }

 private:
  FeatureExchange& rows_;
  int64_t num_owned_;
};

// The runtime's halo exchange for the duration of one call (none when `exchange` is null).
class ExchangeDuringCall {
 public:
  ExchangeDuringCall(FeatureExchange* exchange, int64_t num_owned) {
    if (exchange == nullptr) return;
    rows_.emplace(*exchange, num_owned);
    scope_.emplace(&*rows_);
  }

 private:
  std::optional<TensorRowsExchange> rows_;
  std::optional<mlipkit::HaloExchangeScope> scope_;
};

}  // namespace

struct ArtifactModel::Impl {
  explicit Impl(const char* path) : model(path) {}

  // The runtime's inputs for one graph (tensors over the graph's buffers, converted to the model's dtype).
  struct Inputs {
    torch::Tensor atom_types, edge_index, edge_vectors, node_energy_mask;
    mlipkit::ChargeInputs charges;
  };

  Inputs inputs(const Graph& graph) const {
    const auto dtype = model.metadata().dtype;
    auto index = [](const int64_t* senders, const int64_t* receivers, int64_t count) {
      return torch::stack({torch::from_blob(const_cast<int64_t*>(senders), {count}, torch::kInt64),
                           torch::from_blob(const_cast<int64_t*>(receivers), {count}, torch::kInt64)});
    };
    auto vectors = [dtype](const double* values, int64_t count) {
      return torch::from_blob(const_cast<double*>(values), {count, 3}, torch::kFloat64).to(dtype);
    };
    Inputs in;
    in.atom_types = torch::from_blob(const_cast<int64_t*>(graph.types), {graph.num_nodes}, torch::kInt64);
    in.edge_index = index(graph.senders, graph.receivers, graph.num_edges);
    in.edge_vectors = vectors(graph.edge_vectors, graph.num_edges);
    in.node_energy_mask = torch::arange(graph.num_nodes) < graph.num_owned;
    in.charges.total_charge = graph.total_charge;
    if (model.metadata().long_range_cutoff > 0.0) {
      in.charges.lr_edge_index = index(graph.long_range_senders, graph.long_range_receivers, graph.num_long_range_edges);
      in.charges.lr_edge_vectors = vectors(graph.long_range_edge_vectors, graph.num_long_range_edges);
    }
    if (graph.positions != nullptr && graph.box_h != nullptr) {
      // the lattice vectors are the rows of LAMMPS's (lower triangular) h
      const double* h = graph.box_h;
      auto cell = torch::tensor({h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]}, torch::kFloat64).reshape({3, 3});
      in.charges.positions = vectors(graph.positions, graph.num_nodes);
      in.charges.cell = cell.to(dtype);
      in.charges.pbc = torch::ones({3}, torch::kBool);
      in.charges.k_indices = mlipkit::ewald_k_indices(cell, model.metadata().ewald_k_max, dtype);
    }
    return in;
  }

  mlipkit::Model model;
  ArtifactInfo info;
};

ArtifactModel::ArtifactModel(const char* path) : impl_(std::make_unique<Impl>(path)) {
  const mlipkit::Metadata& metadata = impl_->model.metadata();
  ArtifactInfo& info = impl_->info;
  info.model_name = metadata.model_name.c_str();
  info.target = metadata.target.c_str();
  info.units = metadata.units.c_str();
  info.energy_unit = metadata.energy_unit.c_str();
  info.length_unit = metadata.length_unit.c_str();
  info.coulomb_method = metadata.coulomb_method.c_str();
  info.dtype = metadata.dtype == torch::kFloat64 ? "float64" : "float32";
  for (const auto& name : metadata.type_names) info.type_names.push_back(name.c_str());
  info.available_total_charges = metadata.available_total_charges;
  info.r_max = metadata.r_max;
  info.long_range_cutoff = metadata.long_range_cutoff;
  info.num_message_passing_layers = metadata.num_message_passing_layers;
  info.halo_exchange_width = metadata.halo_exchange_width;
  info.edge_forces = metadata.has_output("edge_forces");
  info.direct_forces = metadata.direct_forces();
  info.takes_node_energy_mask = metadata.takes_node_energy_mask();
  info.energy_uncertainty = metadata.has_output("node_energy_uncertainty");
  info.halo_exchange = metadata.halo_exchange;
  info.predicts_charges = metadata.predicts_charges();
  info.takes_total_charge = metadata.takes("total_charge");
  info.global_charge_correction = metadata.global_charge_correction();
  info.ewald = metadata.coulomb_method == "ewald";
}

ArtifactModel::~ArtifactModel() = default;

const ArtifactInfo& ArtifactModel::info() const { return impl_->info; }

void ArtifactModel::set_num_threads(int num_threads) { torch::set_num_threads(std::max(num_threads, 1)); }

void ArtifactModel::charge_correction_terms(const Graph& graph, FeatureExchange* exchange, double terms[4]) {
  Impl::Inputs in = impl_->inputs(graph);
  ExchangeDuringCall during(exchange, graph.num_owned);
  in.charges.charge_shift = 0.0;
  in.charges.charge_shift_weight = 0.0;
  const auto values = to_doubles(impl_->model.charge_correction_terms(in.atom_types, in.edge_index, in.edge_vectors,
                                                                      in.node_energy_mask, in.charges));
  if (values.size() != 4) throw std::runtime_error("the artifact's charge_correction_terms gave " +
                                                   std::to_string(values.size()) + " values, not 4");
  std::copy(values.begin(), values.end(), terms);
}

void ArtifactModel::evaluate(const Graph& graph, double charge_shift, double charge_shift_weight,
                             FeatureExchange* exchange, Evaluation& evaluation) {
  Impl::Inputs in = impl_->inputs(graph);
  in.charges.charge_shift = charge_shift;
  in.charges.charge_shift_weight = charge_shift_weight;
  ExchangeDuringCall during(exchange, graph.num_owned);
  const mlipkit::Results results =
      impl_->model.evaluate(in.atom_types, in.edge_index, in.edge_vectors, in.node_energy_mask, in.charges);
  evaluation.energies = to_doubles(results.atomic_energies);
  evaluation.forces = to_doubles(results.forces);
  evaluation.virials = impl_->info.direct_forces ? std::vector<double>{} : to_doubles(results.atomic_virials);
  evaluation.charges = to_doubles(results.charges);
  evaluation.energy_uncertainty = to_doubles(results.atomic_energy_uncertainty);
}

}  // namespace mlipkit_lammps
