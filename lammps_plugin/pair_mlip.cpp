#include "pair_mlip.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <limits>
#include <stdexcept>

#include <sys/resource.h>

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "fix.h"
#include "memory.h"
#include "modify.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"

#include "lammps_compat.h"

using namespace LAMMPS_NS;

namespace {

using Clock = std::chrono::steady_clock;

// CPU time of the process, all threads (wall time overstates the work of oversubscribed ranks)
double cpu_seconds() { return static_cast<double>(std::clock()) / CLOCKS_PER_SEC; }

// Adds the wall and CPU time of its scope to two totals.
class ExchangeClock {
 public:
  ExchangeClock(std::chrono::duration<double>& wall, double& cpu)
      : wall_(wall), cpu_(cpu), wall_start_(Clock::now()), cpu_start_(cpu_seconds()) {}
  ~ExchangeClock() {
    wall_ += Clock::now() - wall_start_;
    cpu_ += cpu_seconds() - cpu_start_;
  }
  ExchangeClock(const ExchangeClock&) = delete;
  ExchangeClock& operator=(const ExchangeClock&) = delete;

 private:
  std::chrono::duration<double>& wall_;
  double& cpu_;
  Clock::time_point wall_start_;
  double cpu_start_;
};

// 1 eV in kcal/mol from the exact SI values of e and N_A and the thermochemical calorie.
constexpr double kEvInKcalPerMol = 1.602176634e-19 * 6.02214076e23 / 4184.0;
// Closer than this, edge directions are numerically meaningless: atoms on top of each other.
constexpr double kMinDistance = 1e-4;

// Calls visit(j, dx, dy, dz, distance_sq) for every neighbour j of atom i closer than sqrt(cutoff_sq), with
// (dx, dy, dz) = x_i - x_j (the edge vector from j to i).
template <typename Visit>
void for_each_neighbour(const NeighList* list, double** x, int i, double cutoff_sq, Visit&& visit) {
  const int* neighbours = list->firstneigh[i];
  for (int k = 0; k < list->numneigh[i]; ++k) {
    const int j = neighbours[k] & NEIGHMASK;
    const double dx = x[i][0] - x[j][0];
    const double dy = x[i][1] - x[j][1];
    const double dz = x[i][2] - x[j][2];
    const double distance_sq = dx * dx + dy * dy + dz * dz;
    if (distance_sq < cutoff_sq) visit(j, dx, dy, dz, distance_sq);
  }
}

// Energy unit conversion from the model's training units to the LAMMPS unit style.
double energy_factor(const std::string& model_units, const std::string& lammps_units) {
  if (model_units == lammps_units) return 1.0;
  return model_units == "metal" ? kEvInKcalPerMol : 1.0 / kEvInKcalPerMol;
}

}  // namespace

PairMLIP::PairMLIP(LAMMPS* lmp) : Pair(lmp) {
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial comes from the edges (periodic images folded onto owners carry no forces of their own)
  no_virial_fdotr_compute = 1;
  centroidstressflag = CENTROID_NOTAVAIL;
}

PairMLIP::~PairMLIP() {
  memory->destroy(pvector);
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    memory->destroy(cutghost);
  }
}

void PairMLIP::allocate() {
  allocated = 1;
  const int n = atom->ntypes + 1;
  memory->create(setflag, n, n, "pair:setflag");
  memory->create(cutsq, n, n, "pair:cutsq");
  memory->create(cutghost, n, n, "pair:cutghost");
  for (int i = 0; i < n; ++i) std::fill(setflag[i], setflag[i] + n, 0);
}

void PairMLIP::settings(int narg, char** arg) {
  for (int i = 0; i < narg; i += 2) {
    const std::string keyword = arg[i];
    if (i + 1 >= narg) error->all(FLERR, "pair_style mlip: keyword '{}' needs a value", keyword);
    const std::string value = arg[i + 1];
    if (keyword == "dtype") {
      if (value != "float32" && value != "float64") {
        error->all(FLERR, "pair_style mlip: dtype must be float32 or float64, not '{}'", value);
      }
      required_dtype_ = value;
    } else if (keyword == "charge") {
      total_charge_ = utils::numeric(FLERR, value.c_str(), false, lmp);
      charge_given_ = true;
    } else if (keyword == "comm") {
      if (value != "halo" && value != "shell") {
        error->all(FLERR, "pair_style mlip: comm must be halo or shell, not '{}'", value);
      }
      comm_mode_ = value;
    } else {
      error->all(FLERR, "pair_style mlip: unknown keyword '{}' (known: dtype float32|float64, charge Q, comm halo|shell)",
                 keyword);
    }
  }
}

