"""Names of the fields of an AtomicGraph: the one place they are spelled."""

# inputs
POSITIONS = "positions"  # [N, 3]
ATOM_TYPES = "atom_types"  # [N] int64, index into the model's type_names
EDGE_INDEX = "edge_index"  # [2, E] int64, row 0 sender, row 1 receiver; sorted by receiver
EDGE_CELL_SHIFTS = "edge_cell_shifts"  # [E, 3] integer periodic image of the receiver, as float
EDGE_VECTORS = "edge_vectors"  # [E, 3] receiver - sender (+ periodic shift)
CELL = "cell"  # [B, 3, 3] rows are lattice vectors
PBC = "pbc"  # [B, 3] bool
BATCH = "batch"  # [N] int64 graph of each atom, non-decreasing
NUM_ATOMS = "num_atoms"  # [B] int64
NODE_ATTRS = "node_attrs"  # [N, F] optional extra per-atom input features
EDGE_ATTRS = "edge_attrs"  # [E, F] optional extra per-edge input features
TOTAL_CHARGE = "total_charge"  # [B]
HEAD = "head"  # [B] int64 readout head used for each graph
NODE_ENERGY_MASK = "node_energy_mask"  # [N] bool, optional: atoms whose energies count in the graph energy (and so in forces)
# electrostatics: a second edge list at the long-range cutoff (every pair for Ewald's molecules), Ewald's k vectors
LR_EDGE_INDEX = "lr_edge_index"  # [2, E'] int64, sorted by receiver
LR_EDGE_CELL_SHIFTS = "lr_edge_cell_shifts"  # [E', 3]
LR_EDGE_VECTORS = "lr_edge_vectors"  # [E', 3]
K_INDICES = "k_indices"  # [K, 3] integer multiples of the reciprocal basis, one of each +-k, as float
K_BATCH = "k_batch"  # [K] int64 graph of each k vector
CHARGE_SHIFT = "charge_shift"  # [B] optional: the charge correction's shift c where finite (several LAMMPS ranks)
CHARGE_SHIFT_WEIGHT = "charge_shift_weight"  # [B] optional: dE/dc / sum f, weight of the counted raw-charge sum

# targets and predictions
ENERGY = "energy"  # [B]
NODE_ENERGIES = "node_energies"  # [N]
FORCES = "forces"  # [N, 3]
EDGE_FORCES = "edge_forces"  # [E, 3] -dE/d(edge_vectors)
VIRIAL = "virial"  # [B, 3, 3] sum over edges of edge_vectors (x) edge_forces
NODE_VIRIALS = "node_virials"  # [N, 3, 3] each edge's virial split between its two atoms
STRESS = "stress"  # [B, 3, 3] -virial / volume, ASE sign convention
CHARGES = "charges"  # [N] partial charges (corrected to the total charge)
RAW_TOTAL_CHARGE = "raw_total_charge"  # [B] sum of the raw charges before the correction (the total-charge loss)
DIPOLE = "dipole"  # [B, 3] sum of q_i x_i; NaN for periodic graphs
LR_EDGE_FORCES = "lr_edge_forces"  # [E', 3] -dE/d(lr_edge_vectors)
POSITION_FORCES = "position_forces"  # [N, 3] -dE/dx through Ewald's reciprocal sum (the rest comes through edges)
CELL_GRADIENT = "cell_gradient"  # [B, 3, 3] dE/d(cell) through Ewald's reciprocal sum
#: [B, 4] over the counted atoms: sum q~, sum f, dE/dc and d^2E/dc^2 at the given charge shift c (several LAMMPS ranks)
CHARGE_CORRECTION_TERMS = "charge_correction_terms"
ENERGY_UNCERTAINTY = "energy_uncertainty"  # [B] std of the per-atom energy (mean-variance models)
NODE_ENERGY_UNCERTAINTY = "node_energy_uncertainty"  # [N] signed per-atom terms: energy_uncertainty = |sum| / N
GRAPH_SCALARS = "graph_scalars"  # [B, T]
GRAPH_VECTORS = "graph_vectors"  # [B, T, 3]
NODE_SCALARS = "node_scalars"  # [N, T]
NODE_VECTORS = "node_vectors"  # [N, T, 3]

GRAPH_FIELDS = (
    CELL, PBC, NUM_ATOMS, TOTAL_CHARGE, HEAD, CHARGE_SHIFT, CHARGE_SHIFT_WEIGHT, ENERGY, VIRIAL, STRESS, GRAPH_SCALARS,
    GRAPH_VECTORS, ENERGY_UNCERTAINTY, RAW_TOTAL_CHARGE, DIPOLE,
)
NODE_FIELDS = (
    POSITIONS, ATOM_TYPES, BATCH, NODE_ATTRS, NODE_ENERGY_MASK, NODE_ENERGIES, FORCES, NODE_VIRIALS, CHARGES, NODE_SCALARS,
    NODE_VECTORS, NODE_ENERGY_UNCERTAINTY,
)
EDGE_FIELDS = (EDGE_CELL_SHIFTS, EDGE_VECTORS, EDGE_ATTRS, EDGE_FORCES)
LR_EDGE_FIELDS = (LR_EDGE_CELL_SHIFTS, LR_EDGE_VECTORS, LR_EDGE_FORCES)
K_FIELDS = (K_INDICES,)
#: fields of node indices (offset when graphs are batched) and of graph indices (renumbered)
NODE_INDEX_FIELDS = (EDGE_INDEX, LR_EDGE_INDEX)
GRAPH_INDEX_FIELDS = {BATCH: ATOM_TYPES, K_BATCH: K_INDICES}
