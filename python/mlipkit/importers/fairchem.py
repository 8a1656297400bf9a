"""fairchem-core GemNet-OC trainer checkpoints as mlipkit GemNet-OC models.

A checkpoint is a dict: ``config`` (the trainer's configuration; the model's
options under ``config["model"]``, or ``config["model_attributes"]`` in the
older layout), ``state_dict`` (``module.``-prefixed), optionally ``ema``
(the averaged weights fairchem predicts with), ``normalizers`` and
``elementrefs``. fairchem predicts E = rmsd_E * network + mean_E + sum of
element references, F = rmsd_F * network forces + mean_F. mlipkit folds the
rmsds into the output layers' weights and the references (plus each type's
isolated-atom network energy, see ``isolated_atoms``) into per-type shifts;
a nonzero mean (a constant per structure, not per atom) is refused.
"""

from __future__ import annotations

from typing import Any

import torch
from ase.data import chemical_symbols

from mlipkit.importers.isolated_atoms import isolated_atom_network_energies
from mlipkit.importers.unpickling import UnsupportedModel
from mlipkit.models.gemnet_oc.model import FAIRCHEM_SECOND_NAME, load_fairchem_state_dict
from mlipkit.models.potential import Potential
from mlipkit.models.registry import build_model

MODEL_NAMES = ("gemnet_oc", "GemNetOC")
#: trainer-only options in a model section, without meaning for the network
IGNORED_OPTIONS = ("name", "scale_file")
#: state-dict entries that are not among the weights fairchem averages (EMA): frozen scale factors and, unless
#: trainable, the basis offsets (and the second names of fairchem's output MLPs)
NOT_AVERAGED = (".scale_factor",)
MAYBE_AVERAGED = (".offset",)


def is_fairchem_checkpoint(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("config"), dict)
        and "model" in value["config"]
        and isinstance(value.get("state_dict"), dict)
    )


def model_options(config: dict[str, Any]) -> dict[str, Any]:
    """The model's name and options from a trainer config, in either layout."""
    model = config.get("model")
    if isinstance(model, dict):
        name, options = model.get("name"), dict(model)
    else:
        name, options = model, dict(config.get("model_attributes") or {})
    if name not in MODEL_NAMES:
        raise UnsupportedModel(f"the fairchem checkpoint holds a '{name}' model; mlipkit imports fairchem's GemNet-OC ({MODEL_NAMES[0]})")
    return {key: value for key, value in options.items() if key not in IGNORED_OPTIONS}


#: fairchem's cap of the embedding graph when its config names none (mlipkit's GemNet-OC caps nothing by default)
FAIRCHEM_MAX_NEIGHBORS = 50


def fairchem_neighbour_caps(options: dict[str, Any]) -> dict[str, Any]:
    """Every cap fairchem applies, spelled out, and fairchem's rule for the capped graph's reverse edges.

    fairchem always caps the embedding graph (50 unless given); an interaction's cap is the embedding graph's
    unless the interaction is on and its own is given, and the atom-atom graph's is at least every other. Its
    capped graph keeps the pair a < b when a is within b's cap (cap_symmetrization: lower_index).
    """
    main = options.get("max_neighbors", FAIRCHEM_MAX_NEIGHBORS)

    def own(name: str, switches: tuple[str, ...]) -> int:
        given = options.get(name)
        return given if given is not None and any(options.get(switch, False) for switch in switches) else main

    aeaint = own("max_neighbors_aeaint", ("atom_edge_interaction", "edge_atom_interaction"))
    qint = own("max_neighbors_qint", ("quad_interaction",))
    given_aint = options.get("max_neighbors_aint")
    aint = given_aint if given_aint is not None and options.get("atom_interaction", False) else max(main, aeaint, qint)
    return dict(options, max_neighbors=main, max_neighbors_aeaint=aeaint, max_neighbors_qint=qint,
                max_neighbors_aint=aint, cap_symmetrization="lower_index")


