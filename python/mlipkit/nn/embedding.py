"""Atom-type embedding and the isolated-atom reference nodes."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph
from mlipkit.nn.activations import activation
from mlipkit.nn.linear import Linear


def node_attributes(atom_types: torch.Tensor, num_types: int, extra: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """One-hot atom types, followed by any extra per-atom input features."""
    one_hot = nn.functional.one_hot(atom_types, num_types).to(dtype)
    if extra is None:
        return one_hot
    return torch.cat([one_hot, extra.to(dtype)], dim=1)


class TypeEmbedding(nn.Module):
    """Linear map of the node attributes to scalar features (plus any extra terms, such as the total charge's),
    optionally followed by an activation."""

    def __init__(self, num_node_attrs: int, num_features: int, activation_name: str | None = None):
        super().__init__()
        self.linear = Linear(o3.Irreps(f"{num_node_attrs}x0e"), o3.Irreps(f"{num_features}x0e"))
        self.act = activation(activation_name) if activation_name else None
        self.irreps_out = self.linear.irreps_out

    def forward(self, node_attrs: torch.Tensor, extra_terms: torch.Tensor | None = None) -> torch.Tensor:
        features = self.linear(node_attrs)
        if extra_terms is not None:
            features = features + extra_terms
        return self.act(features) if self.act is not None else features


def with_reference_nodes(atom_types: torch.Tensor, num_types: int) -> torch.Tensor:
    """Append one edge-less node per type.

    The network's output on those nodes is what it gives an isolated atom;
    ``subtract_reference`` removes it, so that an atom without neighbours gets
    exactly its per-type energy shift.
    """
    return torch.cat([atom_types, torch.arange(num_types, device=atom_types.device)])


def subtract_reference(values: torch.Tensor, type_one_hot: torch.Tensor) -> torch.Tensor:
    """Per-node values minus those of the reference node of the same type.

    ``type_one_hot`` [N, T] picks the reference rows by an (exact) matrix
    product rather than an index: its derivative is then a matrix product, not
    a scatter into T rows, which Inductor's CPU code generation mishandles for
    a single type.
    """
    num_nodes = type_one_hot.shape[0]
    return values[:num_nodes] - type_one_hot @ values[num_nodes:]


def graph_field(graph: AtomicGraph, name: str, width: int, rows: int) -> torch.Tensor:
    """An extra input field the model was configured to read, checked for its shape."""
    if name not in graph:
        raise ValueError(f"the model was configured with {width} extra input features and needs graph field '{name}'")
    value = graph[name]
    if tuple(value.shape) != (rows, width):
        raise ValueError(f"graph field '{name}' has shape {tuple(value.shape)}, expected ({rows}, {width})")
    return value


class GraphInputs(nn.Module):
    """Node attributes (with reference nodes appended) and edge radial features from a graph.

    Node attributes are the one-hot types followed by ``num_extra_node_feats``
    columns of the graph's node_attrs (zero on the reference nodes); the edge
    features are the radial embedding followed by ``num_edge_feats`` columns
    of the graph's edge_attrs.
    """

    def __init__(self, num_types: int, num_node_feats: int | None, num_edge_feats: int):
        super().__init__()
        self.num_types = num_types
        self.num_extra_node_feats = (num_node_feats or num_types) - num_types
        self.num_edge_feats = num_edge_feats

    @property
    def num_node_attrs(self) -> int:
        return self.num_types + self.num_extra_node_feats

    @property
    def extra_input_fields(self) -> list[str]:
        """Graph fields beyond types and geometry that this configuration reads."""
        used = ((keys.NODE_ATTRS, self.num_extra_node_feats), (keys.EDGE_ATTRS, self.num_edge_feats))
        return [name for name, width in used if width]

    def node_attributes(self, graph: AtomicGraph, dtype: torch.dtype) -> torch.Tensor:
        atom_types = graph[keys.ATOM_TYPES]
        extra_node_feats = None
        if self.num_extra_node_feats:
            extra_node_feats = graph_field(graph, keys.NODE_ATTRS, self.num_extra_node_feats, atom_types.shape[0])
            extra_node_feats = nn.functional.pad(extra_node_feats, (0, 0, 0, self.num_types))
        return node_attributes(with_reference_nodes(atom_types, self.num_types), self.num_types, extra_node_feats, dtype)

    def edge_features(self, graph: AtomicGraph, edge_radial: torch.Tensor) -> torch.Tensor:
        if not self.num_edge_feats:
            return edge_radial
        edge_attrs = graph_field(graph, keys.EDGE_ATTRS, self.num_edge_feats, graph[keys.EDGE_INDEX].shape[1])
        return torch.cat([edge_radial, edge_attrs.to(edge_radial.dtype)], dim=1)

    def energies(self, node_values: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """Per-atom values minus those of each atom type's reference node."""
        return subtract_reference(node_values, node_attrs[: node_attrs.shape[0] - self.num_types, : self.num_types])
