"""The ``model.ckpt`` format: everything needed to rebuild a model exactly."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from mlipkit.models.potential import Potential
from mlipkit.models.registry import build_from_config, model_entry
from mlipkit.version import __version__

CHECKPOINT_FORMAT = "mlipkit-checkpoint"
#: Bumped when the file layout changes; files of another version are refused.
CHECKPOINT_FORMAT_VERSION = 1


def is_torchscript_archive(names: list[str]) -> bool:
    """A zip's member names are TorchScript's (code and constants beside the pickle)."""
    return any(name.endswith("/constants.pkl") or "/code/" in name for name in names)


class NotACheckpoint(ValueError):
    """The file is another kind of file (possibly another package's model, which mlip-import reads)."""


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def save_checkpoint(model: Potential, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write model name, config, type names, r_max, dtype, weights and versions to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    contents = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "mlipkit_version": __version__,
        "model_name": model.model_name,
        "config": model.config.model_dump(mode="json"),
        "type_names": model.type_names,
        "r_max": model.r_max,
        "dtype": str(model_dtype(model)).removeprefix("torch."),
        "state_dict": {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()},
        "extra": extra or {},
    }
    torch.save(contents, path)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw, validated contents of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    not_a_checkpoint = f"{path} is not an mlipkit checkpoint"
    if not zipfile.is_zipfile(path):
        raise NotACheckpoint(f"{not_a_checkpoint}: not a PyTorch archive (another kind of file, or a truncated or damaged one)")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if is_torchscript_archive(names):
        raise NotACheckpoint(f"{not_a_checkpoint}: it is a TorchScript archive (an artifact or deployed model)")
    if not any(name.endswith("/data.pkl") for name in names):
        raise NotACheckpoint(f"{not_a_checkpoint}: a zip archive that torch.save did not write (an AOTInductor package, say)")
    # torch's own messages advise loading without weights_only, which would run code from the file: never relay them
    try:
        contents = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise NotACheckpoint(
            f"{not_a_checkpoint}: it holds Python objects other than tensors and plain data, which mlipkit never loads"
        ) from None
    except Exception as error:  # torch.load raises many types for damaged archives
        raise ValueError(f"{not_a_checkpoint}: the archive is damaged ({type(error).__name__})") from None
    if not isinstance(contents, dict) or contents.get("format") != CHECKPOINT_FORMAT:
        raise NotACheckpoint(f"{path} is not an mlipkit checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    version = contents.get("format_version")
    if version != CHECKPOINT_FORMAT_VERSION:
        raise ValueError(
            f"{path} has checkpoint format version {version} (written by mlipkit "
            f"{contents.get('mlipkit_version')}); this mlipkit {__version__} reads version {CHECKPOINT_FORMAT_VERSION}"
        )
    return contents


def load_checkpoint(path: str | Path, dtype: torch.dtype | None = None) -> Potential:
    """Rebuild the exact model stored in ``path``, in its saved dtype unless ``dtype`` is given."""
    contents = read_checkpoint(path)
    entry = model_entry(contents["model_name"])
    config = entry.config_class(**{**entry.options_before_introduction, **contents["config"]})
    model = build_from_config(contents["model_name"], config, dtype or getattr(torch, contents["dtype"]))
    mismatch = f"{path}: weights do not match the '{contents['model_name']}' model its config describes"
    try:
        missing, unexpected = model.load_state_dict(contents["state_dict"], strict=False)
    except RuntimeError as error:  # tensors of other shapes
        lines = str(error).splitlines()
        first = next((line.strip() for line in lines if "size mismatch" in line), lines[0] if lines else "")
        raise ValueError(f"{mismatch} ({first} ...)") from error
    if missing or unexpected:
        raise ValueError(f"{mismatch} (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return model.eval()
