"""From a trained model to a verified, self-describing artifact (``mlip-compile``)."""

from mlipkit.compile.artifact import Artifact, read_metadata
from mlipkit.compile.export import CompileError, CompileReport, compile_checkpoint, compile_model
from mlipkit.compile.metadata import ArtifactMetadata
from mlipkit.compile.modifiers import MODIFIERS, ModifierError, apply_modifiers

__all__ = [
    "MODIFIERS",
    "Artifact",
    "ArtifactMetadata",
    "CompileError",
    "CompileReport",
    "ModifierError",
    "apply_modifiers",
    "compile_checkpoint",
    "compile_model",
    "read_metadata",
]
