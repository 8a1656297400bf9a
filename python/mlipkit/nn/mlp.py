"""The radial MLP that turns an edge's radial embedding into tensor-product weights."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from e3nn.nn import FullyConnectedNet

from mlipkit.nn.activations import activation


def radial_mlp(
    num_inputs: int,
    hidden: Sequence[int],
    num_outputs: int,
    activation_name: str = "silu",
    variance_scale: float = 1.0,
) -> FullyConnectedNet:
    """e3nn's normalised MLP; ``variance_scale`` multiplies the variance of the initial weights."""
    mlp = FullyConnectedNet([num_inputs, *hidden, num_outputs], activation(activation_name))
    if variance_scale != 1.0:
        with torch.no_grad():
            for parameter in mlp.parameters():
                parameter.mul_(math.sqrt(variance_scale))
    return mlp
