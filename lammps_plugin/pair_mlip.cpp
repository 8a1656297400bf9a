#include "pair_mlip.h"

#include <mlipkit/runtime.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <ctime>
#include <optional>
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
      total_charge_ = utils::numeric(FLERR, value, false, lmp);
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
    model_ = std::make_unique<mlipkit::Model>(model_path_);
  } catch (const std::exception& failure) {
    error->all(FLERR, "pair_coeff: cannot use '{}' as an mlipkit artifact: {}", model_path_, failure.what());
  }
  const auto& metadata = model_->metadata();
  if (!metadata.has_output("edge_forces") && !(metadata.direct_forces() && metadata.takes_node_energy_mask())) {
    error->all(FLERR, "pair_coeff: {} computes no edge forces (target '{}'); compile it with --target lammps",
               model_path_, metadata.target);
  }
  const std::string dtype = metadata.dtype == torch::kFloat64 ? "float64" : "float32";
  if (!required_dtype_.empty() && dtype != required_dtype_) {
    error->all(FLERR, "pair_coeff: {} computes in {}, but pair_style mlip asks for dtype {}; compile it with --dtype {}",
               model_path_, dtype, required_dtype_, required_dtype_);
  }
  std::string known;
  for (const auto& name : metadata.type_names) known += " " + name;
  if (!allocated) allocate();
  model_type_.assign(num_types + 1, -1);
  for (int type = 1; type <= num_types; ++type) {
    const std::string element = arg[2 + type];
    auto found = std::find(metadata.type_names.begin(), metadata.type_names.end(), element);
    if (found == metadata.type_names.end()) {
      error->all(FLERR, "pair_coeff: element '{}' (atom type {}) is not one of the types of {}:{}", element, type,
                 model_path_, known);
    }
    model_type_[type] = found - metadata.type_names.begin();
  }
  for (int i = 1; i <= num_types; ++i) {
    for (int j = i; j <= num_types; ++j) setflag[i][j] = 1;
  }
  r_max_ = metadata.r_max;
  num_layers_ = std::max(metadata.num_message_passing_layers, 1);
  energy_uncertainty_ = metadata.has_output("node_energy_uncertainty");
  direct_forces_ = metadata.direct_forces();
  long_range_cutoff_ = metadata.long_range_cutoff;
  ewald_ = metadata.coulomb_method == "ewald";
  if (comm_mode_ == "halo" && !metadata.halo_exchange) {
    const std::string why = metadata.model_name == "gemnet_oc"
                                ? "GemNet-OC's messages live on edges and triplets, not on atoms"
                            : metadata.coulomb_method == "ewald" ? "its Ewald sum runs on one rank"
                            : metadata.target != "lammps"        ? "it was compiled for target '" + metadata.target + "'"
                                                                 : "it was compiled before mlipkit had the halo exchange";
    error->all(FLERR, "pair_style mlip comm halo: {} cannot exchange node features between ranks ({}); use comm shell{}",
               model_path_, why, metadata.model_name == "gemnet_oc" || metadata.coulomb_method == "ewald"
                                     ? "" : ", or recompile it with mlip-compile --target lammps");
  }
  if (charge_given_ && !metadata.takes("total_charge")) {
    error->all(FLERR, "pair_style mlip charge: {} takes no total charge (it predicts no charges and has no total-charge "
               "embedding); leave the keyword out", model_path_);
  }
  const auto& known_charges = metadata.available_total_charges;
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
  const auto& metadata = model_->metadata();
  if (units != "metal" && units != "real") {
    error->all(FLERR, "pair_style mlip supports 'units metal' and 'units real', not '{}' ({} was trained in {}/{})",
               units, model_path_, metadata.energy_unit, metadata.length_unit);
  }
  if (metadata.units != "metal" && metadata.units != "real") {
    error->all(FLERR, "pair_style mlip: {} was trained in unknown units '{}'", model_path_, metadata.units);
  }
  energy_factor_ = energy_factor(metadata.units, units);
  if (direct_forces_) {
    for (const auto* fix : modify->get_fix_list()) {
      const std::string style = fix->style;
      const bool barostat = style.rfind("npt", 0) == 0 || style.rfind("nph", 0) == 0 || style.rfind("press/", 0) == 0 ||
                            style.rfind("box/relax", 0) == 0;
      if (barostat) {
        error->all(FLERR, "pair_style mlip: {} predicts forces directly (direct_forces), not as the gradient of its "
                   "energy, so it has no virial for fix {} ({}); use a conservative model", model_path_, fix->id, fix->style);
      }
    }
  }

  if (metadata.predicts_charges() && force->kspace != nullptr) {
    error->all(FLERR, "pair_style mlip: {} predicts its charges and computes their electrostatics itself; a kspace_style "
               "would add a Coulomb energy of those charges without the forces from their change with the positions, "
               "which does not conserve energy: remove kspace_style", model_path_);
  }
  if (ewald_) {
    if (comm->nprocs > 1) {
      error->all(FLERR, "pair_style mlip: {} sums its electrostatics by Ewald, which runs on one MPI rank (the damped "
                 "shifted force, coulomb.method damped_shifted, runs on any number)", model_path_);
    }
    if (!domain->xperiodic || !domain->yperiodic || !domain->zperiodic) {
      error->all(FLERR, "pair_style mlip: {} sums its electrostatics by Ewald, which needs a box periodic in x, y and z "
                 "(for molecules use a model with coulomb.method damped_shifted)", model_path_);
    }
  }

  ghost_nodes_ = comm->nprocs > 1;
  halo_ = ghost_nodes_ && metadata.halo_exchange && comm_mode_ != "shell";
  ghostneigh = ghost_nodes_ && !halo_ ? 1 : 0;
  int request = NeighConst::REQ_FULL;
  if (ghost_nodes_ && !metadata.takes_node_energy_mask()) {
    error->all(FLERR, "pair_style mlip: {} (target '{}') cannot leave ghost atoms' energies out, which runs on "
               "several MPI ranks need; compile it with --target lammps", model_path_, metadata.target);
  }
  comm_forward = comm_reverse = halo_ ? std::max(metadata.halo_exchange_width, 1) : 0;
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
                     "each subdomain\n", metadata.halo_exchange ? "" : " (the artifact has no halo exchange)", num_layers_,
                     r_max_, long_range_cutoff_, ghost_cutoff);
    }
    comm->cutghostuser = std::max(comm->cutghostuser, ghost_cutoff);
    request |= NeighConst::REQ_GHOST;
  }
  neighbor->add_request(this, request);
  torch::set_num_threads(std::max(comm->nthreads, 1));
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

