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
//
// Models with partial charges take more inputs (ChargeInputs): the total
// charge, a second edge list at the long-range cutoff, for Ewald the positions,
// cell, pbc and k vectors, and for callers that hold part of a system (LAMMPS
// ranks) the charge correction's shift and its weight.
#pragma once

#include <torch/torch.h>

#include "mlipkit/halo_exchange.hpp"

#include <limits>
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
  // electrostatics: 0 / "none" / empty when the model has none
  double long_range_cutoff = 0.0;
  std::string coulomb_method = "none";     // "damped_shifted", "ewald", "mlip_parity"
  std::string charge_correction = "none";  // "uniform", "weighted", "none"
  std::vector<double> available_total_charges;  // the categorical total-charge embedding's
  double ewald_k_max = 0.0;
  std::vector<std::string> entry_points;  // functions beside the main one, with its inputs
  // The artifact calls mlipkit::halo_exchange between its layers (a caller holding part of a system registers a
  // HaloExchange, see HaloExchangeScope), with rows at most halo_exchange_width wide.
  bool halo_exchange = false;
  int halo_exchange_width = 0;

  bool has_output(const std::string& name) const;
  // Whether the artifact takes node_energy_mask (otherwise every atom's energy counts).
  bool takes_node_energy_mask() const;
  // Whether forces are available (as edge forces or directly).
  bool has_forces() const { return has_output("edge_forces") || has_output("forces"); }
  // Whether the forces are predicted directly (GemNet-OC's direct_forces), not the gradient of the energy:
  // then there is no virial, and a caller must keep only the forces of atoms whose environment is complete.
  bool direct_forces() const { return has_output("forces") && !has_output("edge_forces"); }
  bool takes(const std::string& input) const;
  bool predicts_charges() const { return has_output("charges"); }
  // Whether the charge correction couples every atom (a caller holding part of a system needs two passes).
  bool global_charge_correction() const { return takes("charge_shift"); }
};

struct ChargeInputs {
  double total_charge = 0.0;
  // The charge correction's shift c; NaN: the artifact corrects over the counted atoms itself (the whole system).
  double charge_shift = std::numeric_limits<double>::quiet_NaN();
  double charge_shift_weight = 0.0;  // (dE/dc) / sum f over the whole system, when the shift is given
  torch::Tensor lr_edge_index;       // [2, E'] int64, sorted by receiver
  torch::Tensor lr_edge_vectors;     // [E', 3]
  torch::Tensor positions;           // Ewald: [N, 3]
  torch::Tensor cell;                // Ewald: [3, 3], rows are the lattice vectors
  torch::Tensor pbc;                 // Ewald: [3] bool
  torch::Tensor k_indices;           // Ewald: [K, 3], from ewald_k_indices
};

// Ewald's k vectors as integer multiples n of the reciprocal basis (as floating point), one of each pair +-n,
// |2 pi n cell^-T| <= k_max; the C++ twin of mlipkit.data.neighbours.ewald_k_indices.
torch::Tensor ewald_k_indices(const torch::Tensor& cell, double k_max, torch::Dtype dtype);

// Registers `exchange` with the op library (loaded by a Model first) while the scope lives: the halo exchange ops of
// artifacts with Metadata::halo_exchange then call it. One at a time per process.
class HaloExchangeScope {
 public:
  explicit HaloExchangeScope(HaloExchange* exchange);
  ~HaloExchangeScope();
  HaloExchangeScope(const HaloExchangeScope&) = delete;
  HaloExchangeScope& operator=(const HaloExchangeScope&) = delete;

 private:
  void (*set_exchange_)(HaloExchange*) = nullptr;
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
  torch::Tensor charges;  // models with partial charges only: [N]
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
      const torch::Tensor& node_energy_mask = {}, const ChargeInputs& charge_inputs = {});

  // The charge_correction_terms entry point (a forward pass): the counted atoms' [sum q~, sum f, dE/dc,
  // d^2E/dc^2] at charge_inputs.charge_shift, for callers that hold part of a system (see pair_mlip).
  torch::Tensor charge_correction_terms(const torch::Tensor& atom_types, const torch::Tensor& edge_index,
                                        const torch::Tensor& edge_vectors, const torch::Tensor& node_energy_mask,
                                        const ChargeInputs& charge_inputs);

  // Energy, per-atom energies, and (unless energy-only) forces, virial, per-atom virials (with the
  // long-range edges' and Ewald's terms), and the charges of models that predict them.
  Results evaluate(const torch::Tensor& atom_types, const torch::Tensor& edge_index, const torch::Tensor& edge_vectors,
                   const torch::Tensor& node_energy_mask = {}, const ChargeInputs& charge_inputs = {});

  // As evaluate, with edge vectors positions[receiver] - positions[sender] + edge_shifts
  // (edge_shifts [E, 3]: the Cartesian periodic shift of each edge; undefined for none).
  Results evaluate_positions(
      const torch::Tensor& atom_types, const torch::Tensor& positions, const torch::Tensor& edge_index,
      const torch::Tensor& edge_shifts = {});

 private:
  std::vector<torch::Tensor> checked_inputs(const torch::Tensor& atom_types, const torch::Tensor& edge_index,
                                            const torch::Tensor& edge_vectors, const torch::Tensor& node_energy_mask,
                                            const ChargeInputs& charge_inputs) const;
  struct Backend;
  std::string path_;
  Metadata metadata_;
  torch::Device device_;
  std::unique_ptr<Backend> backend_;
};

}  // namespace mlipkit
