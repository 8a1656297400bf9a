"""The energy standard deviation of mean-variance models (PhysicsML's mean_var_* models).

A second readout, of the same form as the energy's, gives every atom a term
u_i (times its type's energy scale); a graph's std is |sum_i u_i| / N. The
absolute value comes after the sum, so the terms are signed and callers that
split a graph (LAMMPS ranks) sum their atoms' terms first.
"""

from __future__ import annotations

import torch

from mlipkit.data import keys
from mlipkit.nn.scatter import sum_into_segments


def energy_uncertainty(node_terms: torch.Tensor, graph: dict[str, torch.Tensor], batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-graph std from per-atom terms, over the counted atoms (see graph_energies)."""
    counted = torch.ones_like(node_terms)
    if keys.NODE_ENERGY_MASK in graph:
        counted = graph[keys.NODE_ENERGY_MASK].to(node_terms.dtype)
    total = sum_into_segments(node_terms * counted, batch, num_graphs)
    return total.abs() / sum_into_segments(counted, batch, num_graphs)