void PairMLIP::compute(int eflag, int vflag) {
  const auto start = Clock::now();
  const double cpu_start = cpu_seconds();
  ev_init(eflag, vflag);
  build_graph();

  const int nlocal = atom->nlocal;
  const auto num_nodes = static_cast<int64_t>(node_atom_.size());
  const auto num_edges = static_cast<int64_t>(receivers_.size());
  std::vector<int64_t> types(num_nodes);
  for (int64_t node = 0; node < num_nodes; ++node) types[node] = model_type_[atom->type[node_atom_[node]]];
  auto atom_types = torch::from_blob(types.data(), {num_nodes}, torch::kInt64);
  auto edge_index = torch::stack({torch::from_blob(senders_.data(), {num_edges}, torch::kInt64),
                                  torch::from_blob(receivers_.data(), {num_edges}, torch::kInt64)});
  auto edge_vectors = torch::from_blob(edge_vectors_.data(), {num_edges, 3}, torch::kFloat64);
  auto node_energy_mask = torch::arange(num_nodes) < nlocal;
  const auto dtype = model_->metadata().dtype;
  mlipkit::ChargeInputs charge_inputs = long_range_inputs(num_nodes, dtype);

  mlipkit::Results results;
  const auto model_start = Clock::now();
  try {
    std::optional<mlipkit::HaloExchangeScope> exchange;
    if (halo_) exchange.emplace(&ghost_feature_exchange_);
    if (ghost_nodes_ && model_->metadata().global_charge_correction()) correct_charges_across_ranks(atom_types, edge_index, edge_vectors.to(dtype), node_energy_mask, charge_inputs);
    results = model_->evaluate(atom_types, edge_index, edge_vectors.to(dtype), node_energy_mask, charge_inputs);
  } catch (const std::exception& failure) {
    error->one(FLERR, "pair mlip: {}", failure.what());
  }
  model_time_ += Clock::now() - model_start;

  auto node_energies = results.atomic_energies.to(torch::kCPU, torch::kFloat64).contiguous();
  torch::Tensor node_forces, node_virials;
  if (direct_forces_) {
    // predicted per atom: a ghost node's force comes from a truncated environment and is not summed onto its owner
    if (vflag_either && !virial_warned_ && comm->me == 0) {
      error->warning(FLERR, "pair mlip: {} predicts forces directly (direct_forces), not as the gradient of its energy, "
                     "so it has no virial: pressures and per-atom stresses leave it out", model_path_);
    }
    virial_warned_ = virial_warned_ || vflag_either;
    node_forces = results.forces.to(torch::kCPU, torch::kFloat64).slice(0, 0, nlocal).contiguous();
    node_virials = torch::zeros({0, 3, 3}, torch::kFloat64);
  } else {
    node_forces = results.forces.to(torch::kCPU, torch::kFloat64).contiguous();
    node_virials = results.atomic_virials.to(torch::kCPU, torch::kFloat64).contiguous();
  }
  if (results.charges.defined() && atom->q_flag) {
    auto charges = results.charges.to(torch::kCPU, torch::kFloat64).contiguous();
    auto charge = charges.accessor<double, 1>();
    for (int i = 0; i < nlocal; ++i) atom->q[i] = charge[i];
  }
  auto energy = node_energies.accessor<double, 1>();
  auto force = node_forces.accessor<double, 2>();
  auto node_virial = node_virials.accessor<double, 3>();

  double** f = atom->f;
  for (int i = 0; i < nlocal; ++i) {
    if (!std::isfinite(energy[i])) {
      error->one(FLERR, "pair mlip: the model's energy of atom {} is {}", atom->tag[i], energy[i]);
    }
    const double atom_energy = energy_factor_ * energy[i];
    if (eflag_global) eng_vdwl += atom_energy;
    if (eflag_atom) eatom[i] += atom_energy;
  }
  for (int64_t node = 0; node < node_forces.size(0); ++node) {
    const int i = node_atom_[node];
    for (int k = 0; k < 3; ++k) f[i][k] += energy_factor_ * force[node][k];
    if (vflag_either && !direct_forces_) {
      // xx yy zz xy xz yz, off-diagonals symmetrised (the sums over atoms are symmetric anyway)
      const double v[6] = {node_virial[node][0][0], node_virial[node][1][1], node_virial[node][2][2],
                           0.5 * (node_virial[node][0][1] + node_virial[node][1][0]),
                           0.5 * (node_virial[node][0][2] + node_virial[node][2][0]),
                           0.5 * (node_virial[node][1][2] + node_virial[node][2][1])};
      for (int k = 0; k < 6; ++k) {
        if (vflag_global) virial[k] += energy_factor_ * v[k];
        if (vflag_atom) vatom[i][k] += energy_factor_ * v[k];
      }
    }
  }
  if (energy_uncertainty_) {
    auto terms = results.atomic_energy_uncertainty.slice(0, 0, nlocal);
    publish_energy_uncertainty(terms.to(torch::kCPU, torch::kFloat64).sum().item<double>());
  }
  ++evaluations_;
  owned_node_count_ += nlocal;
  ghost_node_count_ += static_cast<double>(num_nodes - nlocal);
  total_time_ += Clock::now() - start;
  compute_cpu_seconds_ += cpu_seconds() - cpu_start;
}

