"""GemNet-OC (Gasteiger et al., TMLR 2022): its options, and the network as a function of one edge list.

fairchem builds up to four neighbour graphs (embedding, quadruplet, atom-edge,
atom-atom) from positions and cells. Here every graph is a distance mask (and
optional nearest-k cap) of one edge list at the largest cutoff, and every
triplet and quadruplet index set is derived from that list inside the model,
so that the model is a function of (atom types, edge_index, edge_vectors) like
every mlipkit model and dE/d(edge vectors) gives forces and virial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from e3nn import o3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, compute_edge_vectors
from mlipkit.models.config import PotentialConfig
from mlipkit.models.gemnet_oc import indices
from mlipkit.models.gemnet_oc.bases import (
    CircularBasis,
    CircularBasisName,
    QuadrupletTriplets,
    RadialBasis,
    RadialBasisName,
    SphericalBasis,
    SphericalBasisName,
    cross,
)
from mlipkit.models.gemnet_oc.interaction import InteractionBlock, Interactions
from mlipkit.models.gemnet_oc.layers import (
    AtomEmbedding,
    BasisEmbedding,
    ContractionKernel,
    Dense,
    EdgeEmbedding,
    EfficientInteractionBilinear,
    OutputBlock,
    ResidualLayer,
    ScaleFactor,
    he_orthogonal_,
)
from mlipkit.models.potential import Potential
from mlipkit.nn.embedding import subtract_reference, with_reference_nodes
from mlipkit.nn.scatter import sum_into_segments
from mlipkit.nn.tracing import is_eager
from mlipkit.nn.zbl import atomic_numbers_of


class _BasisOption(BaseModel):
    """fairchem's ``{"name": ..., **hyperparameters}`` basis dicts; a bare name is accepted too."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class RadialBasisOption(_BasisOption):
    name: RadialBasisName = "gaussian"
    """`gaussian`, `spherical_bessel` or `bernstein`"""
    trainable: bool = False
    """gaussian: trainable centres"""
    pregamma_initial: float = 0.45264
    """bernstein: initial inverse-softplus of the decay rate"""


class EnvelopeOption(_BasisOption):
    name: Literal["polynomial", "exponential"] = "polynomial"
    """`polynomial` or `exponential`"""
    exponent: int = Field(5, ge=1)
    """polynomial: its exponent"""


class CircularBasisOption(_BasisOption):
    name: CircularBasisName = "spherical_harmonics"
    """`spherical_harmonics` (zonal harmonics of the triplet angle) or `gaussian`"""
    trainable: bool = False
    """gaussian: trainable centres"""


class SphericalBasisOption(_BasisOption):
    name: SphericalBasisName = "spherical_harmonics"
    """`spherical_harmonics`, `legendre_outer` or `gaussian_outer`"""
    trainable: bool = False
    """gaussian_outer: trainable centres"""


