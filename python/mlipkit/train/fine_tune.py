"""Fine-tuning: a pre-trained checkpoint's weights into a (variant) model, and which parameters stay frozen."""

from __future__ import annotations

from pathlib import Path

import torch

from mlipkit.models.potential import Potential
from mlipkit.train.config import ConfigError, FreezeSpec


def fine_tuned_modules(model: Potential) -> tuple[str, ...]:
    """Parameter-name prefixes that ``freeze: backbone`` leaves trainable: adapters, readouts, extra heads."""
    return ("core.layer_adapters.", f"core.{model.core.energy_readout_name}.", "heads.", "energy_uncertainty_readout.")


def frozen_parameter_names(model: Potential, freeze: FreezeSpec) -> set[str]:
    names = [name for name, _ in model.named_parameters()]
    if freeze == "none":
        return set()
    if freeze == "backbone":
        return {name for name in names if not name.startswith(fine_tuned_modules(model))}
    frozen = set()
    for prefix in freeze:
        matched = {name for name in names if name == prefix or name.startswith(prefix.rstrip(".") + ".")}
        if not matched:
            modules = sorted({".".join(name.split(".")[:2]) for name in names})
            raise ConfigError(f"fine_tune freeze: '{prefix}' names no parameter of this model; its modules are {modules}")
        frozen |= matched
    return frozen


def load_pretrained(
    model: Potential, contents: dict, modules_to_match: dict[str, str], source: Path, keep: set[str] = frozenset()
) -> list[str]:
    """Copy every checkpoint weight whose (renamed) name the model has, except those in ``keep``; returns the
    model's names it did not get.

    ``modules_to_match`` maps a prefix in the model to the prefix it has in the checkpoint.
    """
    weights = dict(contents["state_dict"])
    for new, old in modules_to_match.items():
        renamed = {name: tensor for name, tensor in weights.items() if name.startswith(old)}
        if not renamed:
            raise ConfigError(f"fine_tune modules_to_match: {source} has no weights under '{old}'")
        for name, tensor in renamed.items():
            weights[new + name[len(old):]] = tensor
    state = model.state_dict()
    loaded = {}
    for name, tensor in weights.items():
        if name not in state or name in keep:
            continue
        if tuple(tensor.shape) != tuple(state[name].shape):
            raise ConfigError(
                f"fine_tune: weight '{name}' has shape {tuple(tensor.shape)} in {source} and {tuple(state[name].shape)} in "
                "this model; give the model section only options that keep the pre-trained layers' sizes"
            )
        loaded[name] = tensor
    if not loaded:
        raise ConfigError(f"fine_tune: no weight of {source} matches a weight of model '{model.model_name}'")
    with torch.no_grad():
        for name, tensor in loaded.items():
            state[name].copy_(tensor)
    return sorted(set(state) - set(loaded))