mlipkit::ChargeInputs PairMLIP::long_range_inputs(int64_t num_nodes, torch::Dtype dtype) {
  mlipkit::ChargeInputs inputs;
  inputs.total_charge = total_charge_;
  if (long_range_cutoff_ <= 0.0) return inputs;
  const auto num_lr_edges = static_cast<int64_t>(lr_receivers_.size());
  inputs.lr_edge_index = torch::stack({torch::from_blob(lr_senders_.data(), {num_lr_edges}, torch::kInt64),
                                       torch::from_blob(lr_receivers_.data(), {num_lr_edges}, torch::kInt64)});
  inputs.lr_edge_vectors = torch::from_blob(lr_edge_vectors_.data(), {num_lr_edges, 3}, torch::kFloat64).to(dtype);
  if (ewald_) {
    // one rank: the nodes are the owned atoms; the lattice vectors are the rows of LAMMPS's (lower triangular) h
    auto positions = torch::from_blob(atom->x[0], {num_nodes, 3}, torch::kFloat64).to(dtype);
    const double* h = domain->h;
    auto cell = torch::tensor({h[0], 0.0, 0.0, h[5], h[1], 0.0, h[4], h[3], h[2]}, torch::kFloat64).reshape({3, 3});
    inputs.positions = positions;
    inputs.cell = cell.to(dtype);
    inputs.pbc = torch::ones({3}, torch::kBool);
    inputs.k_indices = mlipkit::ewald_k_indices(cell, model_->metadata().ewald_k_max, dtype);
  }
  return inputs;
}

