"""Options every potential shares, and the machinery for alternative spellings.

mlipkit accepts the option names of three documentation families (PhysicsML,
InstaDeep's mlip, nequip). Each option has one canonical name (stored in
checkpoints); ``SPELLINGS`` maps it to the other names it may be given as.
Giving two spellings of one option with different values is an error.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Sequence

from e3nn import o3
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlipkit.data import keys
from mlipkit.nn.activations import ActivationName
from mlipkit.nn.electrostatics import (
    DAMPED_SHIFTED_ALPHA,
    MLIP_DAMPING_RADIUS,
    ChargeCorrection,
    CoulombMethod,
    TotalChargeEmbeddingKind,
    ewald_alpha,
    ewald_k_max,
)
from mlipkit.nn.zbl import EnergyUnits, atomic_numbers_of

PerTypeValue = float | list[float] | dict[str, float]


class LossConfig(BaseModel):
    """How an output enters the training loss (used by the trainer)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    name: Literal["mse", "l1", "huber", "gaussian_nll"] = "mse"
    """`mse`, `l1`, `huber` or `gaussian_nll` (the energy of mean-variance models only)"""
    weight: float = Field(1.0, ge=0.0)
    """the term's weight in the total loss; 0 reports the error without fitting it"""
    huber_delta: float = Field(0.01, gt=0.0)
    """`huber`: where the loss turns from quadratic to linear"""
    gaussian_nll_eps: float = Field(0.01, gt=0.0)
    """`gaussian_nll`: smallest variance the loss uses (PhysicsML's, torch's eps), in (energy unit / atom)²"""


class OutputConfig(BaseModel):
    """An extra output head (graph or node, scalars or vectors) and its loss."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    num_tasks: int = Field(1, gt=0)
    """values per graph or node (vectors: 3-vectors per task)"""
    loss: LossConfig = LossConfig()
    """the head's loss, unless the training config's `loss` section names it"""


class PairPotentialConfig(BaseModel):
    """nequip-style ``pair_potential``: ZBL repulsion in LAMMPS metal or real energy units.

    ``units`` defaults to the model's ``units``; giving another is an error.
    """

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    kind: Literal["zbl"] = "zbl"
    """the Ziegler-Biersack-Littmark screened nuclear repulsion"""
    units: EnergyUnits | None = None
    """must equal the model's `units` when given"""
    chemical_species: list[str] | None = None
    """the element of each type name (default: the type names themselves)"""