void PairMLIP::coeff(int narg, char** arg) {
  const int num_types = atom->ntypes;
  if (narg < 3 || std::strcmp(arg[0], "*") != 0 || std::strcmp(arg[1], "*") != 0) {
    error->all(FLERR, "pair_coeff for pair_style mlip must be 'pair_coeff * * model.pt2 element ...'");
  }
  if (narg != 3 + num_types) {
    error->all(FLERR, "pair_coeff * * {}: give one element name per atom type: {} atom types, {} names", arg[2],
               num_types, narg - 3);
  }
  model_path_ = arg[2];
  try {
    model_ = std::make_unique<mlipkit_lammps::ArtifactModel>(model_path_.c_str());
  } catch (const std::exception& failure) {
    error->all(FLERR, "pair_coeff: cannot use '{}' as an mlipkit artifact: {}", model_path_, failure.what());
  }
  const mlipkit_lammps::ArtifactInfo& info = model_->info();
  if (!info.edge_forces && !(info.direct_forces && info.takes_node_energy_mask)) {
    error->all(FLERR, "pair_coeff: {} computes no edge forces (target '{}'); compile it with --target lammps",
               model_path_, info.target);
  }
  const std::string dtype = info.dtype;
  if (!required_dtype_.empty() && dtype != required_dtype_) {
    error->all(FLERR, "pair_coeff: {} computes in {}, but pair_style mlip asks for dtype {}; compile it with --dtype {}",
               model_path_, dtype, required_dtype_, required_dtype_);
  }
  std::string known;
  for (const char* name : info.type_names) known += std::string(" ") + name;
  if (!allocated) allocate();
  model_type_.assign(num_types + 1, -1);
  for (int type = 1; type <= num_types; ++type) {
    const std::string element = arg[2 + type];
    auto found = std::find_if(info.type_names.begin(), info.type_names.end(),
                              [&element](const char* name) { return element == name; });
    if (found == info.type_names.end()) {
      error->all(FLERR, "pair_coeff: element '{}' (atom type {}) is not one of the types of {}:{}", element, type,
                 model_path_, known);
    }
    model_type_[type] = found - info.type_names.begin();
  }
  for (int i = 1; i <= num_types; ++i) {
    for (int j = i; j <= num_types; ++j) setflag[i][j] = 1;
  }
  r_max_ = info.r_max;
  num_layers_ = std::max(info.num_message_passing_layers, 1);
  energy_uncertainty_ = info.energy_uncertainty;
  direct_forces_ = info.direct_forces;
  long_range_cutoff_ = info.long_range_cutoff;
  ewald_ = info.ewald;
  if (comm_mode_ == "halo" && !info.halo_exchange) {
    const std::string model_name = info.model_name;
    const std::string target = info.target;
    const std::string why = model_name == "gemnet_oc" ? "GemNet-OC's messages live on edges and triplets, not on atoms"
                            : info.ewald              ? "its Ewald sum runs on one rank"
                            : target != "lammps"      ? "it was compiled for target '" + target + "'"
                                                      : "it was compiled before mlipkit had the halo exchange";
    error->all(FLERR, "pair_style mlip comm halo: {} cannot exchange node features between ranks ({}); use comm shell{} "
               "(docs/lammps/pair_style.md#graph-and-mpi)",
               model_path_, why, model_name == "gemnet_oc" || info.ewald
                                     ? "" : ", or recompile it with mlip-compile --target lammps");
  }
  if (charge_given_ && !info.takes_total_charge) {
    error->all(FLERR, "pair_style mlip charge: {} takes no total charge (it predicts no charges and has no total-charge "
               "embedding); leave the keyword out", model_path_);
  }
  const auto& known_charges = info.available_total_charges;
  if (!known_charges.empty() && std::find(known_charges.begin(), known_charges.end(), total_charge_) == known_charges.end()) {
    std::string listed;
    for (double charge : known_charges) listed += fmt::format(" {}", charge);
    error->all(FLERR, "pair_style mlip charge {}: {} was trained on the total charges{} only; give one of them",
               total_charge_, model_path_, listed);
  }
  memory->destroy(pvector);
  nextra = energy_uncertainty_ ? 1 : 0;
  if (nextra) {
    memory->create(pvector, nextra, "pair:pvector");
    pvector[0] = 0.0;
  }
}

