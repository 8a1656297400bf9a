// pair_style mlip: a compiled mlipkit artifact as a LAMMPS pair style.
//
// Each step builds the graph the artifact takes from LAMMPS's full neighbour
// list, evaluates it through the mlipkit C++ runtime, and hands back energies,
// forces, the virial and per-atom energies and virials in LAMMPS units.
//
// Message passing reaches num_message_passing_layers x r_max. The graph has
// one node per atom, never one per periodic image: an edge to a ghost atom
// that is an image of an owned atom is an edge to the owned atom. On one rank
// that is every ghost, so the graph is exactly the periodic graph of the
// owned atoms. On several ranks (`pair_style mlip comm halo|shell`):
//
// - halo (default for artifacts that can): each rank's graph has edges into
//   its own atoms only; the atoms owned elsewhere that they reach (one cutoff
//   of ghosts) are nodes whose features the artifact's halo exchange op takes
//   from their owners before every layer but the first (LAMMPS forward
//   communication, through this pair style's pack/unpack), and whose
//   gradients its backward pass sums onto their owners (reverse
//   communication). No rank repeats another's work.
// - shell: the ghost shell is layers x r_max + skin thick; atoms owned by
//   other ranks within layers hops become nodes, with their energies masked
//   out, and each rank evaluates its atoms' whole receptive field.
//
// Either way the forces on ghost nodes travel home through LAMMPS's reverse
// communication (hence newton on).
//
// Mean-variance models also give the std of the energy per atom: the pair
// style sums its owned atoms' terms over all ranks and publishes the result
// (in LAMMPS energy units) as the first extra value of the pair style, so
// `compute ID all pair mlip` gives it as c_ID[1] for thermo output, variables
// and fix halt.
//
// Models with partial charges and a Coulomb term also get a second edge list
// at the long-range cutoff (the neighbour list reaches it) and the system's
// total charge (`pair_style mlip charge Q`, default 0); the predicted charges
// are written to atom->q when the atom style has charges. On several ranks the
// ghost shell is layers x r_max + long-range cutoff + skin thick, and a charge
// correction that couples all atoms takes two evaluations per step: the first
// gives each rank's raw-charge sums and dE/dc terms, summed over ranks into the
// shift c and its weight, which the second takes (exact, see docs/lammps/pair_style.md#models-with-charges).
// Ewald sums run on one rank of a periodic box.
// Compiled into LAMMPS (install_into_lammps.sh), LAMMPS's style registry reads the PairStyle line.
#ifdef PAIR_CLASS
// clang-format off
PairStyle(mlip, PairMLIP);
// clang-format on
#else

#ifndef MLIPKIT_PAIR_MLIP_H
#define MLIPKIT_PAIR_MLIP_H

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "lammps_compat.h"
#include "pair.h"
#include "pair_mlip_model.h"

namespace LAMMPS_NS {

class PairMLIP : public Pair {
 public:
  explicit PairMLIP(class LAMMPS*);
  ~PairMLIP() override;
  void compute(int eflag, int vflag) override;
  void settings(int narg, char** arg) override;
  void coeff(int narg, char** arg) override;
  void init_style() override;
  void init_list(int id, class NeighList* list) override;
  double init_one(int i, int j) override;
#if MLIPKIT_PAIR_HAS_FINISH
  void finish() override;
#endif
  int pack_forward_comm(int n, int* list, double* buf, int pbc_flag, int* pbc) override;
  void unpack_forward_comm(int n, int first, double* buf) override;
  int pack_reverse_comm(int n, int first, double* buf) override;
  void unpack_reverse_comm(int n, int* list, double* buf) override;

 private:
  // What the artifact's halo exchange ops call during an evaluation (comm halo).
  class GhostFeatureExchange : public mlipkit_lammps::FeatureExchange {
   public:
    explicit GhostFeatureExchange(PairMLIP& pair) : pair_(pair) {}
    void forward(double* rows, int64_t num_rows, int width) override { pair_.send_features_to_ghosts(rows, num_rows, width); }
    void reverse(double* rows, int64_t num_rows, int width) override { pair_.return_ghost_gradients(rows, num_rows, width); }

   private:
    PairMLIP& pair_;
  };
  void prepare_halo_rows(int64_t num_rows, int width, const char* what);
  void send_features_to_ghosts(double* rows, int64_t num_rows, int width);
  void return_ghost_gradients(double* rows, int64_t num_rows, int width);
  GhostFeatureExchange ghost_feature_exchange_{*this};

  void allocate();
  void build_graph();
  void add_long_range_edges();
  int node_of(int atom_index);
  mlipkit_lammps::Graph graph(const std::vector<int64_t>& types);
  void publish_energy_uncertainty(double owned_terms_sum);

  std::unique_ptr<mlipkit_lammps::ArtifactModel> model_;
  std::string model_path_;
  std::string required_dtype_;         // "" or the dtype `pair_style mlip dtype ...` insists on
  std::vector<int64_t> model_type_;    // LAMMPS type (1-based) -> model type index
  double r_max_ = 0.0;
  int num_layers_ = 0;
  double energy_factor_ = 1.0;         // model energy unit -> LAMMPS energy unit
  bool ghost_nodes_ = false;           // several ranks: remote ghost atoms are graph nodes
  std::string comm_mode_;              // `pair_style mlip comm halo|shell`; empty: halo where the artifact can
  bool halo_ = false;                  // several ranks exchange node features between layers
  bool energy_uncertainty_ = false;    // the artifact gives per-atom terms of the energy's std
  bool direct_forces_ = false;         // the artifact predicts per-atom forces (no edge forces, no virial)
  bool virial_warned_ = false;         // direct forces: the missing virial was reported
  double total_charge_ = 0.0;          // `pair_style mlip charge Q`
  bool charge_given_ = false;
  double long_range_cutoff_ = 0.0;     // > 0: the artifact takes a second edge list at this cutoff
  bool ewald_ = false;                 // Ewald sums: positions, cell and k vectors too

  // the graph of one step
  std::vector<int> node_atom_;         // graph node -> LAMMPS atom index (owned, or the image that speaks for it)
  std::vector<int> atom_node_;         // LAMMPS atom index -> graph node (-1: not in the graph)
  std::unordered_map<tagint, int> node_of_tag_;
  std::vector<int64_t> senders_, receivers_;
  std::vector<double> edge_vectors_;
  std::vector<int64_t> lr_senders_, lr_receivers_;
  std::vector<double> lr_edge_vectors_;
  // one halo exchange: a row of halo_width_ values per LAMMPS atom (owned and ghost)
  std::vector<double> halo_rows_;
  int halo_width_ = 0;

  // where the time of compute() goes, since the last init
  int evaluations_ = 0;
  std::chrono::duration<double> model_time_{0.0};
  std::chrono::duration<double> exchange_time_{0.0};  // inside the model: halo exchanges (communication and copies)
  double owned_node_count_ = 0.0;      // graph nodes summed over evaluations: this rank's atoms, and the others
  double ghost_node_count_ = 0.0;
  double compute_cpu_seconds_ = 0.0;   // CPU time in compute(), all threads
  double exchange_cpu_seconds_ = 0.0;  // the part in halo exchanges (oversubscribed ranks spin while they wait)
  std::chrono::duration<double> total_time_{0.0};
};

}  // namespace LAMMPS_NS

#endif  // MLIPKIT_PAIR_MLIP_H
#endif  // PAIR_CLASS