class CoulombConfig(BaseModel):
    """How predicted charges interact (docs: charges.md)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    method: CoulombMethod = "damped_shifted"
    """`damped_shifted` (smooth, local), `ewald` (the converged lattice sum) or `mlip_parity` (mlip's numbers)"""
    long_range_cutoff: float = Field(10.0, gt=0.0)
    """the second edge list's cutoff in Å (damped shifted force: where it vanishes; Ewald: the real-space cutoff)"""
    alpha: float | None = Field(None, ge=0.0)
    """damping (damped shifted, default 0.2 /Å as Fennell and Gezelter advise for 10-12 Å cutoffs) or Ewald splitting
    parameter (default √(−ln ewald_accuracy) / long_range_cutoff)"""
    ewald_accuracy: float = Field(1e-8, gt=0.0, lt=1.0)
    """ε: Ewald's real- and reciprocal-space cutoffs leave out terms below it (k_max = 2α√(−ln ε))"""
    damping_radius: float | None = Field(MLIP_DAMPING_RADIUS, gt=0.0)
    """PhysNet's short-range damping of 1/r below this distance in Å (mlip's 5 Å); null: bare 1/r"""
    charge_correction: ChargeCorrection = "uniform"
    """`uniform`: q_i = q̃_i − (Σq̃ − Q)/N (mlip); `weighted`: by a second readout channel f_i (AIMNet2); `none`"""

    @model_validator(mode="after")
    def _check_method(self) -> "CoulombConfig":
        if self.method == "mlip_parity":
            if self.damping_radius != MLIP_DAMPING_RADIUS or self.charge_correction != "uniform":
                raise ValueError(
                    f"coulomb.method mlip_parity reproduces mlip, whose damping radius is {MLIP_DAMPING_RADIUS} Å "
                    "and whose charge correction is uniform; leave damping_radius and charge_correction at their defaults"
                )
        if self.method == "ewald" and self.alpha == 0.0:
            raise ValueError("coulomb.alpha must be positive for ewald (or left out to follow ewald_accuracy)")
        if self.damping_radius is not None and self.damping_radius >= self.long_range_cutoff:
            raise ValueError(
                f"coulomb.damping_radius={self.damping_radius} must be smaller than long_range_cutoff={self.long_range_cutoff}"
            )
        return self

    @property
    def resolved_alpha(self) -> float:
        if self.alpha is not None:
            return self.alpha
        if self.method == "ewald":
            return ewald_alpha(self.long_range_cutoff, self.ewald_accuracy)
        return DAMPED_SHIFTED_ALPHA if self.method == "damped_shifted" else 0.0

    @property
    def k_max(self) -> float:
        """Ewald's reciprocal cutoff (1/Å); 0 for the real-space methods."""
        return ewald_k_max(self.resolved_alpha, self.ewald_accuracy) if self.method == "ewald" else 0.0


class PotentialConfig(BaseModel):
    """Options of every model: identity, energy scale/shift, pair potential, derivatives, heads."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "do_derivatives": ("compute_forces",),
        "per_type_energy_shifts": ("scaling_mean",),
        "per_type_energy_scales": ("scaling_std",),
    }

    type_names: list[str] = Field(min_length=1)
    """the atom types in model order (element symbols for ZBL and LAMMPS); mlip-train fills them from the data"""
    r_max: float = Field(gt=0.0)
    """the cutoff radius of the neighbour list, in Å"""
    seed: int | None = None
    """makes the initial weights reproducible"""
    units: EnergyUnits = "metal"
    """units of the training data, named as LAMMPS unit styles: `metal` (eV, Å) or `real` (kcal/mol, Å)"""
    per_type_energy_shifts: PerTypeValue | None = None
    """E_i = scale·Ẽ_i + shift per type: one value, a list in type order or a dict by type name (default 0)"""
    per_type_energy_scales: PerTypeValue | None = None
    """likewise the scales (default 1)"""
    per_type_energy_shifts_trainable: bool = False
    """train the shifts with the network"""
    per_type_energy_scales_trainable: bool = False
    """train the scales with the network"""
    add_atomic_energies: bool = True
    """False turns the per-type shifts off"""
    do_derivatives: bool = True
    """False: an energy-only model (no forces, virial or stress)"""
    pair_potential: PairPotentialConfig | None = None
    """`{kind: zbl, chemical_species: [...]}`: ZBL repulsion added to the energy, in the model's units"""
    num_readout_heads: int = Field(1, gt=0)
    """energy readout heads; the graph field `head` picks one per graph"""
    y_graph_scalars: OutputConfig | None = None
    """an extra head of per-graph scalars: `{num_tasks: n, loss: {name: mse, weight: w}}`"""
    y_graph_vector: OutputConfig | None = None
    """an extra head of per-graph 3-vectors"""
    y_node_scalars: OutputConfig | None = None
    """an extra head of per-atom scalars"""
    y_node_vector: OutputConfig | None = None
    """an extra head of per-atom 3-vectors"""

    @model_validator(mode="before")
    @classmethod
    def _merge_spellings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        loss_keys = sorted(key for key in data if key.endswith("_loss_config"))
        if loss_keys:
            raise ValueError(
                f"{loss_keys}: PhysicsML's loss configs are training options; give them in mlip-train's model "
                "section (they become its loss section), not to the model itself"
            )
        return cls.canonical_options(data)

    @classmethod
    def canonical_options(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` with every alternative spelling replaced by the canonical name."""
        data = dict(data)
        spellings: dict[str, tuple[str, ...]] = {}
        for klass in reversed(cls.__mro__):
            spellings.update(getattr(klass, "SPELLINGS", {}))
        for canonical, aliases in spellings.items():
            for alias in aliases:
                if alias not in data:
                    continue
                value = data.pop(alias)
                if canonical in data and data[canonical] != value:
                    raise ValueError(
                        f"'{alias}' and '{canonical}' are two spellings of one option and were given "
                        f"different values ({value!r} and {data[canonical]!r}); give only one"
                    )
                data[canonical] = value
        return data

    @classmethod
    def default_r_max(cls, options: dict[str, Any]) -> float | None:
        """The cutoff a model with these options uses when ``r_max`` is not given (None: it must be given)."""
        return None

    @field_validator("type_names")
    @classmethod
    def _unique_type_names(cls, type_names: list[str]) -> list[str]:
        duplicates = sorted({t for t in type_names if type_names.count(t) > 1})
        if duplicates:
            raise ValueError(f"type_names must be unique, {duplicates} appear more than once")
        return type_names

    @model_validator(mode="after")
    def _check_shared(self) -> "PotentialConfig":
        if not self.add_atomic_energies and self.per_type_energy_shifts is not None:
            raise ValueError("add_atomic_energies=False turns the per-type energy shifts off; do not also give them")
        _ = self.energy_shifts, self.energy_scales  # raise on a wrong number of per-type values
        if self.pair_potential is not None:
            species = self.pair_species
            if len(species) != len(self.type_names):
                raise ValueError(
                    f"pair_potential.chemical_species has {len(species)} entries for {len(self.type_names)} type names"
                )
            atomic_numbers_of(species)
            if self.pair_potential.units not in (None, self.units):
                raise ValueError(
                    f"pair_potential.units is '{self.pair_potential.units}' but the model's units are "
                    f"'{self.units}'; the ZBL term must be in the units of the training data"
                )
        return self

    def per_type_values(self, value: PerTypeValue | None, default: float, name: str) -> list[float]:
        """One value per type name from a scalar, a list in type order or a dict by type name."""
        num_types = len(self.type_names)
        if value is None:
            return [default] * num_types
        if isinstance(value, (int, float)):
            return [float(value)] * num_types
        if isinstance(value, dict):
            missing = [t for t in self.type_names if t not in value]
            extra = [t for t in value if t not in self.type_names]
            if missing or extra:
                raise ValueError(f"{name} must have one entry per type name {self.type_names}; missing {missing}, unknown {extra}")
            return [float(value[t]) for t in self.type_names]
        if len(value) != num_types:
            raise ValueError(f"{name} has {len(value)} values for {num_types} type names {self.type_names}")
        return [float(v) for v in value]

    @property
    def energy_shifts(self) -> list[float]:
        return self.per_type_values(self.per_type_energy_shifts, 0.0, "per_type_energy_shifts")

    @property
    def energy_scales(self) -> list[float]:
        return self.per_type_values(self.per_type_energy_scales, 1.0, "per_type_energy_scales")

    @property
    def pair_species(self) -> Sequence[str]:
        assert self.pair_potential is not None
        return self.pair_potential.chemical_species or self.type_names


def irreps_option(text: str, name: str) -> o3.Irreps:
    try:
        return o3.Irreps(text)
    except (ValueError, AssertionError) as error:
        raise ValueError(f"{name} is not a valid irreps string: {text!r} ({error})") from error


class MessagePassingConfig(PotentialConfig):
    """Options NequIP and MACE share: radial basis, readout MLP, graph inputs, neighbour normalisation.

    Defaults are NequIP's; other models override a default by redeclaring the
    field, and the checks here still apply.
    """

    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "max_ell": ("l_max",),
        "num_bessel": ("num_rbf",),
        "avg_num_neighbours": ("avg_num_neighbors",),
    }

    max_ell: int = Field(2, ge=0, le=6)
    """max degree of the spherical harmonics and of the features"""
    num_bessel: int = Field(8, gt=0)
    """size of the Bessel radial basis"""
    bessel_basis_trainable: bool = True
    """trainable Bessel frequencies"""
    num_polynomial_cutoff: int = Field(6, ge=1)
    """p of the polynomial cutoff envelope"""
    radial_mlp_hidden: list[int] = Field(default_factory=lambda: [64, 64])
    """hidden widths of the radial MLP"""
    radial_mlp_activation: ActivationName = "silu"
    """the radial MLP's activation: silu/swish, tanh, sigmoid, softplus, gelu, relu"""
    mlp_irreps: str = "16x0e"
    """hidden scalars of the energy readout"""
    avg_num_neighbours: float | None = Field(None, gt=0.0)
    """messages are normalised by it (typically `${training_data_stats:num_neighbors_mean}`)"""
    num_node_feats: int | None = Field(None, gt=0)
    """node input width: the one-hot types plus extra features from the graph field `node_attrs` (default: #types)"""
    num_species: int | None = Field(None, gt=0)
    """must equal the number of type names when given"""
    num_edge_feats: int = Field(0, ge=0)
    """extra edge features (graph field `edge_attrs`) fed to the radial MLP"""
    deterministic_scatter_ops: bool = True
    """e3nn path only: message sums by the C++ sorted segment sum (fixed order) instead of `index_add`"""
    tensor_product_kernel: Literal["fused", "e3nn"] = "fused"
    """`fused`: gather, tensor product and receiver sum in one C++ op (CPU); `e3nn`: the reference path"""
    predict_partial_charges: bool = False
    """a second readout gives charges, corrected to the total charge (see Charges and electrostatics)"""
    use_coulomb_term: bool = False
    """adds the Coulomb energy of the predicted charges; turns `predict_partial_charges` on"""
    use_total_charge_embedding: bool | TotalChargeEmbeddingKind = False
    """`true`/`categorical` (mlip): a learned vector per total charge of the training data; `continuous`: Q times
    a learned vector"""
    available_total_charges: list[float] | None = None
    """the categorical embedding's classes (mlip-train fills them from the training data)"""
    coulomb: CoulombConfig = Field(default_factory=CoulombConfig)
    """how the charges interact: the `coulomb.*` options (see Charges and electrostatics)"""

    @field_validator("radial_mlp_hidden")
    @classmethod
    def _positive_widths(cls, widths: list[int]) -> list[int]:
        if any(w <= 0 for w in widths):
            raise ValueError(f"radial_mlp_hidden widths must be positive, got {widths}")
        return widths

    @field_validator("mlp_irreps")
    @classmethod
    def _scalar_mlp_irreps(cls, text: str) -> str:
        irreps = irreps_option(text, "mlp_irreps")
        if any(ir != o3.Irrep("0e") for _, ir in irreps) or irreps.dim == 0:
            raise ValueError(f"mlp_irreps must be even scalars only (like '16x0e'), got {text!r}")
        return text

    @model_validator(mode="after")
    def _resolve_charge_options(self) -> "MessagePassingConfig":
        """Stored resolved, as mlip resolves them: the Coulomb term needs charges; true is the categorical embedding."""
        if self.use_coulomb_term and not self.predict_partial_charges:
            self.predict_partial_charges = True
        if self.use_total_charge_embedding is True:
            self.use_total_charge_embedding = "categorical"
        if self.use_total_charge_embedding == "categorical":
            charges = self.available_total_charges
            if not charges:
                raise ValueError(
                    "use_total_charge_embedding 'categorical' needs available_total_charges (mlip-train fills them "
                    "from the training data; give them when building a model by hand)"
                )
            if len(set(charges)) != len(charges):
                raise ValueError(f"available_total_charges {charges} lists a charge twice")
        return self

    @property
    def charge_embedding(self) -> TotalChargeEmbeddingKind | None:
        return self.use_total_charge_embedding or None

    @model_validator(mode="after")
    def _check_input_sizes(self) -> "MessagePassingConfig":
        num_types = len(self.type_names)
        if self.num_species is not None and self.num_species != num_types:
            raise ValueError(f"num_species={self.num_species} but there are {num_types} type names {self.type_names}")
        if self.num_node_feats is not None and self.num_node_feats < num_types:
            raise ValueError(
                f"num_node_feats={self.num_node_feats} is smaller than the one-hot width {num_types} "
                f"(the number of type names); extra features beyond it come from the graph's '{keys.NODE_ATTRS}'"
            )
        return self
