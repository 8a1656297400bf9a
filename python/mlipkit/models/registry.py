"""Model registry: name -> (config class, builder)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from mlipkit.models.config import PotentialConfig
from mlipkit.models.nequip import NequIPConfig, build_nequip
from mlipkit.models.potential import Potential


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[PotentialConfig]
    builder: Callable[[Any], Potential]


REGISTRY: dict[str, ModelEntry] = {
    "nequip": ModelEntry(NequIPConfig, build_nequip),
}


def model_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; registered models: {sorted(REGISTRY)}") from None


def build_from_config(name: str, config: PotentialConfig) -> Potential:
    """Build from a validated config; ``config.seed`` makes initial weights reproducible."""
    builder = model_entry(name).builder
    if config.seed is None:
        return builder(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return builder(config)


def build_model(name: str, **options: Any) -> Potential:
    """Build a registered model: ``build_model("nequip", type_names=["Cu"], r_max=5.0, num_layers=3)``."""
    return build_from_config(name, model_entry(name).config_class(**options))
