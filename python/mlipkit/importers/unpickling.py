"""Reading other packages' pickled model files without running anything from them.

A ``torch.save`` of a whole module (mace-torch's ``.model`` files) is a pickle
that names the classes to rebuild; ordinary unpickling imports and calls them,
so a crafted file runs whatever it names. Here every class of the packages a
model file may legitimately name becomes an inert ``PickledObject`` that only
records its arguments and state; tensors are rebuilt by torch's own
weights-only rebuild functions; any other global is refused, by name, before
anything is called.
"""

from __future__ import annotations

import io
import pickle
import types
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import _weights_only_unpickler

from mlipkit.models.checkpoint import is_torchscript_archive

#: Packages whose classes and functions a model file may name; they become inert records.
RECORDED_PACKAGES = (
    "mace.",
    "e3nn.",
    "opt_einsum_fx.",
    "cuequivariance.",
    "cuequivariance_torch.",
    "torch.nn.modules.",
    "torch.nn.functional.",
    "torch.fx.",
    "nequip.",
    "fairchem.",
)
#: Single torch functions a model file names as activations (torch.tanh pickles as an attribute of the
#: functions' class, read with getattr).
RECORDED_GLOBALS = {"torch.tanh", "torch.sigmoid", "torch.abs", "torch.nn.functional.silu", "torch._C._VariableFunctionsClass"}
#: Containers that build data and nothing else (protocol-2 files name them under ``__builtin__``).
DATA_BUILTINS = {"set": set, "frozenset": frozenset, "slice": slice, "complex": complex, "bytearray": bytearray}


class FileHoldsCode(ValueError):
    """The file names a global outside what a model file may contain: loading it would run code."""


class UnsupportedModel(ValueError):
    """A model file of a known package whose model has a block or option mlipkit does not reproduce."""


class PickledObject:
    """An object of the class ``global_name`` as the file describes it, never constructed for real."""

    global_name = ""

    def __new__(cls, *args, **kwargs):
        record = super().__new__(cls)
        record.args, record.kwargs, record.state = args, kwargs, None
        return record

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def attributes(self) -> dict[str, Any]:
        """The instance dictionary the file stored (modules: their __dict__)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict | None):
            state = {**(state[0] or {}), **(state[1] or {})}
        return state if isinstance(state, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attributes = self.attributes
        for group in ("_parameters", "_buffers", "_modules"):
            if name in attributes.get(group, {}):
                return attributes[group][name]
        if name in attributes:
            return attributes[name]
        raise AttributeError(f"{self.global_name} in the file has no attribute '{name}'")

    def __repr__(self) -> str:
        return f"<pickled {self.global_name}>"


_record_classes: dict[str, type[PickledObject]] = {}


def record_class(global_name: str) -> type[PickledObject]:
    """One inert class per global name, so that records of the same class compare by type."""
    if global_name not in _record_classes:
        _record_classes[global_name] = type(global_name.rsplit(".", 1)[-1], (PickledObject,), {"global_name": global_name})
    return _record_classes[global_name]


def is_recorded(global_name: str) -> bool:
    return global_name in RECORDED_GLOBALS or global_name.startswith(RECORDED_PACKAGES)


def recorded_attribute(owner: Any, name: str) -> type[PickledObject]:
    """``getattr`` as a file may call it: on a recorded class only, giving another record."""
    if not (isinstance(owner, type) and issubclass(owner, PickledObject)) or not isinstance(name, str):
        raise FileHoldsCode(f"the file holds code: it calls getattr on {owner!r}; mlipkit refused it before running anything")
    return record_class(f"{owner.global_name}.{name}")


class RecordingUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module in ("builtins", "__builtin__") and name in DATA_BUILTINS:
            return DATA_BUILTINS[name]
        if module in ("builtins", "__builtin__") and name == "getattr":
            return recorded_attribute
        global_name = f"{module}.{name}"
        allowed = _weights_only_unpickler._get_allowed_globals()
        if global_name in allowed:
            return allowed[global_name]
        if is_recorded(global_name):
            return record_class(global_name)
        raise FileHoldsCode(
            f"the file holds code: it names the global '{global_name}', which is not part of a model file; "
            "mlipkit refused it before running anything"
        )


#: what torch.load needs of a pickle module
RECORDING_PICKLE_MODULE = types.SimpleNamespace(
    __name__="mlipkit_recording_pickle",
    Unpickler=RecordingUnpickler,
    load=lambda file, **kwargs: RecordingUnpickler(file, **kwargs).load(),
)


def existing_archive(path: str | Path) -> Path:
    """``path``, checked to be a zip archive (what torch.save and torch.package write)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a PyTorch archive (another kind of file, or a truncated or damaged one)")
    return path