class GemNetOCConfig(PotentialConfig):
    """fairchem-core's GemNetOC constructor options, by name.

    Sizes fairchem requires without a default take the values of its OC20
    ``gemnet-oc`` configuration. Differences: ``max_neighbors*`` default to no
    cap (caps make the energy discontinuous); ``r_max``, the neighbour-list cutoff, defaults to the
    largest cutoff.
    """

    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {"do_derivatives": ("compute_forces", "regress_forces")}

    r_max: float | None = Field(None, gt=0.0)
    """the neighbour list's cutoff; default the largest cutoff, may be larger, not smaller"""
    num_spherical: int = Field(7, ge=1)
    """size of the angular basis"""
    num_radial: int = Field(128, ge=2)
    """size of the radial basis"""
    num_blocks: int = Field(4, ge=1)
    """interaction blocks"""
    emb_size_atom: int = Field(256, gt=0)
    """atom features"""
    emb_size_edge: int = Field(512, gt=0)
    """edge features"""
    emb_size_trip_in: int = Field(64, gt=0)
    """down-projection into the triplet bilinear layer"""
    emb_size_trip_out: int = Field(64, gt=0)
    """down-projection out of the triplet bilinear layer"""
    emb_size_quad_in: int = Field(32, gt=0)
    """down-projection into the quadruplet bilinear layer"""
    emb_size_quad_out: int = Field(32, gt=0)
    """down-projection out of the quadruplet bilinear layer"""
    emb_size_aint_in: int = Field(64, gt=0)
    """down-projection into the atom-atom bilinear layer"""
    emb_size_aint_out: int = Field(64, gt=0)
    """down-projection out of the atom-atom bilinear layer"""
    emb_size_rbf: int = Field(16, gt=0)
    """projected radial basis"""
    emb_size_cbf: int = Field(16, gt=0)
    """projected circular basis"""
    emb_size_sbf: int = Field(32, gt=0)
    """projected spherical basis"""
    num_before_skip: int = Field(2, ge=0)
    """residual layers before each block's skip connection"""
    num_after_skip: int = Field(2, ge=0)
    """residual layers after it"""
    num_concat: int = Field(1, ge=0)
    """residual layers after concatenating the interactions"""
    num_atom: int = Field(3, ge=0)
    """residual layers of each atom update"""
    num_output_afteratom: int = Field(3, ge=0)
    """residual layers of each output block after its atom update"""
    num_atom_emb_layers: int = Field(0, ge=0)
    """residual layers on the atom embedding"""
    num_global_out_layers: int = Field(2, ge=0)
    """residual layers of the global output"""
    direct_forces: bool = False
    """forces from a per-edge head instead of the gradient (not conservative; no stress)"""
    forces_coupled: bool = False
    """direct forces equal and opposite along each edge"""
    cutoff: float = Field(6.0, gt=0.0)
    """the embedding graph's cutoff in Å"""
    cutoff_qint: float | None = Field(None, gt=0.0)
    """the quadruplet graph's cutoff (default `cutoff`)"""
    cutoff_aeaint: float | None = Field(None, gt=0.0)
    """the atom-edge/edge-atom graphs' cutoff (default `cutoff`)"""
    cutoff_aint: float | None = Field(None, gt=0.0)
    """the atom-atom graph's cutoff (default and at least the largest other)"""
    max_neighbors: int | None = Field(None, gt=0)
    """nearest-k cap per receiver of the embedding graph (fairchem: 50); none: no cap"""
    max_neighbors_qint: int | None = Field(None, gt=0)
    """the same for the quadruplet graph"""
    max_neighbors_aeaint: int | None = Field(None, gt=0)
    """the same for the atom-edge/edge-atom graphs"""
    max_neighbors_aint: int | None = Field(None, gt=0)
    """the same for the atom-atom graph"""
    enforce_max_neighbors_strictly: bool = True
    """exactly k (ties broken by the edge vector's components); false: also every neighbour within 0.01 Å of the (k+1)-th, as fairchem"""
    cap_symmetrization: Literal["either_direction", "lower_index"] = "either_direction"
    """how the capped embedding graph gets both directions of its edges: `either_direction` keeps a pair of atoms
    when either is within the other's `max_neighbors` (independent of atom order); `lower_index` is fairchem's
    rule, a < b kept when a is within b's cap (depends on atom order, so not for LAMMPS, which reorders atoms)"""
    rbf: RadialBasisOption = RadialBasisOption()
    """the edges' radial basis: `{name: gaussian|spherical_bessel|bernstein, ...}`"""
    rbf_spherical: RadialBasisOption | None = None
    """the angular bases' radial basis (default `rbf`)"""
    envelope: EnvelopeOption = EnvelopeOption()
    """`{name: polynomial, exponent: 5}` or `{name: exponential}`"""
    cbf: CircularBasisOption = CircularBasisOption()
    """the triplet-angle basis"""
    sbf: SphericalBasisOption = SphericalBasisOption()
    """the quadruplet basis"""
    extensive: bool = True
    """false (a mean over atoms) is refused: not a potential; use a `y_graph_scalars` head"""
    output_init: Literal["HeOrthogonal", "zeros", "grid", "loggrid"] = "HeOrthogonal"
    """initialisation of the energy (and force) output layer: `HeOrthogonal`, `zeros`, `grid`, `loggrid`"""
    activation: Literal["silu", "swish"] = "silu"
    """`silu` (`swish`), scaled by 1/0.6"""
    quad_interaction: bool = False
    """the quadruplet interaction (dihedrals; off for MD: not smooth where four atoms are planar)"""
    atom_edge_interaction: bool = False
    """the atom-to-edge interaction"""
    edge_atom_interaction: bool = False
    """the edge-to-atom interaction"""
    atom_interaction: bool = False
    """the atom-atom interaction"""
    scale_basis: bool = False
    """fitted scale factors on the raw bases"""
    triplet_contraction_kernel: ContractionKernel = "segment"
    """`segment`: the triplet and quadruplet sums as one C++ op (CPU); `padded`: batched matrix products over
    zero-padded rows (the reference, also what runs on other devices)"""
    num_elements: int | None = Field(83, gt=0)
    """rows of the type embedding, indexed by atomic number (fairchem's); null: one row per type name"""
    scale_file: str | None = None
    """scale factors (name -> value, JSON or torch-saved) that mlip-train loads instead of fitting them; read once,
    at training, so a checkpoint (which holds the values) loads without the file"""
    use_pbc: bool = True
    """fairchem's data-pipeline option: accepted, without effect"""
    use_pbc_single: bool = False
    """fairchem's data-pipeline option: accepted, without effect"""
    otf_graph: bool = False
    """fairchem's data-pipeline option: accepted, without effect"""
    qint_tags: list[int] = Field(default_factory=lambda: [0, 1, 2])
    """fairchem's data-pipeline option: accepted, without effect (quadruplets for every atom)"""
    scale_backprop_forces: bool = False
    """fairchem's data-pipeline option: accepted, without effect"""

    @field_validator("output_init", mode="before")
    @classmethod
    def _initializer_name(cls, name: Any) -> Any:
        known = {"heorthogonal": "HeOrthogonal", "zeros": "zeros", "grid": "grid", "loggrid": "loggrid"}
        return known.get(name.lower(), name) if isinstance(name, str) else name

    @model_validator(mode="after")
    def _derive_cutoffs(self) -> "GemNetOCConfig":
        cutoffs = self.effective_cutoffs
        if cutoffs["cutoff_aint"] < max(cutoffs.values()):
            raise ValueError(f"cutoff_aint={cutoffs['cutoff_aint']} must be at least every other cutoff ({cutoffs})")
        largest = max(cutoffs.values())
        if self.r_max is None:
            self.r_max = largest
        elif self.r_max < largest:
            raise ValueError(
                f"r_max={self.r_max} (the neighbour-list cutoff) is below GemNet-OC's largest cutoff {largest} ({cutoffs}); "
                "leave r_max out to use the largest cutoff"
            )
        if not self.extensive:
            raise ValueError(
                "extensive=False (a mean over atoms) is not an interatomic potential: its energy is not a sum of "
                "atomic energies, so forces, LAMMPS and batching would be wrong; fit intensive targets with a "
                "y_graph_scalars head instead"
            )
        if self.num_elements is not None:
            numbers = atomic_numbers_of(self.type_names)
            if max(numbers) > self.num_elements:
                raise ValueError(
                    f"type names {self.type_names} include atomic number {max(numbers)} > num_elements={self.num_elements}"
                )
        if self.direct_forces and self.pair_potential is not None:
            raise ValueError("direct_forces models predict forces directly; a ZBL pair potential would need its gradient")
        if self.y_node_vector is not None or self.y_graph_vector is not None:
            raise ValueError("GemNet-OC's atom features are invariant: it has no vector (y_node_vector/y_graph_vector) heads")
        return self

    @property
    def effective_cutoffs(self) -> dict[str, float]:
        return effective_cutoffs(self.model_dump())

    @classmethod
    def default_r_max(cls, options: dict[str, Any]) -> float | None:
        return max(effective_cutoffs({**{name: field.default for name, field in cls.model_fields.items()}, **options}).values())

    @property
    def effective_max_neighbors(self) -> dict[str, int | None]:
        aeaint = self.max_neighbors_aeaint if self.atom_edge_interaction or self.edge_atom_interaction else self.max_neighbors
        qint = self.max_neighbors_qint if self.quad_interaction else self.max_neighbors
        aint = self.max_neighbors_aint if self.atom_interaction else None
        return {"main": self.max_neighbors, "qint": qint, "aeaint": aeaint, "aint": aint}


