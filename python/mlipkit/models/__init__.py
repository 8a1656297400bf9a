"""Models: NequIP, MACE, GemNet-OC and their variants, built from validated configs."""

from mlipkit.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from mlipkit.models.config import LossConfig, OutputConfig, PairPotentialConfig, PotentialConfig
from mlipkit.models.mace import MACE, MACEConfig
from mlipkit.models.nequip import NequIP, NequIPConfig
from mlipkit.models.potential import Potential
from mlipkit.models.registry import REGISTRY, build_from_config, build_model

__all__ = [
    "REGISTRY",
    "LossConfig",
    "MACE",
    "MACEConfig",
    "NequIP",
    "NequIPConfig",
    "OutputConfig",
    "PairPotentialConfig",
    "Potential",
    "PotentialConfig",
    "build_from_config",
    "build_model",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