def normalizer(checkpoint: dict[str, Any], names: tuple[str, ...]) -> tuple[float, float]:
    """(mean, rmsd) of the first of ``names`` among the checkpoint's normalizers; (0, 1) without one."""
    normalizers = checkpoint.get("normalizers") or {}
    for name in names:
        if name in normalizers:
            state = normalizers[name]
            scale = state.get("rmsd", state.get("std"))
            return float(state.get("mean", 0.0)), float(scale if scale is not None else 1.0)
    return 0.0, 1.0


def averaged_weights(state_dict: dict[str, torch.Tensor], ema: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``state_dict`` with fairchem's EMA weights in place: they are listed in parameter order, without names,
    so they are paired with the state dict's trainable entries (each shared tensor once), shapes checked."""
    shadow = list(ema.get("shadow_params") or [])
    seen: set[int] = set()
    entries = []
    for name, tensor in state_dict.items():
        if name.endswith(NOT_AVERAGED) or FAIRCHEM_SECOND_NAME in name or tensor.untyped_storage().data_ptr() in seen:
            continue
        seen.add(tensor.untyped_storage().data_ptr())
        entries.append(name)
    for candidates in (entries, [name for name in entries if not name.endswith(MAYBE_AVERAGED)]):
        if len(candidates) == len(shadow) and all(state_dict[n].shape == s.shape for n, s in zip(candidates, shadow)):
            return {**state_dict, **dict(zip(candidates, shadow))}
    raise UnsupportedModel(
        f"the checkpoint's EMA holds {len(shadow)} weights that do not line up with its model's parameters; "
        "import without them (--no-ema)"
    )


def build_gemnet_oc_model(checkpoint: dict[str, Any], use_ema: bool = True, type_names: list[str] | None = None) -> Potential:
    """The mlipkit GemNet-OC equal to what fairchem's trainer predicts with ``checkpoint``, in float32."""
    options = fairchem_neighbour_caps(model_options(checkpoint["config"]))
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint["state_dict"].items()}
    if use_ema and checkpoint.get("ema"):
        state_dict = averaged_weights(state_dict, checkpoint["ema"])
    embedding = state_dict.get("atom_emb.embeddings.weight")
    if embedding is None:
        raise UnsupportedModel("the fairchem state dict has no atom_emb.embeddings.weight: not a GemNet-OC")
    num_elements = embedding.shape[0]
    if options.pop("num_elements", num_elements) != num_elements:
        raise UnsupportedModel(f"the config's num_elements differs from the embedding's {num_elements} rows")
    type_names = type_names or chemical_symbols[1 : num_elements + 1]
    energy_mean, energy_rmsd = normalizer(checkpoint, ("energy", "target"))
    forces_mean, forces_rmsd = normalizer(checkpoint, ("forces", "grad_target"))
    if energy_mean != 0.0 or forces_mean != 0.0:
        raise UnsupportedModel(
            f"the checkpoint normalises with means (energy {energy_mean}, forces {forces_mean}): a constant per structure, "
            "which a sum of atomic energies cannot hold"
        )
    direct_forces = bool(options.get("direct_forces", False))
    if not direct_forces and forces_rmsd != energy_rmsd:
        raise UnsupportedModel(
            f"the checkpoint scales energies by {energy_rmsd} and their gradients by {forces_rmsd}: "
            "its forces are not the energy's derivatives"
        )
    model = build_model("gemnet_oc", type_names=type_names, num_elements=num_elements, **options)
    try:
        load_fairchem_state_dict(model.core, state_dict)
    except ValueError as error:
        raise UnsupportedModel(str(error)) from None
    with torch.no_grad():
        model.core.out_energy.linear.weight.mul_(energy_rmsd)
        if direct_forces:
            model.core.out_forces.linear.weight.mul_(forces_rmsd)
    element_references = checkpoint.get("elementrefs") or {}
    state = element_references.get("energy") or element_references.get("target") or {}
    references = state.get("element_references", torch.zeros(119)).to(torch.float64)
    network = isolated_atom_network_energies(model, model.core.out_energy)
    numbers = [chemical_symbols.index(name) for name in type_names]
    shifts = [float(references[z]) + value for z, value in zip(numbers, network)]
    model.scale_shift.shifts.copy_(torch.tensor(shifts, dtype=torch.float64))
    model.config.per_type_energy_shifts = shifts
    return model.to(embedding.dtype).eval()
