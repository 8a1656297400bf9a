"""NequIP (Batzner et al., Nat. Commun. 2022): gated equivariant convolutions.

Option spellings (canonical name <- also accepted):

=========================  =====================================  ==========
canonical (PhysicsML)      mlip / nequip spelling                 default
=========================  =====================================  ==========
num_layers                 num_layers                             4
max_ell                    l_max                                  2
parity                     parity                                 True
num_features               num_features (one, or one per l)       32
type_embed_num_features    type_embed_num_features                num_features of 0e
target_irreps              (mlip) hidden node irreps, overrides   None
                           num_features/parity
scalar_last_layer          (nequip: always, last layer 0e only)   auto
mlp_irreps                 (nequip conv_to_output_hidden)         "16x0e"
num_bessel                 num_rbf (nequip num_basis)             8
bessel_basis_trainable     (nequip BesselBasis_trainable)         True
num_polynomial_cutoff      (nequip PolynomialCutoff_p)            6
radial_envelope            radial_envelope                        polynomial
radial_mlp_hidden          (nequip invariant_layers x neurons)    [64, 64]
self_connection            (nequip use_sc)                        True
resnet                     use_residual_connection                True
first_layer_self_connection  (nequip >= 0.7: false)               True
type_embedding_self_connection  (nequip >= 0.7: true)             False
readout_mlp_hidden_layers_depth  (nequip >= 0.7: 0)              None
readout_mlp_hidden_layers_width  readout_mlp_hidden_layers_width   0e width
readout_mlp_nonlinearity   readout_mlp_nonlinearity               silu
avg_num_neighbours         avg_num_neighbors                      None
num_node_feats / num_species  width of the one-hot type input     #types
do_derivatives             compute_forces                         True
per_type_energy_shifts     scaling_mean (one value)               0
per_type_energy_scales     scaling_std (one value)                1
=========================  =====================================  ==========

nequip 0.7 and later (``NequIPGNNModel``) differ from nequip 0.6, whose
layout mlipkit's defaults follow, in four ways, each an option here: the
type embedding has its own width (``type_embed_num_features``); the
self-connections mix features by the learned type embedding instead of the
one-hot type (``type_embedding_self_connection``); the first layer has no
self-connection and no residual, so that an isolated atom's network energy
is zero (``first_layer_self_connection: false``); and the energy readout is
one linear map of the last layer's scalars, or an MLP
(``readout_mlp_hidden_layers_depth`` 0 or 1) rather than two linear maps
through ``mlp_irreps``. nequip >= 0.7's ``parity: false`` (features of
natural parity only, 0e + 1o + 2e ...) is ``target_irreps`` here; its
radial MLP (``radial_mlp_depth`` x ``radial_mlp_width``) is
``radial_mlp_hidden``. ``mlip-import`` reads nequip checkpoints into these
options (``importers/nequip.py``).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from e3nn import o3
from pydantic import Field, field_validator, model_validator
from torch import nn

from mlipkit.data.graph import AtomicGraph
from mlipkit.models.config import MessagePassingConfig, irreps_option
from mlipkit.models.potential import Potential
from mlipkit.nn.activations import ActivationName, OddActivationName
from mlipkit.nn.embedding import GraphInputs, TypeEmbedding
from mlipkit.nn.interaction import GatedInteraction
from mlipkit.nn.message_passing import MessagePassingNetwork
from mlipkit.nn.radial import EnvelopeName, RadialEmbedding
from mlipkit.nn.linear import Linear
from mlipkit.nn.readout import EnergyReadout, ScalarHead


class NequIPConfig(MessagePassingConfig):
    SPELLINGS: ClassVar[dict[str, tuple[str, ...]]] = {"resnet": ("use_residual_connection",)}

    num_layers: int = Field(4, ge=1)
    """interaction layers"""
    parity: bool = True
    """features of both parities (O(3)); False: SO(3) only"""
    num_features: int | list[int] = 32
    """multiplicity of each hidden irrep, or one per l (`[32, 16, 8]`)"""
    type_embed_num_features: int | None = Field(None, gt=0)
    """width of the learned type embedding, the first layer's input (default: the 0e multiplicity)"""
    target_irreps: str | None = None
    """hidden irreps string; overrides num_features and parity"""
    scalar_last_layer: bool | None = None
    """the last layer computes only the even scalars the energy readout reads (3 of 30 tensor-product paths at the
    defaults, as nequip does); None: yes unless a `y_node_vector`/`y_graph_vector` head needs its l > 0 features"""
    radial_envelope: EnvelopeName = "polynomial"
    """`polynomial` or `soft` (a C∞ bump)"""
    radial_mlp_variance_scale: float = Field(1.0, gt=0.0)
    """multiplies the variance of the radial MLP's initial weights"""
    self_connection: bool = True
    """self-interaction tensor product with the type one-hot"""
    resnet: bool = True
    """residual update where the irreps allow"""
    first_layer_self_connection: bool = True
    """False: the first layer has no self-connection and no residual (nequip >= 0.7)"""
    type_embedding_self_connection: bool = False
    """the self-connections contract with the learned type embedding instead of the one-hot type (nequip >= 0.7)"""
    readout_mlp_hidden_layers_depth: int | None = Field(None, ge=0, le=1)
    """None: two linear maps through `mlp_irreps` (nequip 0.6); 0: one linear map; 1: one hidden layer (nequip >= 0.7)"""
    readout_mlp_hidden_layers_width: int | None = Field(None, gt=0)
    """width of that hidden layer (default: the 0e multiplicity)"""
    readout_mlp_nonlinearity: ActivationName | None = "silu"
    """activation of that hidden layer"""
    avg_r_min: float | None = Field(None, gt=0.0)
    """the radial embedding is rescaled to unit second moment on [avg_r_min, r_max]"""
    embed_activation: ActivationName | None = None
    """activation after the type embedding"""
    gate_nonlinearities: dict[str, str] = Field(default_factory=lambda: {"e": "silu", "o": "tanh"})
    """activations of the even (`e`) and odd (`o`) scalars and gates"""

    @field_validator("target_irreps")
    @classmethod
    def _valid_target_irreps(cls, text: str | None) -> str | None:
        if text is not None and o3.Irrep("0e") not in {ir for _, ir in irreps_option(text, "target_irreps")}:
            raise ValueError(f"target_irreps must contain even scalars (0e) for the energy readout, got {text!r}")
        return text

    @field_validator("num_features")
    @classmethod
    def _positive_features(cls, value: int | list[int]) -> int | list[int]:
        counts = [value] if isinstance(value, int) else value
        if not counts or any(count <= 0 for count in counts):
            raise ValueError(f"num_features must be positive (one number, or one per l), got {value}")
        return value

    @field_validator("gate_nonlinearities")
    @classmethod
    def _valid_gates(cls, gates: dict[str, str]) -> dict[str, str]:
        if set(gates) != {"e", "o"}:
            raise ValueError(f"gate_nonlinearities needs exactly the keys 'e' and 'o', got {sorted(gates)}")
        even, odd = ActivationName.__args__, OddActivationName.__args__
        if gates["e"] not in even:
            raise ValueError(f"gate_nonlinearities['e'] = {gates['e']!r} is not one of {list(even)}")
        if gates["o"] not in odd:
            raise ValueError(f"gate_nonlinearities['o'] = {gates['o']!r} must be an odd function, one of {list(odd)}")
        return gates

    @model_validator(mode="after")
    def _check_avg_r_min(self) -> "NequIPConfig":
        if self.avg_r_min is not None and self.avg_r_min >= self.r_max:
            raise ValueError(f"avg_r_min={self.avg_r_min} must be smaller than r_max={self.r_max}")
        return self

    @model_validator(mode="after")
    def _resolve_scalar_last_layer(self) -> "NequIPConfig":
        """Stored explicitly, so a checkpoint rebuilds the same layers whatever the default becomes."""
        vector_heads = self.y_node_vector is not None or self.y_graph_vector is not None
        if self.scalar_last_layer is None:
            self.scalar_last_layer = not vector_heads
        elif self.scalar_last_layer and vector_heads:
            raise ValueError(
                "scalar_last_layer=True leaves no l=1 features for the y_node_vector/y_graph_vector head; "
                "set scalar_last_layer to false or leave it unset"
            )
        return self

    @model_validator(mode="after")
    def _check_features_per_l(self) -> "NequIPConfig":
        if isinstance(self.num_features, list) and len(self.num_features) != self.max_ell + 1:
            raise ValueError(f"num_features lists {len(self.num_features)} multiplicities; give one per l = 0..{self.max_ell}")
        return self

    @property
    def features_per_l(self) -> list[int]:
        return [self.num_features] * (self.max_ell + 1) if isinstance(self.num_features, int) else list(self.num_features)

    @property
    def hidden_irreps(self) -> o3.Irreps:
        if self.target_irreps is not None:
            return o3.Irreps(self.target_irreps)
        parities = (1, -1) if self.parity else (1,)
        return o3.Irreps([(self.features_per_l[l], (l, p)) for l in range(self.max_ell + 1) for p in parities])

    @property
    def embedding_width(self) -> int:
        return self.type_embed_num_features or self.hidden_irreps.count(o3.Irrep("0e"))