def check_complete(edge_index: torch.Tensor, reverse: torch.Tensor) -> None:
    """A graph of a whole system must hold every edge's reverse (a half neighbour list would lose edges silently)."""
    missing = torch.nonzero(reverse < 0).squeeze(1)
    if missing.numel():
        edge = int(missing[0])
        raise ValueError(
            f"edge {edge} ({int(edge_index[0, edge])} -> {int(edge_index[1, edge])}) and {missing.numel() - 1} others have "
            "no reverse edge with the opposite vector; GemNet-OC needs a full neighbour list"
        )


def effective_cutoffs(options: dict[str, Any]) -> dict[str, float]:
    """fairchem's rules: an interaction's cutoff is ``cutoff`` unless the interaction is on and its own is given;
    the atom-atom graph's is at least every other."""
    cutoff = options["cutoff"]
    aeaint_on = options["atom_edge_interaction"] or options["edge_atom_interaction"]
    aeaint = options["cutoff_aeaint"] if aeaint_on and options["cutoff_aeaint"] else cutoff
    qint = options["cutoff_qint"] if options["quad_interaction"] and options["cutoff_qint"] else cutoff
    aint = options["cutoff_aint"] if options["atom_interaction"] and options["cutoff_aint"] else max(cutoff, aeaint, qint)
    return {"cutoff": cutoff, "cutoff_qint": qint, "cutoff_aeaint": aeaint, "cutoff_aint": aint}