void PairMLIP::init_style() {
  if (!model_) error->all(FLERR, "pair_style mlip: no model; use 'pair_coeff * * model.pt2 element ...'");
  if (force->newton_pair == 0) {
    error->all(FLERR, "pair_style mlip requires 'newton on': forces on ghost atoms are summed onto their owners");
  }
  if (atom->tag_enable == 0) error->all(FLERR, "pair_style mlip requires atom IDs (atom_modify id yes)");
  const std::string units = update->unit_style;
  const mlipkit_lammps::ArtifactInfo& info = model_->info();
  if (units != "metal" && units != "real") {
    error->all(FLERR, "pair_style mlip supports 'units metal' and 'units real', not '{}' ({} was trained in {}/{})",
               units, model_path_, info.energy_unit, info.length_unit);
  }
  const std::string model_units = info.units;
  if (model_units != "metal" && model_units != "real") {
    error->all(FLERR, "pair_style mlip: {} was trained in unknown units '{}'", model_path_, model_units);
  }
  energy_factor_ = energy_factor(model_units, units);
  if (direct_forces_) {
    for (int index = 0; index < modify->nfix; ++index) {
      const Fix* fix = modify->fix[index];
      const std::string style = fix->style;
      const bool barostat = style.rfind("npt", 0) == 0 || style.rfind("nph", 0) == 0 || style.rfind("press/", 0) == 0 ||
                            style.rfind("box/relax", 0) == 0;
      if (barostat) {
        error->all(FLERR, "pair_style mlip: {} predicts forces directly (direct_forces), not as the gradient of its "
                   "energy, so it has no virial for fix {} ({}); use a conservative model", model_path_, fix->id, fix->style);
      }
    }
  }

  if (info.predicts_charges && force->kspace != nullptr) {
    error->all(FLERR, "pair_style mlip: {} predicts its charges and computes their electrostatics itself; a kspace_style "
               "would add a Coulomb energy of those charges without the forces from their change with the positions, "
               "which does not conserve energy: remove kspace_style", model_path_);
  }
  if (ewald_) {
    if (comm->nprocs > 1) {
      error->all(FLERR, "pair_style mlip: {} sums its electrostatics by Ewald, which runs on one MPI rank (the damped "
                 "shifted force, coulomb.method damped_shifted, runs on any number; docs/charges.md)", model_path_);
    }
    if (!domain->xperiodic || !domain->yperiodic || !domain->zperiodic) {
      error->all(FLERR, "pair_style mlip: {} sums its electrostatics by Ewald, which needs a box periodic in x, y and z "
                 "(for molecules use a model with coulomb.method damped_shifted; docs/charges.md)", model_path_);
    }
  }

  ghost_nodes_ = comm->nprocs > 1;
  halo_ = ghost_nodes_ && info.halo_exchange && comm_mode_ != "shell";
  ghostneigh = ghost_nodes_ && !halo_ ? 1 : 0;
  if (ghost_nodes_ && !info.takes_node_energy_mask) {
    error->all(FLERR, "pair_style mlip: {} (target '{}') cannot leave ghost atoms' energies out, which runs on "
               "several MPI ranks need; compile it with --target lammps", model_path_, info.target);
  }
  comm_forward = comm_reverse = halo_ ? std::max(info.halo_exchange_width, 1) : 0;
  if (halo_ && comm->me == 0) {
    // LAMMPS's own ghost cutoff, the largest pair cutoff + skin, is all the edges into owned atoms need
    utils::logmesg(lmp, "pair mlip: comm halo: node features of up to {} values per atom cross between ranks before "
                   "each of {} layers but the first; ghost atoms within max(r_max {}, long-range cutoff {}) + skin {} "
                   "of each subdomain\n", comm_forward, num_layers_, r_max_, long_range_cutoff_, neighbor->skin);
  }
  if (ghost_nodes_ && !halo_) {
    // every owned atom must see its whole receptive field through ghost atoms, and so must every atom whose charge
    // it sees
    const double ghost_cutoff = num_layers_ * r_max_ + long_range_cutoff_ + neighbor->skin;
    if (comm->me == 0) {
      utils::logmesg(lmp, "pair mlip: comm shell{}: ghost atoms within {} layers x {} + long-range cutoff {} + skin = {} of "
                     "each subdomain\n", info.halo_exchange ? "" : " (the artifact has no halo exchange)", num_layers_,
                     r_max_, long_range_cutoff_, ghost_cutoff);
    }
    comm->cutghostuser = std::max(comm->cutghostuser, ghost_cutoff);
  }
  mlipkit_lammps::request_full_neighbor_list(neighbor, this, instance_me, ghostneigh != 0);
  model_->set_num_threads(comm->nthreads);
  evaluations_ = 0;
  model_time_ = total_time_ = exchange_time_ = std::chrono::duration<double>(0.0);
  compute_cpu_seconds_ = exchange_cpu_seconds_ = owned_node_count_ = ghost_node_count_ = 0.0;
}

