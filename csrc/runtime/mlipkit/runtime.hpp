// libmlipkit_runtime: load a compiled mlipkit artifact (.pt2 AOTInductor
// package or .pt TorchScript archive), validate its metadata and evaluate it.
//
// The artifact takes atom_types [N] (int64), edge_index [2, E] (int64; row 0
// sender, row 1 receiver, receivers non-decreasing) and edge_vectors [E, 3]
// (receiver - sender + periodic shift, in the artifact's dtype); artifacts of
// target "lammps" also take node_energy_mask [N] (bool): the atoms whose
// energies count (a LAMMPS rank's own atoms, not its ghosts). Forces,
// virial and per-atom virials are derived here from the edge forces
// f_e = -dE/d(edge_vectors) when the artifact does not return them itself.
#pragma once

#include <torch/torch.h>

#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlipkit {

// Every failure of the runtime: missing or corrupt file, foreign or newer
// artifact, wrong inputs. The message names the file and the offending value.
class ArtifactError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr int kArtifactFormatVersion = 2;

struct Metadata {
  std::map<std::string, std::string> entries;  // every mlipkit.* key, unparsed
  int format_version = 0;
  std::string model_name;
  std::vector<std::string> type_names;
  double r_max = 0.0;
  int num_message_passing_layers = 0;
  std::string units;  // LAMMPS unit style of the training data: "metal" or "real"
  std::string energy_unit;
  std::string length_unit;
  torch::Dtype dtype = torch::kFloat64;
  std::string device;  // "cpu" or "cuda"
  std::string mode;    // "aotinductor" or "torchscript"
  std::string target;  // "lammps", "ase" or "energy"
  std::vector<std::string> inputs;
  std::vector<std::string> outputs;
  std::vector<std::string> op_libraries;
  std::string mlipkit_version;

  bool has_output(const std::string& name) const;
  // Whether the artifact takes node_energy_mask (otherwise every atom's energy counts).
  bool takes_node_energy_mask() const;
  // Whether forces are available (as edge forces or directly).
  bool has_forces() const { return has_output("edge_forces") || has_output("forces"); }
  // Whether the forces are predicted directly (GemNet-OC's direct_forces), not the gradient of the energy:
  // then there is no virial, and a caller must keep only the forces of atoms whose environment is complete.
  bool direct_forces() const { return has_output("forces") && !has_output("edge_forces"); }
};

// Reads and validates the metadata without loading the compiled code.
Metadata read_metadata(const std::string& path);

struct Results {
  torch::Tensor energy;           // [] sum of the counted atomic_energies
  torch::Tensor atomic_energies;  // [N]
  torch::Tensor forces;           // [N, 3]     undefined for energy-only artifacts
  torch::Tensor virial;           // [3, 3]     sum over edges of edge_vector (x) edge_force; undefined for direct forces
  torch::Tensor atomic_virials;   // [N, 3, 3]  each edge's virial split between its two atoms; undefined for direct forces
  torch::Tensor edge_forces;      // [E, 3]     -dE/d(edge_vectors), when the artifact returns them
  // Mean-variance models only (undefined otherwise): the std of the energy per atom, |sum of the counted
  // atoms' terms| / their number, and each atom's signed term (callers that split a system sum these first).
  torch::Tensor energy_uncertainty;         // []
  torch::Tensor atomic_energy_uncertainty;  // [N]
};

// Forces and per-atom virials from edge forces (the C++ twin of
// mlipkit.nn.derivatives.forces_and_node_virials).
std::pair<torch::Tensor, torch::Tensor> forces_and_atomic_virials(
    const torch::Tensor& edge_index, const torch::Tensor& edge_vectors, const torch::Tensor& edge_forces,
    int64_t num_atoms);

class Model {
 public:
  // Loads the op libraries the artifact names, then the artifact itself.
  explicit Model(const std::string& path);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Metadata& metadata() const { return metadata_; }
  const std::string& path() const { return path_; }
  torch::Device device() const { return device_; }

  // The artifact's raw outputs, by name, after checking the inputs. An
  // undefined node_energy_mask counts every atom.
  std::map<std::string, torch::Tensor> run(
      const torch::Tensor& atom_types, const torch::Tensor& edge_index, const torch::Tensor& edge_vectors,
      const torch::Tensor& node_energy_mask = {});

  // Energy, per-atom energies, and (unless energy-only) forces, virial, per-atom virials.
  Results evaluate(const torch::Tensor& atom_types, const torch::Tensor& edge_index, const torch::Tensor& edge_vectors,
                   const torch::Tensor& node_energy_mask = {});

  // As evaluate, with edge vectors positions[receiver] - positions[sender] + edge_shifts
  // (edge_shifts [E, 3]: the Cartesian periodic shift of each edge; undefined for none).
  Results evaluate_positions(
      const torch::Tensor& atom_types, const torch::Tensor& positions, const torch::Tensor& edge_index,
      const torch::Tensor& edge_shifts = {});

 private:
  struct Backend;
  std::string path_;
  Metadata metadata_;
  torch::Device device_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace mlipkit
