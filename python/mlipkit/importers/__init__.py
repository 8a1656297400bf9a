"""Models trained with other packages, as ordinary mlipkit models and checkpoints (``mlip-import``).

Every format is read with the recording unpickler (``importers.unpickling``):
nothing in a file is imported or called, and the peer package need not be
installed. The format is recognised from what the file holds.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mlipkit.importers import fairchem, mace, nequip
from mlipkit.importers.unpickling import PickledObject, UnsupportedModel, load_records
from mlipkit.models.checkpoint import CHECKPOINT_FORMAT, model_dtype, save_checkpoint
from mlipkit.models.potential import Potential

#: a state dict is mace-torch's when it has these names
MACE_STATE_DICT_NAMES = ("atomic_numbers", "atomic_energies_fn.atomic_energies", "products.0.linear.weight")


@dataclass
class ImportedModel:
    """A model rebuilt from another package's file, and where it came from."""

    model: Potential
    #: stored in the checkpoint's extra["imported_from"]: format, source_class, file, sha256, source_version
    imported_from: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What ``mlip-import`` reports."""
        model = self.model
        return {
            "format": self.imported_from["format"],
            "model": f"{self.imported_from['source_class']} -> mlipkit {model.model_name}",
            "elements": " ".join(model.type_names),
            "parameters": f"{sum(p.numel() for p in model.parameters()):,}",
            "cutoff": f"{model.r_max:g} A",
            "dtype": str(model_dtype(model)).removeprefix("torch."),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_mace_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and all(name in value for name in MACE_STATE_DICT_NAMES)


def read_foreign_model(
    path: str | Path,
    run_arguments: str | Path | None = None,
    use_ema: bool = True,
    type_names: list[str] | None = None,
) -> ImportedModel:
    """The mlipkit model equal to the model in ``path``: a mace-torch model file or state-dict checkpoint, a
    nequip (0.7 to 0.19) Lightning checkpoint, or a fairchem GemNet-OC trainer checkpoint.

    ``run_arguments``: for a mace-torch state-dict checkpoint, the YAML (or
    JSON) of mace_run_train arguments it was trained with. ``use_ema``: a
    fairchem checkpoint's averaged weights (what fairchem predicts with)
    rather than its last ones. ``type_names``: a fairchem model's elements
    (default: every element of its embedding).
    """
    path = Path(path)
    package = path.is_file() and nequip.is_nequip_package(path)
    records = nequip.read_package(path) if package else load_records(path)
    if isinstance(records, dict) and records.get("format") == CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is already an mlipkit checkpoint: load or compile it as it is")
    provenance: dict[str, Any] = {"file": path.name, "sha256": file_sha256(path)}
    try:
        if package or nequip.is_nequip_checkpoint(records):
            model = nequip.build_nequip_model(records)
            averaged = any(name.startswith("ema.ema_weight_") for name in records["state_dict"])
            provenance.update(
                format="nequip package" if package else "nequip checkpoint",
                source_class=records["hyper_parameters"]["model"].get("_target_", "").rsplit(".", 1)[-1],
                source_version=f"nequip {nequip.nequip_version(records)}",
                weights="EMA" if averaged else ("packaged" if package else "last"),
            )
        elif fairchem.is_fairchem_checkpoint(records):
            model = fairchem.build_gemnet_oc_model(records, use_ema, type_names)
            commit = (records["config"].get("cmd") or {}).get("commit")
            provenance.update(
                format="fairchem checkpoint", source_class="GemNetOC",
                source_version=f"commit {commit}" if commit else "not recorded (the checkpoint's config names no commit)",
                weights="EMA" if use_ema and records.get("ema") else "last",
            )
        else:
            model = mace.build_mace_model(describe_mace(records, path, run_arguments, provenance))
    except UnsupportedModel as error:
        raise UnsupportedModel(f"{path}: {error}") from None
    return ImportedModel(model, provenance)


def describe_mace(records: Any, path: Path, run_arguments: str | Path | None, provenance: dict[str, Any]) -> mace.MaceModel:
    """The mace-torch model a file holds (its format noted in ``provenance``)."""
    if isinstance(records, PickledObject) and records.global_name.startswith("mace."):
        description = mace.describe_model_file(records)
        provenance.update(format="mace-torch model file", source_class=description.model_class,
                          source_version="not recorded (mace-torch model files do not store it)")
        return description
    if is_mace_state_dict(records) or isinstance(records, dict) and is_mace_state_dict(records.get("model")):
        if run_arguments is None:
            raise ValueError(
                f"{path}: a mace-torch state-dict checkpoint holds weights only; give the mace_run_train arguments it "
                "was trained with (--run-arguments config.yaml)"
            )
        state = records if is_mace_state_dict(records) else records["model"]
        description = mace.describe_state_dict(state, mace.read_run_arguments(run_arguments), str(run_arguments))
        provenance.update(format="mace-torch state-dict checkpoint", source_class=description.model_class,
                          source_version="not recorded (mace_run_train checkpoints do not store it)",
                          run_arguments=Path(run_arguments).name)
        return description
    raise ValueError(f"{path}: {describe_contents(records)}, not a model file mlipkit imports")


def describe_contents(records: Any) -> str:
    """A few words on what an unrecognised file holds."""
    if isinstance(records, PickledObject):
        return f"the file holds a '{records.global_name}'"
    if isinstance(records, dict):
        return f"the file holds a dictionary with keys {sorted(map(str, records))[:8]}"
    if isinstance(records, torch.Tensor):
        return "the file holds a single tensor"
    return f"the file holds a {type(records).__name__}"


def import_model(path: str | Path, **options: Any) -> Potential:
    """An mlipkit model equal to another package's trained model (options: see ``read_foreign_model``)."""
    return read_foreign_model(path, **options).model


def import_checkpoint(path: str | Path, output: str | Path, **options: Any) -> ImportedModel:
    """Import ``path`` (options: see ``read_foreign_model``) and write it as an mlipkit checkpoint that records
    where it came from."""
    imported = read_foreign_model(path, **options)
    save_checkpoint(imported.model, output, extra={"imported_from": imported.imported_from})
    return imported