void PairMLIP::init_list(int id, NeighList* list) {
  Pair::init_list(id, list);
  // a pair left out of the neighbour list is an edge missing from the graph: refuse rather than compute wrong numbers
  if (neighbor->exclude) {
    error->all(FLERR, "pair_style mlip needs every pair within the cutoff; remove 'neigh_modify exclude'");
  }
  for (int k = 1; k <= 3 && atom->molecular != Atom::ATOMIC; ++k) {
    if (neighbor->special_flag[k] == 0) {
      error->all(FLERR, "pair_style mlip needs bonded pairs in the neighbour list; give them non-zero weights, "
                 "e.g. 'special_bonds lj/coul 1.0 1.0 1.0' (the weights do not scale the model)");
    }
  }
}

double PairMLIP::init_one(int i, int j) {
  const double cutoff = std::max(r_max_, long_range_cutoff_);
  cutghost[i][j] = cutghost[j][i] = cutoff;
  return cutoff;
}

void PairMLIP::build_graph() {
  const int nlocal = atom->nlocal;
  const int nall = nlocal + atom->nghost;
  double** x = atom->x;
  const tagint* tag = atom->tag;

  node_atom_.clear();
  senders_.clear();
  receivers_.clear();
  edge_vectors_.clear();
  atom_node_.assign(nall, -1);
  node_of_tag_.clear();
  node_of_tag_.reserve(nlocal);
  for (int i = 0; i < nlocal; ++i) {
    atom_node_[i] = i;
    node_atom_.push_back(i);
    node_of_tag_[tag[i]] = i;
  }

  if (long_range_cutoff_ > 0.0) add_long_range_edges();

  // Breadth first from the owned atoms (and the atoms whose charges they see).
  // Every atom (tag) is one node, however many periodic images of it are
  // ghosts: the image met first is the closest in hops, so its neighbour list
  // is complete and it speaks for the atom.
  // Receivers within num_layers - 1 hops get their edges; nodes appear in hop
  // order and receivers are visited in node order, so edges come sorted by
  // receiver.
  // With the halo exchange only owned atoms receive edges; the ghost atoms they reach get their features from
  // their owners.
  const double cutoff_sq = r_max_ * r_max_;
  const int hops = halo_ ? 1 : num_layers_;
  size_t begin = 0;
  size_t end = halo_ ? static_cast<size_t>(nlocal) : node_atom_.size();
  for (int hop = 0; hop < hops && begin < end; ++hop) {
    for (size_t node = begin; node < end; ++node) {
      const int i = node_atom_[node];
      for_each_neighbour(list, x, i, cutoff_sq, [&](int j, double dx, double dy, double dz, double distance_sq) {
        if (distance_sq < kMinDistance * kMinDistance) {
          error->one(FLERR, "pair mlip: atoms {} and {} are {:.3g} Angstrom apart (on top of each other)", tag[i],
                     tag[j], std::sqrt(distance_sq));
        }
        senders_.push_back(node_of(j));
        receivers_.push_back(static_cast<int64_t>(node));
        edge_vectors_.insert(edge_vectors_.end(), {dx, dy, dz});
      });
    }
    begin = end;
    end = node_atom_.size();
  }
}

