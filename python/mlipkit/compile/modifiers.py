"""Modifiers: named, documented transformations of a model before export or fine-tuning.

A modifier is given as ``name`` or ``name:{yaml mapping of parameters}`` (CLI),
or as ``{"name": ..., **parameters}`` (config files). Each changes the model in
place and keeps ``model.config`` in step, so a modified model saved to a
checkpoint rebuilds as modified. A modifier that does not apply to the model
raises ``ModifierError`` saying why.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, get_args

import torch
import yaml

from mlipkit.models.config import PerTypeValue
from mlipkit.models.gemnet_oc.layers import ContractionKernel
from mlipkit.models.gemnet_oc.model import GemNetOC
from mlipkit.models.potential import Potential
from mlipkit.nn.interaction import Convolution
from mlipkit.nn.symmetric_contraction import KERNELS as CONTRACTION_KERNELS
from mlipkit.nn.symmetric_contraction import SymmetricContraction


class ModifierError(ValueError):
    """A modifier that is unknown, has bad parameters or does not apply to the model."""


@dataclass(frozen=True)
class Modifier:
    name: str
    summary: str
    apply: Callable[..., None]


def _set_config(model: Potential, **changes: Any) -> None:
    model.config = model.config.model_copy(update=changes)


def enable_force_stress_output(model: Potential) -> None:
    if model.direct_forces:
        raise ModifierError(
            "enable_ForceStressOutput: the model predicts forces directly (direct_forces: true); they are not the "
            "gradient of its energy, so it has no stress or virial"
        )
    if model.do_derivatives:
        raise ModifierError("enable_ForceStressOutput: the model already outputs forces, stress and virial")
    model.do_derivatives = True
    _set_config(model, do_derivatives=True)


def disable_force_stress_output(model: Potential) -> None:
    if not (model.do_derivatives or model.direct_forces):
        raise ModifierError("disable_ForceStressOutput: the model is already energy-only")
    model.do_derivatives = model.direct_forces = model.core.direct_forces = False
    _set_config(model, do_derivatives=False)


def per_type_energy_scale_shift(
    model: Potential, shifts: PerTypeValue | None = None, scales: PerTypeValue | None = None
) -> None:
    if shifts is None and scales is None:
        raise ModifierError("per_type_energy_scale_shift needs 'shifts', 'scales' or both")
    if shifts is not None and not model.config.add_atomic_energies:
        raise ModifierError("per_type_energy_scale_shift: the model has add_atomic_energies=False, so it has no shifts")
    scale_shift = model.scale_shift
    for name, values, tensor in (("shifts", shifts, scale_shift.shifts), ("scales", scales, scale_shift.scales)):
        if values is None:
            continue
        try:
            per_type = model.config.per_type_values(values, 0.0, name)
        except ValueError as error:
            raise ModifierError(f"per_type_energy_scale_shift: {error}") from None
        with torch.no_grad():
            tensor.copy_(torch.tensor(per_type, dtype=tensor.dtype))
        _set_config(model, **{f"per_type_energy_{name}": dict(zip(model.type_names, per_type))})


SCATTER_IMPLEMENTATIONS = {"segment_sum": True, "index_add": False}
TENSOR_PRODUCT_IMPLEMENTATIONS = ("fused", "e3nn")


def set_kernels(
    model: Potential,
    scatter: str | None = None,
    tensor_product: str | None = None,
    symmetric_contraction: str | None = None,
    triplet_contraction: str | None = None,
) -> None:
    if scatter is None and tensor_product is None and symmetric_contraction is None and triplet_contraction is None:
        raise ModifierError(
            "set_kernels needs 'scatter', 'tensor_product', 'symmetric_contraction' and/or 'triplet_contraction'"
        )
    fields = type(model.config).model_fields
    if tensor_product is not None or scatter is not None:
        convolutions = [module for module in model.modules() if isinstance(module, Convolution)]
        if not convolutions or "tensor_product_kernel" not in fields:
            raise ModifierError(f"set_kernels: the '{model.model_name}' model has no switchable convolution kernels")
    if tensor_product is not None:
        if tensor_product not in TENSOR_PRODUCT_IMPLEMENTATIONS:
            raise ModifierError(
                f"set_kernels: tensor_product '{tensor_product}' is unknown; choose one of {list(TENSOR_PRODUCT_IMPLEMENTATIONS)}"
            )
        for convolution in convolutions:
            convolution.tensor_product_kernel = tensor_product
        _set_config(model, tensor_product_kernel=tensor_product)
    if scatter is not None:
        if scatter not in SCATTER_IMPLEMENTATIONS:
            raise ModifierError(f"set_kernels: scatter '{scatter}' is unknown; choose one of {list(SCATTER_IMPLEMENTATIONS)}")
        for convolution in convolutions:
            convolution.deterministic_scatter = SCATTER_IMPLEMENTATIONS[scatter]
        _set_config(model, deterministic_scatter_ops=SCATTER_IMPLEMENTATIONS[scatter])
    if symmetric_contraction is not None:
        contractions = [module for module in model.modules() if isinstance(module, SymmetricContraction)]
        if not contractions or "symmetric_contraction_kernel" not in fields:
            raise ModifierError(f"set_kernels: the '{model.model_name}' model has no symmetric contraction")
        if symmetric_contraction not in CONTRACTION_KERNELS:
            raise ModifierError(
                f"set_kernels: symmetric_contraction '{symmetric_contraction}' is unknown; "
                f"choose one of {list(CONTRACTION_KERNELS)}"
            )
        for contraction in contractions:
            contraction.kernel = symmetric_contraction
        _set_config(model, symmetric_contraction_kernel=symmetric_contraction)
    if triplet_contraction is not None:
        if not isinstance(model.core, GemNetOC):
            raise ModifierError(f"set_kernels: the '{model.model_name}' model has no triplet contractions (GemNet-OC has)")
        if triplet_contraction not in get_args(ContractionKernel):
            raise ModifierError(
                f"set_kernels: triplet_contraction '{triplet_contraction}' is unknown; "
                f"choose one of {list(get_args(ContractionKernel))}"
            )
        model.core.set_contraction_kernel(triplet_contraction)
        _set_config(model, triplet_contraction_kernel=triplet_contraction)


def symmetric_neighbour_caps(model: Potential) -> None:
    if not isinstance(model.core, GemNetOC):
        raise ModifierError(f"symmetric_neighbour_caps: the '{model.model_name}' model has no neighbour caps (GemNet-OC has)")
    if not model.core.lower_index_caps:
        raise ModifierError("symmetric_neighbour_caps: the model's capped graph already keeps a pair when either atom is "
                            "within the other's cap (or it has no max_neighbors)")
    model.core.lower_index_caps = False
    _set_config(model, cap_symmetrization="either_direction")


MODIFIERS: dict[str, Modifier] = {
    modifier.name: modifier
    for modifier in (
        Modifier(
            "enable_ForceStressOutput",
            "an energy-only model gains forces, virial, per-atom virials and stress (by autograd)",
            enable_force_stress_output,
        ),
        Modifier("disable_ForceStressOutput", "the model outputs energies only", disable_force_stress_output),
        Modifier(
            "per_type_energy_scale_shift",
            "replace per-type energy shifts and/or scales: {shifts: {Cu: -3.7}, scales: 1.2} "
            "(a value, a list in type order or a mapping by type name)",
            per_type_energy_scale_shift,
        ),
        Modifier(
            "set_kernels",
            "choose kernel implementations: {tensor_product: fused|e3nn, scatter: segment_sum|index_add, "
            "symmetric_contraction: sparse|dense, triplet_contraction: segment|padded} (scatter applies to the e3nn "
            "path; the fused convolution sums in its own fixed order; symmetric_contraction: MACE's product basis; "
            "triplet_contraction: GemNet-OC's triplet and quadruplet sums)",
            set_kernels,
        ),
        Modifier(
            "symmetric_neighbour_caps",
            "GemNet-OC with max_neighbors: keep a pair of atoms when either is within the other's cap, independent of "
            "atom order (as LAMMPS needs), instead of fairchem's rule by atom index (what imported fairchem models use)",
            symmetric_neighbour_caps,
        ),
    )
}


def parse_modifier(spec: str | Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"name"``, ``"name:{a: 1}"`` or ``{"name": "name", "a": 1}`` -> (name, parameters)."""
    if isinstance(spec, Mapping):
        parameters = dict(spec)
        name = parameters.pop("name", None)
        if not isinstance(name, str):
            raise ModifierError(f"a modifier given as a mapping needs a 'name' entry, got {dict(spec)}")
        return name, parameters
    name, _, text = spec.partition(":")
    parameters = yaml.safe_load(text) if text.strip() else {}
    if not isinstance(parameters, dict):
        raise ModifierError(f"modifier '{name}': parameters must be a mapping such as '{name}:{{key: value}}', got {text!r}")
    return name.strip(), parameters


def apply_modifiers(model: Potential, specs: Sequence[str | Mapping[str, Any]]) -> list[str]:
    """Apply modifiers in order; returns ``name`` or ``name:{compact json}`` for each, for metadata."""
    applied = []
    for spec in specs:
        name, parameters = parse_modifier(spec)
        if name not in MODIFIERS:
            raise ModifierError(f"unknown modifier '{name}'; available: {sorted(MODIFIERS)}")
        modifier = MODIFIERS[name]
        try:
            inspect.signature(modifier.apply).bind(model, **parameters)
        except TypeError as error:
            raise ModifierError(f"modifier '{name}' does not take parameters {sorted(parameters)} ({error})") from None
        modifier.apply(model, **parameters)
        applied.append(name + (":" + json.dumps(parameters, separators=(",", ":")) if parameters else ""))
    return applied
