"""Activation functions by name, as configs spell them."""

from __future__ import annotations

from typing import Callable, Literal

import torch
import torch.nn.functional as F

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