// The graph node of atom j: one per atom (tag), however many periodic images of it are ghosts; an image met
// first, in hop order, is added for an atom owned elsewhere (only on several ranks: on one, every ghost is an
// image of an owned atom).
int PairMLIP::node_of(int j) {
  if (atom_node_[j] < 0) {
    auto [entry, added] = node_of_tag_.try_emplace(atom->tag[j], static_cast<int>(node_atom_.size()));
    if (added) {
      if (!ghost_nodes_) error->one(FLERR, "pair mlip: ghost atom {} has no owner on this rank", atom->tag[j]);
      node_atom_.push_back(j);
    }
    atom_node_[j] = entry->second;
  }
  return atom_node_[j];
}

// The long-range edges of every owned atom, and the atoms they reach as nodes (their charges need their whole
// receptive fields, which the breadth-first search that follows adds).
void PairMLIP::add_long_range_edges() {
  double** x = atom->x;
  lr_senders_.clear();
  lr_receivers_.clear();
  lr_edge_vectors_.clear();
  const double cutoff_sq = long_range_cutoff_ * long_range_cutoff_;
  for (int i = 0; i < atom->nlocal; ++i) {
    for_each_neighbour(list, x, i, cutoff_sq, [&](int j, double dx, double dy, double dz, double) {
      lr_senders_.push_back(node_of(j));
      lr_receivers_.push_back(i);
      lr_edge_vectors_.insert(lr_edge_vectors_.end(), {dx, dy, dz});
    });
  }
}

mlipkit_lammps::Graph PairMLIP::graph(const std::vector<int64_t>& types) {
  mlipkit_lammps::Graph graph;
  graph.num_nodes = static_cast<int64_t>(node_atom_.size());
  graph.num_owned = atom->nlocal;
  graph.num_edges = static_cast<int64_t>(receivers_.size());
  graph.types = types.data();
  graph.senders = senders_.data();
  graph.receivers = receivers_.data();
  graph.edge_vectors = edge_vectors_.data();
  graph.total_charge = total_charge_;
  if (long_range_cutoff_ > 0.0) {
    graph.num_long_range_edges = static_cast<int64_t>(lr_receivers_.size());
    graph.long_range_senders = lr_senders_.data();
    graph.long_range_receivers = lr_receivers_.data();
    graph.long_range_edge_vectors = lr_edge_vectors_.data();
  }
  if (ewald_) {
    // one rank: the nodes are the owned atoms
    graph.positions = atom->x[0];
    graph.box_h = domain->h;
  }
  return graph;
}

