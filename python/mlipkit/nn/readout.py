"""Readouts from final node features: per-atom energy heads and extra scalar/vector outputs."""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from torch import nn

from mlipkit.nn.activations import activation
from mlipkit.nn.linear import Linear


class EnergyReadout(nn.Module):
    """features -> mlp_irreps -> one scalar per readout head (linear, as in NequIP)."""

    def __init__(self, irreps_in: o3.Irreps, mlp_irreps: o3.Irreps, num_heads: int = 1):
        super().__init__()
        self.hidden = Linear(irreps_in, mlp_irreps)
        self.out = Linear(mlp_irreps, o3.Irreps(f"{num_heads}x0e"))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(node_features))


class ScalarHead(nn.Module):
    """Per-node invariant outputs: the scalar part of the features through a one-hidden-layer MLP.

    Also MACE's non-linear energy readout; ``activation_name=None`` leaves the
    hidden layer linear. ``normalized`` scales the activation to unit second
    moment on unit-Gaussian inputs (e3nn's convention, which mace-torch's
    readout follows).
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        mlp_irreps: o3.Irreps,
        num_tasks: int,
        activation_name: str | None = "silu",
        normalized: bool = False,
    ):
        super().__init__()
        self.hidden = Linear(irreps_in, mlp_irreps)
        if activation_name is None:
            self.act = nn.Identity()
        else:
            self.act = normalize2mom(activation(activation_name)) if normalized else activation(activation_name)
        self.out = Linear(mlp_irreps, o3.Irreps(f"{num_tasks}x0e"))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.hidden(node_features)))


class VectorHead(nn.Module):
    """Per-node equivariant vectors (1o): a linear map of the l=1 odd features."""

    def __init__(self, irreps_in: o3.Irreps, num_tasks: int):
        super().__init__()
        if o3.Irrep("1o") not in {ir for _, ir in irreps_in}:
            raise ValueError(
                f"a vector output needs 1o node features, and this model's are {irreps_in}; NequIP: use "
                "max_ell >= 1 (and parity=True, or target_irreps containing 1o); MACE: hidden_irreps with 1o "
                "and num_interactions >= 2 (or keep_last_layer_irreps=True)"
            )
        self.num_tasks = num_tasks
        self.linear = Linear(irreps_in, o3.Irreps(f"{num_tasks}x1o"))

    def forward(self, node_features: torch.Tensor) -> torch.Tensor:
        # e3nn 0.6 orders 1o components as Cartesian (x, y, z)
        return self.linear(node_features).view(-1, self.num_tasks, 3)