def load_records(path: str | Path) -> Any:
    """The file's object tree, with tensors real and every other object a ``PickledObject``."""
    path = existing_archive(path)
    with zipfile.ZipFile(path) as archive:
        # torch.load hands these to torch.jit.load, which would run the TorchScript code they hold
        if is_torchscript_archive(archive.namelist()):
            raise ValueError(f"{path}: a TorchScript archive (a deployed or compiled model), not a saved model or checkpoint")
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=RECORDING_PICKLE_MODULE)
    except FileHoldsCode as error:
        raise FileHoldsCode(f"{path}: {error}") from None
    except Exception as error:  # damaged archives raise many types
        raise ValueError(f"{path}: the archive is damaged ({type(error).__name__}: {str(error)[:200]})") from None


class PackageRecordingUnpickler(RecordingUnpickler):
    """A torch.package pickle (nequip's ``.nequip.zip``): storages from the archive's ``.data/``, nothing else.

    torch.package's own importer runs the Python code packaged beside the
    pickle; here that code is never read: classes become records, as above,
    and objects that rebuild themselves through package code are refused.
    """

    def __init__(self, file, archive: zipfile.ZipFile, root: str):
        super().__init__(file)
        self.archive, self.root, self.storages = archive, root, {}

    def persistent_load(self, saved_id: Any) -> Any:
        kind = saved_id[0].decode() if isinstance(saved_id[0], bytes) else saved_id[0]
        if kind != "storage":
            raise FileHoldsCode(f"the package rebuilds an object with its own code ('{kind}'); mlipkit refused it before running anything")
        storage_type, key, _, size = saved_id[1:]
        dtype = torch.uint8 if storage_type is torch.UntypedStorage else storage_type.dtype
        if key not in self.storages:
            data = bytearray(self.archive.read(f"{self.root}/.data/{key}.storage"))
            untyped = torch.UntypedStorage.from_buffer(data, dtype=torch.uint8) if data else torch.UntypedStorage(0)
            if untyped.nbytes() != size * torch.empty((), dtype=dtype).element_size():
                raise ValueError(f"the package's storage {key} holds {untyped.nbytes()} bytes, not {size} {dtype} values")
            self.storages[key] = untyped
        return torch.storage.TypedStorage(wrap_storage=self.storages[key], dtype=dtype, _internal=True)


def load_package_records(path: str | Path, member: str) -> tuple[Any, dict[str, bytes]]:
    """A torch.package archive's pickle ``member`` (e.g. ``model/eager_model.pkl``) as records, and the
    archive's non-code files by their names under the package root."""
    path = existing_archive(path)
    with zipfile.ZipFile(path) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        files = {name.split("/", 1)[1]: archive.read(name) for name in archive.namelist()
                 if "/" in name and not name.endswith(".py") and "/.data/" not in name}
        if member not in files:
            raise ValueError(f"{path}: the package has no {member}")
        try:
            records = PackageRecordingUnpickler(io.BytesIO(files[member]), archive, root).load()
        except FileHoldsCode as error:
            raise FileHoldsCode(f"{path}: {error}") from None
        except Exception as error:  # damaged archives raise many types
            raise ValueError(f"{path}: the package is damaged ({type(error).__name__}: {str(error)[:200]})") from None
    return records, files


def named_tensors(module: PickledObject, prefix: str = "") -> Iterator[tuple[str, torch.Tensor]]:
    """A recorded module's parameters and buffers by their state-dict names."""
    attributes = module.attributes
    for group in ("_parameters", "_buffers"):
        for name, tensor in (attributes.get(group) or {}).items():
            if isinstance(tensor, torch.Tensor):
                yield prefix + name, tensor.detach()
    for name, child in (attributes.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            yield from named_tensors(child, f"{prefix}{name}.")


def named_modules(module: PickledObject, prefix: str = "") -> Iterator[tuple[str, PickledObject]]:
    yield prefix.rstrip("."), module
    for name, child in (module.attributes.get("_modules") or {}).items():
        if isinstance(child, PickledObject):
            yield from named_modules(child, f"{prefix}{name}.")