class NequIP(MessagePassingNetwork):
    """The NequIP network: type embedding, gated interaction layers, linear energy readout."""

    def __init__(self, config: NequIPConfig):
        super().__init__()
        self.inputs = GraphInputs(len(config.type_names), config.num_node_feats, config.num_edge_feats)
        num_node_attrs = self.inputs.num_node_attrs
        irreps_node_attrs = o3.Irreps(f"{num_node_attrs}x0e")
        irreps_sh = o3.Irreps.spherical_harmonics(config.max_ell, p=-1 if config.parity else 1)
        self.spherical_harmonics = o3.SphericalHarmonics(irreps_sh, normalize=True, normalization="component")
        self.radial_embedding = RadialEmbedding(
            config.r_max,
            config.num_bessel,
            config.bessel_basis_trainable,
            config.radial_envelope,
            config.num_polynomial_cutoff,
            config.avg_r_min,
        )
        self.embedding = TypeEmbedding(num_node_attrs, config.embedding_width, config.embed_activation)
        self.build_total_charge_embedding(config.charge_embedding, config.available_total_charges, config.embedding_width)
        irreps = self.embedding.irreps_out
        #: the self-connections' attributes: the one-hot types, or (nequip >= 0.7) the type embedding
        self.type_embedding_attributes = config.type_embedding_self_connection
        irreps_self_connection = irreps if config.type_embedding_self_connection else irreps_node_attrs
        self.layers = nn.ModuleList()
        for index in range(config.num_layers):
            hidden_irreps = config.hidden_irreps
            if config.scalar_last_layer and index == config.num_layers - 1:
                hidden_irreps = o3.Irreps([(mul, ir) for mul, ir in hidden_irreps if ir == o3.Irrep("0e")])
            plain_first_layer = index == 0 and not config.first_layer_self_connection
            layer = GatedInteraction(
                irreps,
                hidden_irreps,
                irreps_sh,
                irreps_self_connection,
                config.gate_nonlinearities,
                config.resnet and not plain_first_layer,
                num_radial=config.num_bessel + config.num_edge_feats,
                radial_hidden=config.radial_mlp_hidden,
                radial_activation=config.radial_mlp_activation,
                radial_variance_scale=config.radial_mlp_variance_scale,
                avg_num_neighbours=config.avg_num_neighbours,
                self_connection=config.self_connection and not plain_first_layer,
                deterministic_scatter=config.deterministic_scatter_ops,
                tensor_product_kernel=config.tensor_product_kernel,
            )
            self.layers.append(layer)
            irreps = layer.irreps_out
        self.feature_irreps = irreps
        self.mlp_irreps = o3.Irreps(config.mlp_irreps)
        self.readout_depth = config.readout_mlp_hidden_layers_depth
        self.readout_width = config.readout_mlp_hidden_layers_width or self.feature_irreps.count(o3.Irrep("0e"))
        self.readout_activation = config.readout_mlp_nonlinearity
        self.readout = self.build_energy_readout(config.num_readout_heads)

    def build_energy_readout(self, num_heads: int) -> nn.Module:
        """Two linear maps through mlp_irreps (nequip 0.6), or nequip >= 0.7's: linear, or one hidden layer."""
        heads = o3.Irreps(f"{num_heads}x0e")
        if self.readout_depth is None:
            return EnergyReadout(self.feature_irreps, self.mlp_irreps, num_heads)
        if self.readout_depth == 0:
            return Linear(self.feature_irreps, heads)
        return ScalarHead(self.feature_irreps, o3.Irreps(f"{self.readout_width}x0e"), num_heads, self.readout_activation)

    def read_out(self, readout: EnergyReadout, node_features: torch.Tensor) -> torch.Tensor:
        return readout(node_features)

    def forward(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, edge_lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = self.embed(graph, edge_vectors, edge_lengths)
        features = inputs.node_feats
        attributes = inputs.node_feats if self.type_embedding_attributes else inputs.node_attrs
        for index, layer in enumerate(self.layers):
            features = self.layer_input(index, features)
            output = layer(features, attributes, inputs.edge_sh, inputs.edge_radial, inputs.edge_index)
            features = self.adapt(index, features, output)
        return self.inputs.energies(self.read_out(self.readout, features), inputs.node_attrs), features[: inputs.num_atoms]


def build_nequip(config: NequIPConfig) -> Potential:
    return Potential("nequip", config, NequIP(config), o3.Irreps(config.mlp_irreps))