def _initialize_output(weight: torch.Tensor, name: str) -> None:
    """fairchem's output initialisers: He-orthogonal, zeros, or a (log-)grid over the inputs."""
    with torch.no_grad():
        if name == "HeOrthogonal":
            he_orthogonal_(weight)
        elif name == "zeros":
            weight.zero_()
        elif name == "grid":
            weight.copy_(torch.linspace(-1, 1, weight.shape[1], dtype=weight.dtype).expand_as(weight))
        else:
            weight.copy_(torch.logspace(-4, 0, weight.shape[1], dtype=weight.dtype).expand_as(weight))


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(-1).clamp(-1.0, 1.0)


class GemNetOC(nn.Module):
    """The GemNet-OC network; attribute names are fairchem's (see ``layers``)."""

    def __init__(self, config: GemNetOCConfig):
        super().__init__()
        self.config = config
        self.num_types = len(config.type_names)
        self.num_blocks = config.num_blocks
        self.cutoffs = config.effective_cutoffs
        self.caps = config.effective_max_neighbors
        self.strict_caps = config.enforce_max_neighbors_strictly
        #: fairchem's rule for the capped embedding graph (see GemNetOCConfig.cap_symmetrization)
        self.lower_index_caps = config.cap_symmetrization == "lower_index" and self.caps["main"] is not None
        self.quad = config.quad_interaction
        self.atom_edge = config.atom_edge_interaction
        self.edge_atom = config.edge_atom_interaction
        self.atom_atom = config.atom_interaction
        self.direct_forces = config.direct_forces and config.do_derivatives
        self.forces_coupled = config.forces_coupled
        act = config.activation
        rows = (
            [number - 1 for number in atomic_numbers_of(config.type_names)]
            if config.num_elements is not None
            else list(range(self.num_types))
        )
        self.register_buffer("embedding_rows", torch.tensor(rows, dtype=torch.long), persistent=False)

        def radial(rbf: RadialBasisOption, cutoff: float) -> RadialBasis:
            return RadialBasis(
                rbf.name, config.num_radial, cutoff, config.envelope.name, config.envelope.exponent, config.scale_basis,
                rbf.trainable, rbf.pregamma_initial,
            )

        rbf, rbf_spherical = config.rbf, config.rbf_spherical or config.rbf
        cutoff, num_radial, num_spherical = self.cutoffs["cutoff"], config.num_radial, config.num_spherical
        cbf = lambda radial_basis: CircularBasis(  # noqa: E731
            config.cbf.name, num_spherical, radial_basis, config.scale_basis, config.cbf.trainable
        )
        self.radial_basis = radial(rbf, cutoff)
        radial_basis_spherical = radial(rbf_spherical, cutoff)
        if self.quad:
            self.cbf_basis_qint = cbf(radial(rbf_spherical, self.cutoffs["cutoff_qint"]))
            self.sbf_basis_qint = SphericalBasis(
                config.sbf.name, num_spherical, radial_basis_spherical, config.scale_basis, config.sbf.trainable
            )
        if self.atom_edge or self.edge_atom:
            self.radial_basis_aeaint = radial(rbf, self.cutoffs["cutoff_aeaint"])
        if self.atom_edge:
            self.cbf_basis_aeint = cbf(radial_basis_spherical)
        if self.edge_atom:
            self.cbf_basis_eaint = cbf(radial(rbf_spherical, self.cutoffs["cutoff_aeaint"]))
        if self.atom_atom:
            self.radial_basis_aint = radial(rbf, self.cutoffs["cutoff_aint"])
        self.cbf_basis_tint = cbf(radial_basis_spherical)

        rbf_size, cbf_size, sbf_size = config.emb_size_rbf, config.emb_size_cbf, config.emb_size_sbf
        if self.quad:
            self.mlp_rbf_qint = Dense(num_radial, rbf_size)
            self.mlp_cbf_qint = BasisEmbedding(num_radial, cbf_size, num_spherical)
            self.mlp_sbf_qint = BasisEmbedding(num_radial, sbf_size, num_spherical**2)
        if self.atom_edge:
            self.mlp_rbf_aeint = Dense(num_radial, rbf_size)
            self.mlp_cbf_aeint = BasisEmbedding(num_radial, cbf_size, num_spherical)
        if self.edge_atom:
            self.mlp_rbf_eaint = Dense(num_radial, rbf_size)
            self.mlp_cbf_eaint = BasisEmbedding(num_radial, cbf_size, num_spherical)
        if self.atom_atom:
            self.mlp_rbf_aint = BasisEmbedding(num_radial, rbf_size)
        self.mlp_rbf_tint = Dense(num_radial, rbf_size)
        self.mlp_cbf_tint = BasisEmbedding(num_radial, cbf_size, num_spherical)
        self.mlp_rbf_h = Dense(num_radial, rbf_size)
        self.mlp_rbf_out = Dense(num_radial, rbf_size)

        atom_size, edge_size = config.emb_size_atom, config.emb_size_edge
        self.atom_emb = AtomEmbedding(atom_size, config.num_elements or self.num_types)
        self.edge_emb = EdgeEmbedding(atom_size, num_radial, edge_size, act)
        self.int_blocks = nn.ModuleList(
            [
                InteractionBlock(
                    atom_size, edge_size, config.emb_size_trip_in, config.emb_size_trip_out, config.emb_size_quad_in,
                    config.emb_size_quad_out, config.emb_size_aint_in, config.emb_size_aint_out, rbf_size, cbf_size, sbf_size,
                    config.num_before_skip, config.num_after_skip, config.num_concat, config.num_atom,
                    config.num_atom_emb_layers, self.quad, self.atom_edge, self.edge_atom, self.atom_atom, act,
                )
                for _ in range(config.num_blocks)
            ]
        )
        self.out_blocks = nn.ModuleList(
            [
                OutputBlock(atom_size, edge_size, rbf_size, config.num_atom, config.num_output_afteratom, act, config.direct_forces)
                for _ in range(config.num_blocks + 1)
            ]
        )
        self.out_mlp_E = nn.Sequential(
            Dense(atom_size * (config.num_blocks + 1), atom_size, activation=act),
            *[ResidualLayer(atom_size, activation=act) for _ in range(config.num_global_out_layers)],
        )
        self.out_energy = Dense(atom_size, config.num_readout_heads)
        _initialize_output(self.out_energy.linear.weight, config.output_init)
        if config.direct_forces:
            self.out_mlp_F = nn.Sequential(
                Dense(edge_size * (config.num_blocks + 1), edge_size, activation=act),
                *[ResidualLayer(edge_size, activation=act) for _ in range(config.num_global_out_layers)],
            )
            self.out_forces = Dense(edge_size, 1)
            _initialize_output(self.out_forces.linear.weight, config.output_init)
        self.feature_irreps = o3.Irreps(f"{atom_size}x0e")
        self.set_contraction_kernel(config.triplet_contraction_kernel)

    def set_contraction_kernel(self, kernel: ContractionKernel) -> None:
        """How every triplet and quadruplet sum is computed."""
        for module in self.modules():
            if isinstance(module, EfficientInteractionBilinear):
                module.kernel = kernel

    @property
    def num_message_passing_layers(self) -> int:
        """Hops of the graph a caller with ghost atoms must give edges for (LAMMPS's ghost shell).

        An atom's energy depends on atoms up to num_blocks + 1 hops away, or
        2 num_blocks + 1 with quadruplets: per block the symmetric update
        hands an edge the messages of its reverse, whose far end is one hop
        further, and a quadruplet reaches one hop more. One hop beyond that,
        the outermost edges, whose reverses the caller cannot give, are left
        out (see ``interaction_graphs``) without touching any counted energy.
        """
        receptive_field = (2 if self.quad else 1) * self.num_blocks + 1
        return receptive_field + 1

    @property
    def extra_input_fields(self) -> list[str]:
        return []

    def fit_scale_factors(self, graphs: list[AtomicGraph]) -> dict[str, float]:
        return fit_scale_factors(self, graphs)

    def load_scale_factors(self, source: str | Path | dict[str, float]) -> None:
        load_scale_factors(self, source)

    def interaction_graphs(
        self, edge_index: torch.Tensor, edge_vectors: torch.Tensor, lengths: torch.Tensor, reverse: torch.Tensor, num_nodes: int
    ) -> tuple[Interactions, torch.Tensor, torch.Tensor]:
        """Every graph, index set and projected basis; also the main graph's unit vectors and radial basis.

        ``reverse``: each edge's reverse edge, -1 where it has none.
        """
        senders, receivers = edge_index[0], edge_index[1]
        num_edges = senders.shape[0]
        units = edge_vectors / lengths.unsqueeze(-1)
        has_reverse = reverse >= 0

        def subgraph(cutoff: float, cap: int | None) -> torch.Tensor:
            # edges without a reverse (a ghost shell's rim, beyond every counted atom's receptive field) are left out
            edges = torch.nonzero((lengths <= cutoff) & has_reverse).squeeze(1)
            if cap is not None:
                edges = indices.nearest_neighbours(edges, edge_vectors, lengths, receivers, num_nodes, cap, self.strict_caps)
            return edges

        # the embedding graph must hold every edge's reverse: a cap (or rounding at the cutoff) that keeps
        # one direction keeps both
        capped = subgraph(self.cutoffs["cutoff"], self.caps["main"])
        if self.lower_index_caps:
            capped = indices.lower_index_half(capped, senders, receivers)
        main = indices.with_reverse_edges(capped, reverse, num_edges)
        main_index = edge_index.index_select(1, main)
        main_lengths, main_units = lengths.index_select(0, main), units.index_select(0, main)
        main_reverse = indices.positions_in(main, num_edges).index_select(0, reverse.index_select(0, main))
        basis_rad = self.radial_basis(main_lengths)

        triplet_in, triplet_out = indices.triplets(main_index, num_nodes)
        rad, cir = self.cbf_basis_tint(main_lengths, _cosines(main_units.index_select(0, triplet_out), main_units.index_select(0, triplet_in)))
        empty_long, empty = senders.new_zeros(0), edge_vectors.new_zeros(0)
        fields: dict[str, Any] = dict(
            num_atoms=num_nodes,
            main_senders=main_index[0],
            main_receivers=main_index[1],
            main_reverse=main_reverse,
            triplet_in=triplet_in,
            rbf_triplet=self.mlp_rbf_tint(basis_rad),
            cbf_triplet=self.mlp_cbf_tint.angular_basis(rad, cir, triplet_out),
            basis_atom_update=self.mlp_rbf_h(basis_rad),
            quadruplet_triplet_in=empty_long, quadruplet_triplet_to_quadruplet=empty_long, rbf_quadruplet=empty,
            cbf_quadruplet=empty, sbf_quadruplet=None, aeaint_senders=empty_long, aeaint_receivers=empty_long,
            atom_edge_triplet_in=empty_long, rbf_atom_edge=empty, cbf_atom_edge=None, edge_atom_triplet_in=empty_long,
            rbf_edge_atom=empty, cbf_edge_atom=None, aint_senders=empty_long, aint_receivers=empty_long, rbf_atom_atom=empty,
        )
        if self.quad:
            qint = subgraph(self.cutoffs["cutoff_qint"], self.caps["qint"])
            quads = indices.quadruplets(edge_index, edge_vectors, reverse, main, qint, num_nodes)
            qint_units = units.index_select(0, qint)
            # d -> b -> a: polar angle at b, and the normal of the plane d-b-a
            v_ba_in = qint_units.index_select(0, quads["triplet_in_out"])
            v_db = main_units.index_select(0, quads["triplet_in_in"])
            rad_qint, cir_qint = self.cbf_basis_qint(lengths.index_select(0, qint), _cosines(v_ba_in, v_db))
            # c -> a <- b: polar angle at a, the normal of c-a-b, and the dihedral between the two planes
            v_ca = main_units.index_select(0, quads["triplet_out_out"])
            v_ba_out = qint_units.index_select(0, quads["triplet_out_in"])
            triplet_polar_cosines = _cosines(v_ca, v_ba_out)
            rad_sph, sph = self.sbf_basis_qint(
                main_lengths, cross(v_ca, v_ba_out), cross(v_db, v_ba_in), triplet_polar_cosines,
                QuadrupletTriplets(quads["trip_out_to_quad"], quads["trip_in_to_quad"], quads["triplet_out_out"]),
            )
            fields.update(
                quadruplet_triplet_in=quads["triplet_in_in"],
                quadruplet_triplet_to_quadruplet=quads["trip_in_to_quad"],
                rbf_quadruplet=self.mlp_rbf_qint(basis_rad),
                cbf_quadruplet=self.mlp_cbf_qint.per_triplet(rad_qint, cir_qint, quads["triplet_in_out"]),
                sbf_quadruplet=self.mlp_sbf_qint.angular_basis(rad_sph, sph, quads["out"]),
            )
        if self.atom_edge or self.edge_atom:
            aeaint = subgraph(self.cutoffs["cutoff_aeaint"], self.caps["aeaint"])
            aeaint_units = units.index_select(0, aeaint)
            basis_rad_aeaint = self.radial_basis_aeaint(lengths.index_select(0, aeaint))
            fields.update(aeaint_senders=senders.index_select(0, aeaint), aeaint_receivers=receivers.index_select(0, aeaint))
        if self.atom_edge:
            into, out = indices.mixed_triplets(edge_index, aeaint, main, num_nodes, excluded=main)
            rad, cir = self.cbf_basis_aeint(main_lengths, _cosines(main_units.index_select(0, out), aeaint_units.index_select(0, into)))
            fields.update(
                atom_edge_triplet_in=into,
                rbf_atom_edge=self.mlp_rbf_aeint(basis_rad_aeaint),
                cbf_atom_edge=self.mlp_cbf_aeint.angular_basis(rad, cir, out),
            )
        if self.edge_atom:
            into, out = indices.mixed_triplets(edge_index, main, aeaint, num_nodes, excluded=aeaint)
            rad, cir = self.cbf_basis_eaint(
                lengths.index_select(0, aeaint), _cosines(aeaint_units.index_select(0, out), main_units.index_select(0, into))
            )
            fields.update(
                edge_atom_triplet_in=into,
                rbf_edge_atom=self.mlp_rbf_eaint(basis_rad),
                cbf_edge_atom=self.mlp_cbf_eaint.angular_basis(rad, cir, out),
            )
        if self.atom_atom:
            aint = subgraph(self.cutoffs["cutoff_aint"], self.caps["aint"])
            fields.update(
                aint_senders=senders.index_select(0, aint),
                aint_receivers=receivers.index_select(0, aint),
                rbf_atom_atom=self.mlp_rbf_aint(self.radial_basis_aint(lengths.index_select(0, aint))),
            )
        return Interactions(**fields), main_units, basis_rad

    def forward(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, edge_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-atom energies (one column per head; an atom without neighbours gets zero), the final atom
        features and, with direct forces, per-atom forces."""
        atom_types = graph[keys.ATOM_TYPES]
        num_atoms = atom_types.shape[0]
        # one edge-less reference node per type: its energy is subtracted from that type's atoms
        node_types = with_reference_nodes(atom_types, self.num_types)
        num_nodes = node_types.shape[0]
        edge_index = graph[keys.EDGE_INDEX]
        reverse = indices.reverse_edges(edge_index, edge_vectors, num_nodes)
        if keys.NODE_ENERGY_MASK not in graph and is_eager():
            check_complete(edge_index, reverse)
        graphs, main_units, basis_rad = self.interaction_graphs(edge_index, edge_vectors, edge_lengths, reverse, num_nodes)
        h = self.atom_emb(self.embedding_rows.index_select(0, node_types)).to(edge_vectors.dtype)
        m = self.edge_emb(h, basis_rad, graphs.main_senders, graphs.main_receivers)
        basis_output = self.mlp_rbf_out(basis_rad)
        block_outputs = [self.out_blocks[0](h, m, basis_output, graphs.main_receivers)]
        for block, out_block in zip(self.int_blocks, self.out_blocks[1:]):
            h, m = block(h, m, graphs)
            block_outputs.append(out_block(h, m, basis_output, graphs.main_receivers))
        energy_features, force_features = zip(*block_outputs)
        node_features = self.out_mlp_E(torch.cat(energy_features, dim=-1))
        type_one_hot = nn.functional.one_hot(atom_types, self.num_types).to(edge_vectors.dtype)
        energies = subtract_reference(self.out_energy(node_features), type_one_hot)
        if not self.direct_forces:
            return energies, node_features[:num_atoms]
        edge_force_magnitudes = self.out_forces(self.out_mlp_F(torch.cat(force_features, dim=-1)))
        if self.forces_coupled:
            # F_st = F_ts: the mean over each edge and its reverse
            edge_force_magnitudes = 0.5 * (edge_force_magnitudes + edge_force_magnitudes.index_select(0, graphs.main_reverse))
        forces = sum_into_segments(edge_force_magnitudes * main_units, graphs.main_receivers, num_nodes)
        return energies, node_features[:num_atoms], forces[:num_atoms]


def scale_factors(module: nn.Module) -> dict[str, ScaleFactor]:
    """The model's scale factors by name, in module order (fairchem's names)."""
    return {name: child for name, child in module.named_modules() if isinstance(child, ScaleFactor)}


def fit_scale_factors(core: GemNetOC, graphs: list[AtomicGraph]) -> dict[str, float]:
    """Fit every scale factor on ``graphs`` (fairchem's procedure) and return name -> value.

    In the order the forward pass meets them, each factor is reset to 1 and
    set to sqrt(var(its reference input) / var(its output)) over the graphs,
    so that later factors see the earlier ones fitted.
    """
    factors = scale_factors(core)
    order: list[str] = []
    hooks = [
        factor.register_forward_hook(lambda module, args, output, name=name: order.append(name) if name not in order else None)
        for name, factor in factors.items()
    ]

    def run_core() -> None:
        for graph in graphs:
            edge_vectors = graph[keys.EDGE_VECTORS] if keys.EDGE_VECTORS in graph else compute_edge_vectors(graph)
            core(graph, edge_vectors, torch.linalg.norm(edge_vectors, dim=1))

    values = {}
    with torch.no_grad():
        for factor in factors.values():
            factor.scale_factor.fill_(1.0)
        run_core()
        for hook in hooks:
            hook.remove()
        for name in order:
            factor = factors[name]
            factor.statistics = [0.0, 0.0, 0.0]
            try:
                run_core()
                variance_in, variance_out, rows = factor.statistics
            finally:
                factor.statistics = None
            # without variance (e.g. one element: identical atom features) there is nothing to fit: keep 1
            values[name] = (variance_in / variance_out) ** 0.5 if rows and variance_in > 0.0 and variance_out > 0.0 else 1.0
            factor.scale_factor.fill_(values[name])
    return values


def load_scale_factors(module: nn.Module, source: str | Path | dict[str, float]) -> None:
    """Set scale factors from name -> value (a dict, a JSON file, or a torch-saved dict); every factor must be given."""
    if isinstance(source, dict):
        values = source
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"scale_file {path} does not exist")
        values = torch.load(path, weights_only=True) if path.suffix == ".pt" else json.loads(path.read_text())
        values = {name: value for name, value in values.items() if name != "comment"}
    factors = scale_factors(module)
    missing, unknown = sorted(set(factors) - set(values)), sorted(set(values) - set(factors))
    if missing or unknown:
        raise ValueError(f"scale factors: missing values for {missing}, no factor named {unknown}")
    with torch.no_grad():
        for name, factor in factors.items():
            value = float(values[name])
            # fairchem writes 0 for a factor it never fitted, which it treats as 1
            factor.scale_factor.fill_(value if value != 0.0 else 1.0)


#: fairchem registers each output block's first MLP under a second name as well; its state dicts list both
FAIRCHEM_SECOND_NAME = ".seq_energy_pre."


def load_fairchem_state_dict(core: GemNetOC, state_dict: dict[str, torch.Tensor]) -> None:
    """Load the weights of a fairchem-core GemNetOC (a checkpoint's model state dict, ``module.`` prefixes
    removed) built with the same options; fairchem's unfitted scale factors (0) become 1."""
    renamed = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        if FAIRCHEM_SECOND_NAME in key:
            continue
        key = key.replace(".cosφ_basis.offset", ".gaussians.centres").replace(".offset", ".centres")
        if key.endswith(".scale_factor") and float(value) == 0.0:
            value = torch.ones_like(value)
        renamed[key] = value
    expected = core.state_dict()
    missing, unknown = sorted(set(expected) - set(renamed)), sorted(set(renamed) - set(expected))
    if missing or unknown:
        raise ValueError(f"fairchem state dict does not fit this GemNet-OC: missing {missing}, unknown {unknown}")
    core.load_state_dict({key: value.to(expected[key].dtype).reshape(expected[key].shape) for key, value in renamed.items()})


def build_gemnet_oc(config: GemNetOCConfig) -> Potential:
    return Potential("gemnet_oc", config, GemNetOC(config), o3.Irreps("16x0e"))
