// pair_style mlip: a compiled mlipkit artifact as a LAMMPS pair style.
//
// Each step builds the graph the artifact takes from LAMMPS's full neighbour
// list, evaluates it through the mlipkit C++ runtime, and hands back energies,
// forces, the virial and per-atom energies and virials in LAMMPS units.
//
// Message passing reaches num_message_passing_layers x r_max. On one rank
// every ghost atom is a periodic image of an owned atom and becomes an edge
// to its owner (no extra graph nodes). On several ranks the ghost shell is
// layers x r_max + skin thick; ghost atoms that are images of owned atoms
// are again folded onto their owners, the others become graph nodes whose
// energies are masked out, and forces on them travel home through LAMMPS's
// reverse communication (hence newton on).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "pair.h"

namespace mlipkit {
class Model;
}

namespace LAMMPS_NS {

class PairMLIP : public Pair {
 public:
  explicit PairMLIP(class LAMMPS*);
  ~PairMLIP() override;
  void compute(int eflag, int vflag) override;
  void settings(int narg, char** arg) override;
  void coeff(int narg, char** arg) override;
  void init_style() override;
  double init_one(int i, int j) override;
  void finish() override;

 private:
  void allocate();
  void build_graph();

  std::unique_ptr<mlipkit::Model> model_;
  std::string model_path_;
  std::string required_dtype_;         // "" or the dtype `pair_style mlip dtype ...` insists on
  std::vector<int64_t> model_type_;    // LAMMPS type (1-based) -> model type index
  double r_max_ = 0.0;
  int num_layers_ = 0;
  double energy_factor_ = 1.0;         // model energy unit -> LAMMPS energy unit
  bool ghost_nodes_ = false;           // several ranks: remote ghost atoms are graph nodes

  // the graph of one step
  std::vector<int> node_atom_;         // graph node -> LAMMPS atom index
  std::vector<int> atom_node_;         // LAMMPS atom index -> graph node (-1: not in the graph)
  std::unordered_map<tagint, int> local_of_tag_;
  std::vector<int64_t> senders_, receivers_;
  std::vector<double> edge_vectors_;

  // where the time of compute() goes, since the last init
  int evaluations_ = 0;
  std::chrono::duration<double> model_time_{0.0};
  std::chrono::duration<double> total_time_{0.0};
};

}  // namespace LAMMPS_NS
