"""Variants of the registered models (PhysicsML's ssf_*, adapter_* and mean_var_* models).

A variant is its base model (same config, same weights under the same names,
so a pre-trained base checkpoint loads into it) plus new modules: SSF and
adapters act on every layer through the message-passing ``layer_adapters``
hook; mean_var adds a second energy-shaped readout for the energy's
standard deviation.
"""

from __future__ import annotations

from typing import Callable

from e3nn import o3
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from mlipkit.models.config import PotentialConfig
from mlipkit.models.potential import Potential
from mlipkit.nn.adapter import LayerAdapters
from mlipkit.nn.feature_scale_shift import FeatureScaleShift

Builder = Callable[[PotentialConfig], Potential]


class AdapterOptions(BaseModel):
    """PhysicsML's adapter options (docs: variants.md)."""

    model_config = ConfigDict(use_attribute_docstrings=True)
    ratio_adapter_down: int = Field(10, ge=1)
    """each adapter's bottleneck keeps `mul // ratio_adapter_down` copies of every irrep"""
    initial_s: float = 0.01
    """initial weight s of both adapters of a layer (learnable)"""
    adapter_batch_statistics: bool = False
    """the batch norms normalise by each training batch (PhysicsML) instead of keeping their running statistics,
    which start as the identity; off by default: batch statistics discard the pre-trained function"""


def layer_irreps(model: Potential) -> list[tuple[o3.Irreps, o3.Irreps]]:
    """(input, output) irreps of every message-passing layer."""
    irreps_in = model.core.embedding.irreps_out
    pairs = []
    for layer in model.core.layers:
        pairs.append((irreps_in, layer.irreps_out))
        irreps_in = layer.irreps_out
    return pairs


def with_layer_adapters(name: str, build_base: Builder, make_adapter: Callable[[PotentialConfig, o3.Irreps, o3.Irreps], nn.Module]) -> Builder:
    """The base model with ``make_adapter(config, irreps_in, irreps_out)`` on every message-passing layer."""

    def build(config: PotentialConfig) -> Potential:
        model = build_base(config)
        model.core.layer_adapters = nn.ModuleList(make_adapter(config, irreps_in, irreps_out) for irreps_in, irreps_out in layer_irreps(model))
        model.model_name = name
        return model

    return build


def with_feature_scale_shift(name: str, build_base: Builder) -> Builder:
    """SSF variant: a FeatureScaleShift on every message-passing layer's output (identity at initialisation)."""
    return with_layer_adapters(name, build_base, lambda config, irreps_in, irreps_out: FeatureScaleShift(irreps_out))


def with_adapters(name: str, build_base: Builder) -> Builder:
    """Adapter variant: LayerAdapters on every message-passing layer."""
    return with_layer_adapters(
        name, build_base, lambda config, irreps_in, irreps_out: LayerAdapters(
            irreps_in, irreps_out, config.ratio_adapter_down, config.initial_s, config.adapter_batch_statistics
        )
    )


def with_energy_uncertainty(name: str, build_base: Builder) -> Builder:
    """Mean-variance variant: a second energy readout for the std (fit with gaussian_nll); forces from the mean only."""

    def build(config: PotentialConfig) -> Potential:
        model = build_base(config)
        model.energy_uncertainty_readout = model.core.build_energy_readout(1)
        model.model_name = name
        return model

    return build