void PairMLIP::compute(int eflag, int vflag) {
  const auto start = Clock::now();
  const double cpu_start = cpu_seconds();
  ev_init(eflag, vflag);
  build_graph();

  const int nlocal = atom->nlocal;
  const auto num_nodes = static_cast<int64_t>(node_atom_.size());
  std::vector<int64_t> types(num_nodes);
  for (int64_t node = 0; node < num_nodes; ++node) types[node] = model_type_[atom->type[node_atom_[node]]];
  const mlipkit_lammps::Graph step_graph = graph(types);

  mlipkit_lammps::Evaluation results;
  const auto model_start = Clock::now();
  try {
    mlipkit_lammps::FeatureExchange* exchange = halo_ ? &ghost_feature_exchange_ : nullptr;
    double charge_shift = std::numeric_limits<double>::quiet_NaN();
    double charge_shift_weight = 0.0;
    if (ghost_nodes_ && model_->info().global_charge_correction) {
      // First of two evaluations (the artifact's forward-only charge_correction_terms entry): each rank's
      // raw-charge sums and dE/dc terms at c = 0 (E is quadratic in c), summed over ranks into the shift
      // c = (sum q~ - Q) / sum f and the weight (dE/dc) / sum f that the second one takes.
      double terms[4];
      double summed[4];
      model_->charge_correction_terms(step_graph, exchange, terms);
      MPI_Allreduce(terms, summed, 4, MPI_DOUBLE, MPI_SUM, world);
      charge_shift = (summed[0] - total_charge_) / summed[1];
      charge_shift_weight = (summed[2] + charge_shift * summed[3]) / summed[1];
    }
    model_->evaluate(step_graph, charge_shift, charge_shift_weight, exchange, results);
  } catch (const std::exception& failure) {
    error->one(FLERR, "pair mlip: {}", failure.what());
  }
  model_time_ += Clock::now() - model_start;

  // direct forces are predicted per atom: a ghost node's force comes from a truncated environment and is not
  // summed onto its owner
  const int64_t force_rows = direct_forces_ ? nlocal : num_nodes;
  if (direct_forces_) {
    if (vflag_either && !virial_warned_ && comm->me == 0) {
      error->warning(FLERR, "pair mlip: {} predicts forces directly (direct_forces), not as the gradient of its energy, "
                     "so it has no virial: pressures and per-atom stresses leave it out", model_path_);
    }
    virial_warned_ = virial_warned_ || vflag_either;
  }
  if (!results.charges.empty() && atom->q_flag) {
    for (int i = 0; i < nlocal; ++i) atom->q[i] = results.charges[i];
  }
  const std::vector<double>& energy = results.energies;
  const std::vector<double>& force = results.forces;
  const std::vector<double>& node_virial = results.virials;

  double** f = atom->f;
  for (int i = 0; i < nlocal; ++i) {
    if (!std::isfinite(energy[i])) {
      error->one(FLERR, "pair mlip: the model's energy of atom {} is {}", atom->tag[i], energy[i]);
    }
    const double atom_energy = energy_factor_ * energy[i];
    if (eflag_global) eng_vdwl += atom_energy;
    if (eflag_atom) eatom[i] += atom_energy;
  }
  for (int64_t node = 0; node < force_rows; ++node) {
    const int i = node_atom_[node];
    for (int k = 0; k < 3; ++k) f[i][k] += energy_factor_ * force[3 * node + k];
    if (vflag_either && !direct_forces_) {
      // xx yy zz xy xz yz, off-diagonals symmetrised (the sums over atoms are symmetric anyway)
      const double* w = node_virial.data() + 9 * node;
      const double v[6] = {w[0], w[4], w[8], 0.5 * (w[1] + w[3]), 0.5 * (w[2] + w[6]), 0.5 * (w[5] + w[7])};
      for (int k = 0; k < 6; ++k) {
        if (vflag_global) virial[k] += energy_factor_ * v[k];
        if (vflag_atom) vatom[i][k] += energy_factor_ * v[k];
      }
    }
  }
  if (energy_uncertainty_) {
    double owned_terms_sum = 0.0;
    for (int i = 0; i < nlocal; ++i) owned_terms_sum += results.energy_uncertainty[i];
    publish_energy_uncertainty(owned_terms_sum);
  }
  ++evaluations_;
  owned_node_count_ += nlocal;
  ghost_node_count_ += static_cast<double>(num_nodes - nlocal);
  total_time_ += Clock::now() - start;
  compute_cpu_seconds_ += cpu_seconds() - cpu_start;
}

void PairMLIP::publish_energy_uncertainty(double owned_terms_sum) {
  // |sum over all ranks' owned atoms| / number of atoms; compute pair sums pvector over ranks, so rank 0 holds it
  double total = 0.0;
  MPI_Allreduce(&owned_terms_sum, &total, 1, MPI_DOUBLE, MPI_SUM, world);
  const double num_atoms = std::max(static_cast<double>(atom->natoms), 1.0);
  pvector[0] = comm->me == 0 ? energy_factor_ * std::abs(total) / num_atoms : 0.0;
}

#if MLIPKIT_PAIR_HAS_FINISH
void PairMLIP::finish() {
  double local[8] = {static_cast<double>(evaluations_), model_time_.count(), total_time_.count(), exchange_time_.count(),
                     compute_cpu_seconds_, exchange_cpu_seconds_, owned_node_count_, ghost_node_count_};
  double summed[8];
  MPI_Allreduce(local, summed, 8, MPI_DOUBLE, MPI_SUM, world);
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  double peak_megabytes = static_cast<double>(usage.ru_maxrss) / 1024.0;  // Linux: kilobytes
  double largest_peak = 0.0;
  MPI_Allreduce(&peak_megabytes, &largest_peak, 1, MPI_DOUBLE, MPI_MAX, world);
  if (comm->me != 0 || summed[0] == 0.0 || summed[2] <= 0.0) return;
  const double evaluations = summed[0] / comm->nprocs;
  utils::logmesg(lmp,
                 "pair mlip: {} evaluations, {:.4g} s each in the pair style (mean over {} ranks): model {:.1f}% "
                 "(halo exchanges {:.1f}%), graph building and copies {:.1f}%\n",
                 static_cast<long>(evaluations), summed[2] / summed[0], comm->nprocs,
                 100.0 * (summed[1] - summed[3]) / summed[2], 100.0 * summed[3] / summed[2],
                 100.0 * (1.0 - summed[1] / summed[2]));
  utils::logmesg(lmp,
                 "pair mlip: work per evaluation, all ranks together: {:.4g} CPU s outside halo exchanges, {:.4g} CPU s "
                 "in them; graph nodes of a rank: {:.0f} owned + {:.0f} others (mean); peak memory of a rank {:.0f} MB\n",
                 (summed[4] - summed[5]) / evaluations, summed[5] / evaluations, summed[6] / summed[0],
                 summed[7] / summed[0], largest_peak);
}
#endif

