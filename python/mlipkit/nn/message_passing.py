"""The part of a message-passing network's forward pass that NequIP and MACE share."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from mlipkit import ops
from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, batch_layout, graph_total_charges
from mlipkit.nn.electrostatics import TotalChargeEmbedding


class Embedded(NamedTuple):
    """A graph's inputs to the first layer; rows past num_atoms are the reference nodes."""

    num_atoms: int
    edge_index: torch.Tensor
    node_attrs: torch.Tensor
    node_feats: torch.Tensor
    edge_sh: torch.Tensor
    edge_radial: torch.Tensor


class MessagePassingNetwork(nn.Module):
    """Base of the NequIP and MACE cores.

    Subclasses build ``inputs`` (a GraphInputs), ``radial_embedding``,
    ``spherical_harmonics``, ``embedding`` (node attributes -> first features)
    and ``layers``, and give their energy readout as ``build_energy_readout``
    (a new one, for heads that share the readout's form such as the variance of
    mean-variance models) and ``read_out`` (a readout applied to the node
    features the core returns); ``energy_readout_name`` names the attribute
    holding the model's own. Fine-tuning variants add ``layer_adapters``:
    one module per layer mapping (layer input, layer output) to the features
    the rest of the network sees (SSF, adapters).
    """

    energy_readout_name = "readout"
    #: set on the copy a LAMMPS artifact is compiled from: each layer but the first starts with a halo exchange
    halo_exchange = False

    def __init__(self):
        super().__init__()
        self.layer_adapters: nn.ModuleList | None = None
        self.total_charge_embedding: TotalChargeEmbedding | None = None

    def build_total_charge_embedding(self, kind: str | None, available_total_charges: list[float] | None, width: int) -> None:
        """mlip's use_total_charge_embedding: the first features also depend on the graph's total charge."""
        if kind:
            self.total_charge_embedding = TotalChargeEmbedding(kind, available_total_charges, width)

    def adapt(self, index: int, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        if self.layer_adapters is None:
            return layer_output
        return self.layer_adapters[index](layer_input, layer_output)

    @property
    def num_message_passing_layers(self) -> int:
        return len(self.layers)

    @property
    def halo_exchange_width(self) -> int:
        """The widest node features a halo exchange carries: the inputs of layers after the first."""
        return max((layer.irreps_out.dim for layer in self.layers[:-1]), default=0)

    def layer_input(self, index: int, features: torch.Tensor) -> torch.Tensor:
        """Layer ``index``'s node features. With ``halo_exchange`` (a LAMMPS rank that updates only its own atoms)
        the ghost atoms' rows first take their owners' values from the previous layer."""
        if self.halo_exchange and index > 0:
            return ops.halo_exchange(features)
        return features

    @property
    def extra_input_fields(self) -> list[str]:
        return self.inputs.extra_input_fields

    def embed(self, graph: AtomicGraph, edge_vectors: torch.Tensor, edge_lengths: torch.Tensor) -> Embedded:
        node_attrs = self.inputs.node_attributes(graph, edge_vectors.dtype)
        charge_terms = None
        if self.total_charge_embedding is not None:
            batch, num_graphs = batch_layout(graph)
            total_charge = graph_total_charges(graph, num_graphs, edge_vectors.dtype)
            charge_terms = self.total_charge_embedding(total_charge, batch, self.inputs.num_types)
        return Embedded(
            num_atoms=graph[keys.ATOM_TYPES].shape[0],
            edge_index=graph[keys.EDGE_INDEX],
            node_attrs=node_attrs,
            node_feats=self.embedding(node_attrs, charge_terms),
            edge_sh=self.spherical_harmonics(edge_vectors),
            edge_radial=self.inputs.edge_features(graph, self.radial_embedding(edge_lengths)),
        )