// First of two evaluations (the artifact's forward-only charge_correction_terms entry): each rank's raw-charge
// sums and dE/dc terms at c = 0 (E is quadratic in c), summed
// over ranks into the shift c = (sum q~ - Q) / sum f and the weight (dE/dc) / sum f that the second one takes.
void PairMLIP::correct_charges_across_ranks(const torch::Tensor& atom_types, const torch::Tensor& edge_index,
                                            const torch::Tensor& edge_vectors, const torch::Tensor& node_energy_mask,
                                            mlipkit::ChargeInputs& charge_inputs) {
  charge_inputs.charge_shift = 0.0;
  charge_inputs.charge_shift_weight = 0.0;
  auto terms = model_->charge_correction_terms(atom_types, edge_index, edge_vectors, node_energy_mask, charge_inputs)
                   .to(torch::kCPU, torch::kFloat64)
                   .contiguous();
  double summed[4];
  MPI_Allreduce(terms.data_ptr<double>(), summed, 4, MPI_DOUBLE, MPI_SUM, world);
  const double shift = (summed[0] - total_charge_) / summed[1];
  charge_inputs.charge_shift = shift;
  charge_inputs.charge_shift_weight = (summed[2] + shift * summed[3]) / summed[1];
}

void PairMLIP::publish_energy_uncertainty(double owned_terms_sum) {
  // |sum over all ranks' owned atoms| / number of atoms; compute pair sums pvector over ranks, so rank 0 holds it
  double total = 0.0;
  MPI_Allreduce(&owned_terms_sum, &total, 1, MPI_DOUBLE, MPI_SUM, world);
  const double num_atoms = std::max(static_cast<double>(atom->natoms), 1.0);
  pvector[0] = comm->me == 0 ? energy_factor_ * std::abs(total) / num_atoms : 0.0;
}

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

// Sizes halo_rows_ (zeros) for one exchange of ``rows``; returns the number of graph nodes.
int64_t PairMLIP::prepare_halo_rows(const at::Tensor& rows, const char* what) {
  const auto num_nodes = static_cast<int64_t>(node_atom_.size());
  halo_width_ = static_cast<int>(rows.size(1));
  if (rows.size(0) < num_nodes || halo_width_ > comm_forward) {
    throw std::runtime_error(fmt::format("{} exchanges {} rows [{}, {}], but the graph has {} nodes and the artifact's "
                                         "metadata promises at most {} values per atom", model_path_, what,
                                         rows.size(0), halo_width_, num_nodes, comm_forward));
  }
  halo_rows_.assign(static_cast<size_t>(atom->nlocal + atom->nghost) * halo_width_, 0.0);
  return num_nodes;
}

// One halo exchange: the owned atoms' rows go to their ghost copies on every rank; each ghost node takes the row
// of the atom that speaks for it.
void PairMLIP::send_features_to_ghosts(at::Tensor& node_features) {
  ExchangeClock clock(exchange_time_, exchange_cpu_seconds_);
  const int nlocal = atom->nlocal;
  const int64_t num_nodes = prepare_halo_rows(node_features, "node feature");
  auto owned = node_features.slice(0, 0, nlocal).to(torch::kCPU, torch::kFloat64).contiguous();
  std::copy_n(owned.data_ptr<double>(), owned.numel(), halo_rows_.begin());
  comm->forward_comm(this, halo_width_);
  auto ghosts = torch::empty({num_nodes - nlocal, halo_width_}, torch::kFloat64);
  double* ghost_rows = ghosts.data_ptr<double>();
  for (int64_t node = nlocal; node < num_nodes; ++node) {
    std::copy_n(halo_rows_.begin() + static_cast<size_t>(node_atom_[node]) * halo_width_, halo_width_,
                ghost_rows + (node - nlocal) * halo_width_);
  }
  node_features.slice(0, nlocal, num_nodes).copy_(ghosts);
}

// Its adjoint: the ghost nodes' gradients go home and add onto their owners' rows; ghost rows become zero.
void PairMLIP::return_ghost_gradients(at::Tensor& gradients) {
  ExchangeClock clock(exchange_time_, exchange_cpu_seconds_);
  const int nlocal = atom->nlocal;
  const int64_t num_nodes = prepare_halo_rows(gradients, "gradient");
  auto ghosts = gradients.slice(0, nlocal, num_nodes).to(torch::kCPU, torch::kFloat64).contiguous();
  const double* ghost_rows = ghosts.data_ptr<double>();
  for (int64_t node = nlocal; node < num_nodes; ++node) {
    double* row = halo_rows_.data() + static_cast<size_t>(node_atom_[node]) * halo_width_;
    for (int k = 0; k < halo_width_; ++k) row[k] += ghost_rows[(node - nlocal) * halo_width_ + k];
  }
  comm->reverse_comm(this, halo_width_);
  auto owned = torch::from_blob(halo_rows_.data(), {nlocal, halo_width_}, torch::kFloat64);
  gradients.slice(0, 0, nlocal).add_(owned.to(gradients.device(), gradients.scalar_type()));
  gradients.slice(0, nlocal, num_nodes).zero_();
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
