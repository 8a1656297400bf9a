"""Atom-type embedding and the isolated-atom reference nodes."""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn

from mlipkit.nn.activations import activation


def node_attributes(atom_types: torch.Tensor, num_types: int, extra: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
    """One-hot atom types, followed by any extra per-atom input features."""
    one_hot = nn.functional.one_hot(atom_types, num_types).to(dtype)
    if extra is None:
        return one_hot
    return torch.cat([one_hot, extra.to(dtype)], dim=1)


class TypeEmbedding(nn.Module):
    """Linear map of the node attributes to scalar features, optionally followed by an activation."""

    def __init__(self, num_node_attrs: int, num_features: int, activation_name: str | None = None):
        super().__init__()
        self.linear = o3.Linear(o3.Irreps(f"{num_node_attrs}x0e"), o3.Irreps(f"{num_features}x0e"))
        self.act = activation(activation_name) if activation_name else None
        self.irreps_out = self.linear.irreps_out

    def forward(self, node_attrs: torch.Tensor) -> torch.Tensor:
        features = self.linear(node_attrs)
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
