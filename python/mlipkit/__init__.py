"""mlipkit: equivariant machine-learned interatomic potentials, from training to LAMMPS.

The top-level names load on first use, so that light entry points (the LAMMPS
plugin locator run by every ``lmp`` start) do not import torch.
"""

import importlib

from mlipkit.version import __version__

_LAZY_NAMES = {"build_model": "mlipkit.models", "load_checkpoint": "mlipkit.models", "save_checkpoint": "mlipkit.models",
              "import_model": "mlipkit.importers"}

__all__ = ["__version__", *_LAZY_NAMES]


def __getattr__(name: str):
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'mlipkit' has no attribute '{name}'")
