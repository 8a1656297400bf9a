"""mlipkit: equivariant machine-learned interatomic potentials, from training to LAMMPS."""

from mlipkit.models import build_model, load_checkpoint, save_checkpoint
from mlipkit.version import __version__

__all__ = ["__version__", "build_model", "load_checkpoint", "save_checkpoint"]
