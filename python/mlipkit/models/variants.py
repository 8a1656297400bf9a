"""Variants of the registered models for fine-tuning (PhysicsML's ssf_* models).

A variant is its base model (same config, same weights under the same names,
so a pre-trained base checkpoint loads into it) plus modules that the base
network's ``layer_adapters`` hook applies to every layer's output.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from mlipkit.models.config import PotentialConfig
from mlipkit.models.potential import Potential
from mlipkit.nn.feature_scale_shift import FeatureScaleShift


def with_feature_scale_shift(name: str, build_base: Callable[[PotentialConfig], Potential]) -> Callable[[PotentialConfig], Potential]:
    """SSF variant: a FeatureScaleShift on every message-passing layer's output (identity at initialisation)."""

    def build(config: PotentialConfig) -> Potential:
        model = build_base(config)
        model.core.layer_adapters = nn.ModuleList(FeatureScaleShift(layer.irreps_out) for layer in model.core.layers)
        model.model_name = name
        return model

    return build
