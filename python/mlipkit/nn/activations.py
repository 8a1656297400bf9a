"""Activation functions by name, as configs spell them."""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F

from mlipkit import ops

ActivationName = Literal["silu", "swish", "tanh", "sigmoid", "softplus", "gelu", "relu"]
#: Activations that may act on odd (pseudo)scalars: only odd functions keep parity.
OddActivationName = Literal["tanh"]

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "gelu": F.gelu,
    "relu": F.relu,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation '{name}'; known: {sorted(ACTIVATIONS)}") from None


def scaled_activation(x: torch.Tensor, name: str, scale: float) -> torch.Tensor:
    """``scale * f(x)``: on the CPU one ``mlipkit::activation_derivative`` pass forward and one backward, where
    the activation and the product take two each way (and the product's input is kept); torch's own elsewhere."""
    if x.device.type == "cpu":
        return ops.activation_derivative(x, name, 0, scale)
    return activation(name)(x) * scale
