"""Model registry: name -> (config class, builder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mlipkit.models.config import PotentialConfig
from mlipkit.models.gemnet_oc.model import GemNetOCConfig, build_gemnet_oc
from mlipkit.models.mace import MACEConfig, build_mace
from mlipkit.models.nequip import NequIPConfig, build_nequip
from mlipkit.models.potential import Potential
from mlipkit.models.variants import AdapterOptions, with_adapters, with_energy_uncertainty, with_feature_scale_shift


class AdapterNequIPConfig(NequIPConfig, AdapterOptions):
    pass


class AdapterMACEConfig(MACEConfig, AdapterOptions):
    pass


@dataclass(frozen=True)
class ModelEntry:
    config_class: type[PotentialConfig]
    builder: Callable[[Any], Potential]
    #: what checkpoints written before an option existed meant by leaving it out
    options_before_introduction: dict[str, Any] = field(default_factory=dict)
    #: outputs energy_uncertainty (mean-variance models), fitted with gaussian_nll on the energy
    energy_uncertainty: bool = False


REGISTRY: dict[str, ModelEntry] = {
    "nequip": ModelEntry(NequIPConfig, build_nequip, {"scalar_last_layer": False}),
    "mace": ModelEntry(MACEConfig, build_mace),
    "gemnet_oc": ModelEntry(GemNetOCConfig, build_gemnet_oc),
    "ssf_nequip": ModelEntry(NequIPConfig, with_feature_scale_shift("ssf_nequip", build_nequip)),
    "ssf_mace": ModelEntry(MACEConfig, with_feature_scale_shift("ssf_mace", build_mace)),
    "adapter_nequip": ModelEntry(AdapterNequIPConfig, with_adapters("adapter_nequip", build_nequip)),
    "adapter_mace": ModelEntry(AdapterMACEConfig, with_adapters("adapter_mace", build_mace)),
    "mean_var_nequip": ModelEntry(NequIPConfig, with_energy_uncertainty("mean_var_nequip", build_nequip), energy_uncertainty=True),
    "mean_var_mace": ModelEntry(MACEConfig, with_energy_uncertainty("mean_var_mace", build_mace), energy_uncertainty=True),
}

#: PhysicsML names its models with a ``_model`` suffix (``ssf_nequip_model``); both spellings work.
PHYSICSML_SUFFIX = "_model"


def canonical_model_name(name: str) -> str:
    if name not in REGISTRY and name.endswith(PHYSICSML_SUFFIX) and name[: -len(PHYSICSML_SUFFIX)] in REGISTRY:
        return name[: -len(PHYSICSML_SUFFIX)]
    return name


def model_entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[canonical_model_name(name)]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; registered models: {sorted(REGISTRY)}") from None


def build_from_config(name: str, config: PotentialConfig, dtype: torch.dtype = torch.float64) -> Potential:
    """Build from a validated config; ``config.seed`` makes initial weights reproducible.

    Construction always runs in float64, so that the constants e3nn computes at
    build time (Clebsch-Gordan coefficients, normalisations) are exact, and the
    model is then cast to ``dtype``. Casting a float32 model back up with
    ``.to(torch.float64)`` keeps float32-rounded constants: build or load with
    ``dtype=torch.float64`` instead when float64 accuracy matters.
    """
    builder = model_entry(name).builder
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with torch.random.fork_rng(devices=[], enabled=config.seed is not None):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            model = builder(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.to(dtype)


def build_model(name: str, dtype: torch.dtype = torch.float64, **options: Any) -> Potential:
    """Build a registered model: ``build_model("nequip", type_names=["Cu"], r_max=5.0, num_layers=3)``."""
    return build_from_config(name, model_entry(name).config_class(**options), dtype)
