"""MACE (Batatia et al., NeurIPS 2022): message passing with a higher-order product basis.

Each layer builds an atomic basis A_i by an equivariant convolution of the
neighbours' features (as NequIP does, in ``nn.interaction.Convolution``, with
messages divided by avg_num_neighbours), raises it to the powers 1..correlation
with the symmetric contraction of ``nn.symmetric_contraction`` and mixes the
result linearly, plus a residual self-connection. Every layer but the last
reads out an energy linearly; the last layer keeps scalars only and reads out
through a small MLP (a single-layer model reads out linearly, as mace-torch's
does); the per-atom energy is the sum of the readouts. The
structure and initialisation follow mace-torch's ``ScaleShiftMACE`` (its
default RealAgnosticResidualInteractionBlock), so equal hyperparameters give
equal parameter counts.

Option spellings (canonical name <- also accepted):

=========================  ==========================================  ======================
canonical (PhysicsML)      also accepted (mace-torch, nequip, mlip)    default
=========================  ==========================================  ======================
num_interactions           num_layers                                  2
hidden_irreps              (mace) num_channels + max_L                 "128x0e + 128x1o"
max_ell                    l_max                                       3
correlation                correlation (an int, or one per layer)      3
mlp_irreps                 MLP_irreps                                  "16x0e"
num_bessel                 num_radial_basis, num_rbf                   8
num_polynomial_cutoff      num_cutoff_basis                            5
radial_mlp_hidden          radial_MLP                                  [64, 64, 64]
bessel_basis_trainable     (nequip BesselBasis_trainable)              False
avg_num_neighbours         avg_num_neighbors                           None (no division)
gate                       gate (the last readout's activation)        "silu"
interaction_first          interaction_first                           residual block
use_reduced_cg             use_reduced_cg                              True
keep_last_layer_irreps     keep_last_layer_irreps                      False
symmetric_contraction_kernel  (mlipkit: sparse | dense)                "sparse"
num_node_feats / num_species  width of the one-hot type input          #types
num_edge_feats             extra edge features after the radial basis  0
do_derivatives             compute_forces                              True
per_type_energy_shifts     scaling_mean (one value), E0s               0
per_type_energy_scales     scaling_std (one value)                     1
=========================  ==========================================  ======================
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from e3nn import o3
from pydantic import Field, field_validator, model_validator
from torch import nn

from mlipkit.data.graph import AtomicGraph
from mlipkit.models.config import MessagePassingConfig, irreps_option
from mlipkit.models.potential import Potential
from mlipkit.nn.activations import ActivationName
from mlipkit.nn.embedding import GraphInputs, TypeEmbedding
from mlipkit.nn.interaction import Convolution
from mlipkit.nn.linear import Linear, NodeAttributeLinear
from mlipkit.nn.message_passing import MessagePassingNetwork
from mlipkit.nn.radial import RadialEmbedding
from mlipkit.nn.readout import ScalarHead
from mlipkit.nn.symmetric_contraction import SymmetricContraction

RESIDUAL_BLOCK = "RealAgnosticResidualInteractionBlock"
NON_RESIDUAL_BLOCK = "RealAgnosticInteractionBlock"
SCALAR = o3.Irrep("0e")


class MACEConfig(MessagePassingConfig):
    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {
        "num_interactions": ("num_layers",),
        "mlp_irreps": ("MLP_irreps",),
        "num_bessel": ("num_radial_basis",),
        "num_polynomial_cutoff": ("num_cutoff_basis",),
        "radial_mlp_hidden": ("radial_MLP",),
    }

    num_interactions: int = Field(2, ge=1)
    """MACE layers"""
    hidden_irreps: str = "128x0e + 128x1o"
    """node features; one multiplicity for all irreps, must include 0e"""
    num_channels: int | None = Field(None, gt=0)
    """mace-torch's alternative to hidden_irreps, with `max_L`: num_channels copies of 0e, 1o, 2e, ... up to max_L"""
    max_L: int | None = Field(None, ge=0, le=6)
    """see `num_channels`"""
    max_ell: int = Field(3, ge=0, le=6)
    """max degree of the edge spherical harmonics (and of the atomic basis A)"""
    correlation: int | list[int] = 3
    """body order − 1 of the product basis, 1 to 4; one for all layers or one per layer"""
    num_polynomial_cutoff: int = Field(5, ge=1)
    """p of the polynomial cutoff envelope"""
    radial_mlp_hidden: list[int] = Field(default_factory=lambda: [64, 64, 64])
    """hidden widths of the radial MLP"""
    bessel_basis_trainable: bool = False
    """trainable Bessel frequencies (mace-torch: fixed)"""
    gate: ActivationName | None = "silu"
    """activation of the last layer's readout MLP (null: none)"""
    interaction_first: Literal["RealAgnosticResidualInteractionBlock", "RealAgnosticInteractionBlock"] = RESIDUAL_BLOCK
    """`RealAgnosticInteractionBlock`: a first layer without residual, its A multiplied by the types (mace-torch's `MACE`)"""
    use_reduced_cg: bool = True
    """symmetric-reduced couplings (fewest weights); False: every coupling path, as mace-torch without cuequivariance"""
    keep_last_layer_irreps: bool = False
    """the last layer keeps `hidden_irreps` instead of its scalars"""
    symmetric_contraction_kernel: Literal["sparse", "dense"] = "sparse"
    """`sparse`: the couplings as sparse polynomials, one C++ op; `dense`: dense coupling tensors and matmuls (reference)"""

    @model_validator(mode="before")
    @classmethod
    def _channels_and_max_l(cls, data):
        """mace-torch's alternative to hidden_irreps: num_channels copies of 0e, 1o, 2e, ... up to max_L."""
        if not isinstance(data, dict) or data.get("num_channels") is None and data.get("max_L") is None:
            return data
        if data.get("num_channels") is None or data.get("max_L") is None:
            raise ValueError("num_channels and max_L describe hidden_irreps together; give both (or hidden_irreps)")
        channels, max_l = data["num_channels"], data["max_L"]
        implied = " + ".join(f"{channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(int(max_l) + 1))
        if "hidden_irreps" in data and o3.Irreps(data["hidden_irreps"]) != o3.Irreps(implied):
            raise ValueError(f"hidden_irreps={data['hidden_irreps']!r} contradicts num_channels/max_L ({implied!r}); give one")
        return dict(data, hidden_irreps=implied)

    @field_validator("hidden_irreps")
    @classmethod
    def _valid_hidden_irreps(cls, text: str) -> str:
        irreps = irreps_option(text, "hidden_irreps")
        if len({mul for mul, _ in irreps}) != 1:
            raise ValueError(f"hidden_irreps must have one multiplicity for every irrep (MACE mixes channels per irrep), got {text!r}")
        if irreps.count(SCALAR) == 0:
            raise ValueError(f"hidden_irreps must contain even scalars (0e) for the energy readout, got {text!r}")
        if len({ir for _, ir in irreps}) != len(irreps):
            raise ValueError(f"hidden_irreps lists an irrep twice: {text!r}")
        return text

    @model_validator(mode="after")
    def _check_correlation(self) -> "MACEConfig":
        orders = self.correlations
        if len(orders) != self.num_interactions:
            raise ValueError(f"correlation lists {len(orders)} orders for num_interactions={self.num_interactions} layers")
        if any(not 1 <= order <= 4 for order in orders):
            raise ValueError(f"correlation orders must lie in 1..4, got {self.correlation}")
        return self

    @property
    def correlations(self) -> list[int]:
        if isinstance(self.correlation, int):
            return [self.correlation] * self.num_interactions
        return list(self.correlation)


def atomic_basis_irreps(irreps_sh: o3.Irreps, num_channels: int, both_parities: bool) -> o3.Irreps:
    """num_channels copies of each irrep the convolution produces (both parities if the features have odd scalars)."""
    if both_parities:
        irreps_sh = o3.Irreps([(1, (l, p)) for l in range(irreps_sh.lmax + 1) for p in (1, -1)])
    return (irreps_sh * num_channels).sort().irreps.simplify()


class MACELayer(nn.Module):
    """Interaction (convolution into the atomic basis A) then product basis, linear mix and self-connection."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_basis: o3.Irreps,
        irreps_out: o3.Irreps,
        irreps_sh: o3.Irreps,
        num_node_attrs: int,
        correlation: int,
        residual: bool,
        reduced_couplings: bool,
        contraction_kernel: str,
        **convolution_options,
    ):
        super().__init__()
        irreps_node_attrs = o3.Irreps(f"{num_node_attrs}x0e")
        self.convolution = Convolution(
            irreps_in,
            irreps_sh,
            irreps_node_attrs,
            irreps_basis,
            self_connection=False,
            normalization_exponent=1.0,
            **convolution_options,
        )
        self.residual = residual
        if residual:
            self.self_connection = NodeAttributeLinear(irreps_in, irreps_node_attrs, irreps_out)
        else:
            # the first layer's input is only the type embedding: the types select the basis instead
            self.self_connection = NodeAttributeLinear(irreps_basis, irreps_node_attrs, irreps_basis)
        self.product = SymmetricContraction(
            irreps_basis, irreps_out, correlation, num_node_attrs, reduced_couplings, contraction_kernel
        )
        self.linear = Linear(irreps_out, irreps_out)
        self.irreps_out = irreps_out

    def forward(self, node_feats, node_attrs, edge_sh, edge_radial, edge_index):
        basis = self.convolution(node_feats, node_attrs, edge_sh, edge_radial, edge_index)
        if not self.residual:
            basis = self.self_connection(basis, node_attrs)
        out = self.linear(self.product(basis, node_attrs))
        if self.residual:
            out = out + self.self_connection(node_feats, node_attrs)
        return out


class MACE(MessagePassingNetwork):
    """The MACE network: type embedding, MACE layers, a readout per layer summed into per-atom energies."""

    energy_readout_name = "readouts"

    def __init__(self, config: MACEConfig):
        super().__init__()
        self.inputs = GraphInputs(len(config.type_names), config.num_node_feats, config.num_edge_feats)
        num_node_attrs = self.inputs.num_node_attrs
        hidden = o3.Irreps(config.hidden_irreps)
        num_channels = hidden.count(SCALAR)
        scalars = o3.Irreps(f"{num_channels}x0e")
        irreps_sh = o3.Irreps.spherical_harmonics(config.max_ell)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.radial_embedding = RadialEmbedding(
            config.r_max, config.num_bessel, config.bessel_basis_trainable, "polynomial", config.num_polynomial_cutoff
        )
        self.embedding = TypeEmbedding(num_node_attrs, num_channels)
        self.build_total_charge_embedding(config.charge_embedding, config.available_total_charges, num_channels)
        convolution_options = dict(
            num_radial=config.num_bessel + config.num_edge_feats,
            radial_hidden=config.radial_mlp_hidden,
            radial_activation=config.radial_mlp_activation,
            radial_variance_scale=1.0,
            avg_num_neighbours=config.avg_num_neighbours,
            deterministic_scatter=config.deterministic_scatter_ops,
            tensor_product_kernel=config.tensor_product_kernel,
        )
        has_odd_scalars = hidden.count(o3.Irrep("0o")) > 0
        irreps = scalars
        self.layers = nn.ModuleList()
        for index, correlation in enumerate(config.correlations):
            last = index == config.num_interactions - 1
            irreps_out = scalars if last and not config.keep_last_layer_irreps else hidden
            layer = MACELayer(
                irreps,
                atomic_basis_irreps(irreps_sh, num_channels, has_odd_scalars and index > 0),
                irreps_out,
                irreps_sh,
                num_node_attrs,
                correlation,
                residual=index > 0 or config.interaction_first == RESIDUAL_BLOCK,
                reduced_couplings=config.use_reduced_cg,
                contraction_kernel=config.symmetric_contraction_kernel,
                **convolution_options,
            )
            self.layers.append(layer)
            irreps = irreps_out
        self.mlp_irreps = o3.Irreps(config.mlp_irreps)
        self.gate = config.gate
        self.readouts = self.build_energy_readout(config.num_readout_heads)
        self.feature_irreps = sum((layer.irreps_out for layer in self.layers), o3.Irreps())

    def build_energy_readout(self, num_heads: int) -> nn.ModuleList:
        """A readout per layer: linear, the last one (of two or more) non-linear."""
        readouts = nn.ModuleList()
        for index, layer in enumerate(self.layers):
            if index == len(self.layers) - 1 and index > 0:
                readouts.append(ScalarHead(layer.irreps_out, self.mlp_irreps, num_heads, self.gate, normalized=True))
            else:
                readouts.append(Linear(layer.irreps_out, o3.Irreps(f"{num_heads}x0e")))
        return readouts

    def read_out(self, readouts: nn.ModuleList, node_features: torch.Tensor) -> torch.Tensor:
        """The sum of every layer's readout of its own features (``node_features``: all layers', concatenated)."""
        layer_features = node_features.split([layer.irreps_out.dim for layer in self.layers], dim=1)
        return torch.stack([readout(features) for readout, features in zip(readouts, layer_features)]).sum(0)

    def forward(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, edge_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.embed(graph, edge_vectors, edge_lengths)
        features = inputs.node_feats
        layer_features = []
        for index, layer in enumerate(self.layers):
            features = self.layer_input(index, features)
            output = layer(features, inputs.node_attrs, inputs.edge_sh, inputs.edge_radial, inputs.edge_index)
            features = self.adapt(index, features, output)
            layer_features.append(features)
        node_features = torch.cat(layer_features, dim=1)
        energies = self.read_out(self.readouts, node_features)
        return self.inputs.energies(energies, inputs.node_attrs), node_features[: inputs.num_atoms]


def build_mace(config: MACEConfig) -> Potential:
    return Potential("mace", config, MACE(config), o3.Irreps(config.mlp_irreps))
