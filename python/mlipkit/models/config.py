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

    model_config = ConfigDict(extra="forbid")
    name: Literal["mse", "l1", "huber", "gaussian_nll"] = "mse"
    weight: float = Field(1.0, ge=0.0)
    huber_delta: float = Field(0.01, gt=0.0)
    #: gaussian_nll: smallest variance the loss uses (PhysicsML's, torch's eps), in (energy unit / atom)^2
    gaussian_nll_eps: float = Field(0.01, gt=0.0)


class OutputConfig(BaseModel):
    """An extra output head (graph or node, scalars or vectors) and its loss."""

    model_config = ConfigDict(extra="forbid")
    num_tasks: int = Field(1, gt=0)
    loss: LossConfig = LossConfig()


class PairPotentialConfig(BaseModel):
    """nequip-style ``pair_potential``: ZBL repulsion in LAMMPS metal or real energy units.

    ``units`` defaults to the model's ``units``; giving another is an error.
    """

    model_config = ConfigDict(extra="forbid")
    kind: Literal["zbl"] = "zbl"
    units: EnergyUnits | None = None
    chemical_species: list[str] | None = None


class CoulombConfig(BaseModel):
    """How predicted charges interact (README, "Charges and electrostatics").

    ``alpha``: damped_shifted's damping in 1/Å (default 0.2, as Fennell and
    Gezelter advise for cutoffs of 10-12 Å); for ewald the
    splitting parameter, default sqrt(-ln ewald_accuracy) / long_range_cutoff.
    ``damping_radius``: PhysNet's short-range damping of 1/r below this
    distance (mlip: 5 Å); null: none.
    """

    model_config = ConfigDict(extra="forbid")
    method: CoulombMethod = "damped_shifted"
    long_range_cutoff: float = Field(10.0, gt=0.0)
    alpha: float | None = Field(None, ge=0.0)
    ewald_accuracy: float = Field(1e-8, gt=0.0, lt=1.0)
    damping_radius: float | None = Field(MLIP_DAMPING_RADIUS, gt=0.0)
    charge_correction: ChargeCorrection = "uniform"

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

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "do_derivatives": ("compute_forces",),
        "per_type_energy_shifts": ("scaling_mean",),
        "per_type_energy_scales": ("scaling_std",),
    }

    type_names: list[str] = Field(min_length=1)
    r_max: float = Field(gt=0.0)
    seed: int | None = None
    #: units of the training data, named as LAMMPS unit styles: "metal" is eV and Å, "real" kcal/mol and Å
    units: EnergyUnits = "metal"
    per_type_energy_shifts: PerTypeValue | None = None
    per_type_energy_scales: PerTypeValue | None = None
    per_type_energy_shifts_trainable: bool = False
    per_type_energy_scales_trainable: bool = False
    add_atomic_energies: bool = True
    do_derivatives: bool = True
    pair_potential: PairPotentialConfig | None = None
    num_readout_heads: int = Field(1, gt=0)
    y_graph_scalars: OutputConfig | None = None
    y_graph_vector: OutputConfig | None = None
    y_node_scalars: OutputConfig | None = None
    y_node_vector: OutputConfig | None = None

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
    num_bessel: int = Field(8, gt=0)
    bessel_basis_trainable: bool = True
    num_polynomial_cutoff: int = Field(6, ge=1)
    radial_mlp_hidden: list[int] = Field(default_factory=lambda: [64, 64])
    radial_mlp_activation: ActivationName = "silu"
    mlp_irreps: str = "16x0e"
    avg_num_neighbours: float | None = Field(None, gt=0.0)
    num_node_feats: int | None = Field(None, gt=0)
    num_species: int | None = Field(None, gt=0)
    num_edge_feats: int = Field(0, ge=0)
    deterministic_scatter_ops: bool = True
    tensor_product_kernel: Literal["fused", "e3nn"] = "fused"
    #: mlip's charge options (README, "Charges and electrostatics"); use_coulomb_term turns the charges on
    predict_partial_charges: bool = False
    use_coulomb_term: bool = False
    #: true (mlip's spelling) is "categorical"
    use_total_charge_embedding: bool | TotalChargeEmbeddingKind = False
    #: the total charges the categorical embedding knows (the training data's unless given)
    available_total_charges: list[float] | None = None
    coulomb: CoulombConfig = Field(default_factory=CoulombConfig)

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