// Sizes halo_rows_ (zeros) for one exchange of [num_rows, width] rows.
void PairMLIP::prepare_halo_rows(int64_t num_rows, int width, const char* what) {
  const auto num_nodes = static_cast<int64_t>(node_atom_.size());
  halo_width_ = width;
  if (num_rows < num_nodes || halo_width_ > comm_forward) {
    throw std::runtime_error(fmt::format("{} exchanges {} rows [{}, {}], but the graph has {} nodes and the artifact's "
                                         "metadata promises at most {} values per atom", model_path_, what,
                                         num_rows, halo_width_, num_nodes, comm_forward));
  }
  halo_rows_.assign(static_cast<size_t>(atom->nlocal + atom->nghost) * halo_width_, 0.0);
}

// One halo exchange: the owned atoms' rows go to their ghost copies on every rank; each ghost node takes the row
// of the atom that speaks for it.
void PairMLIP::send_features_to_ghosts(double* rows, int64_t num_rows, int width) {
  ExchangeClock clock(exchange_time_, exchange_cpu_seconds_);
  const int nlocal = atom->nlocal;
  prepare_halo_rows(num_rows, width, "node feature");
  std::copy_n(rows, static_cast<size_t>(nlocal) * width, halo_rows_.begin());
  mlipkit_lammps::forward_comm(comm, this, halo_width_);
  for (size_t node = nlocal; node < node_atom_.size(); ++node) {
    std::copy_n(halo_rows_.begin() + static_cast<size_t>(node_atom_[node]) * width, width, rows + node * width);
  }
}

// Its adjoint: the ghost nodes' gradients go home and add onto their owners' rows; ghost rows become zero.
void PairMLIP::return_ghost_gradients(double* rows, int64_t num_rows, int width) {
  ExchangeClock clock(exchange_time_, exchange_cpu_seconds_);
  const int nlocal = atom->nlocal;
  prepare_halo_rows(num_rows, width, "gradient");
  for (size_t node = nlocal; node < node_atom_.size(); ++node) {
    double* row = halo_rows_.data() + static_cast<size_t>(node_atom_[node]) * width;
    for (int k = 0; k < width; ++k) row[k] += rows[node * width + k];
    std::fill_n(rows + node * width, width, 0.0);
  }
  mlipkit_lammps::reverse_comm(comm, this, halo_width_);
  for (size_t k = 0; k < static_cast<size_t>(nlocal) * width; ++k) rows[k] += halo_rows_[k];
}

int PairMLIP::pack_forward_comm(int n, int* list, double* buf, int, int*) {
  for (int i = 0; i < n; ++i) {
    std::copy_n(halo_rows_.begin() + static_cast<size_t>(list[i]) * halo_width_, halo_width_, buf + i * halo_width_);
  }
  return n * halo_width_;
}

void PairMLIP::unpack_forward_comm(int n, int first, double* buf) {
  std::copy_n(buf, static_cast<size_t>(n) * halo_width_, halo_rows_.begin() + static_cast<size_t>(first) * halo_width_);
}

int PairMLIP::pack_reverse_comm(int n, int first, double* buf) {
  std::copy_n(halo_rows_.begin() + static_cast<size_t>(first) * halo_width_, static_cast<size_t>(n) * halo_width_, buf);
  return n * halo_width_;
}

void PairMLIP::unpack_reverse_comm(int n, int* list, double* buf) {
  for (int i = 0; i < n; ++i) {
    double* row = halo_rows_.data() + static_cast<size_t>(list[i]) * halo_width_;
    for (int k = 0; k < halo_width_; ++k) row[k] += buf[i * halo_width_ + k];
  }
}
