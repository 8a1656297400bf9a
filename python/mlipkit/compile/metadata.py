"""Artifact metadata: what a compiled model is, stored as flat string pairs.

Flat ``mlipkit.<field>`` -> string pairs travel unchanged in an AOTInductor
package's metadata and in a TorchScript extra file, and the C++ runtime reads
them without a JSON parser. Lists are space separated. The C++ runtime
(csrc/runtime/artifact.cpp) reads the same keys and refuses other versions.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mlipkit.data import keys

ARTIFACT_FORMAT = "mlipkit-artifact"
#: Bumped when the calling convention or the keys change; the runtimes refuse other versions.
ARTIFACT_FORMAT_VERSION = 2
KEY_PREFIX = "mlipkit."
#: Name of the metadata file inside a TorchScript archive (``key=value`` lines).
TORCHSCRIPT_METADATA_FILE = "mlipkit_metadata.txt"


def torchscript_entry_file(entry: str) -> str:
    """The extra file of a TorchScript archive that holds another entry point, itself a TorchScript archive."""
    return f"mlipkit_entry_{entry}.pt"


INPUTS = (keys.ATOM_TYPES, keys.EDGE_INDEX, keys.EDGE_VECTORS)

ExportMode = Literal["aotinductor", "torchscript"]
ExportTarget = Literal["lammps", "ase", "energy"]

#: The outputs each target computes inside the artifact. ``lammps``: the minimal
#: conservative contract (forces, virial and per-atom virial are derived from the
#: edge forces by the caller, which knows local and ghost atoms); ``ase``: also the
#: forces, virial and per-atom virials of the whole input (the caller divides by
#: its cell volume for stress); ``energy``: no derivatives at all.
TARGET_OUTPUTS: dict[str, tuple[str, ...]] = {
    "lammps": (keys.NODE_ENERGIES, keys.EDGE_FORCES),
    "ase": (keys.ENERGY, keys.NODE_ENERGIES, keys.EDGE_FORCES, keys.FORCES, keys.VIRIAL, keys.NODE_VIRIALS),
    "energy": (keys.NODE_ENERGIES,),
}

#: Outputs added to a target's when the model computes them: the per-atom terms of the energy's std
#: (mean-variance models) for every target, since a caller that splits a system sums its atoms' terms
#: first; the per-graph std where the target returns graph quantities.
UNCERTAINTY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "lammps": (keys.NODE_ENERGY_UNCERTAINTY,),
    "ase": (keys.NODE_ENERGY_UNCERTAINTY, keys.ENERGY_UNCERTAINTY),
    "energy": (keys.NODE_ENERGY_UNCERTAINTY,),
}


#: Non-conservative models (GemNet-OC with direct forces) return per-atom forces and nothing that needs a gradient.
DIRECT_FORCE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "lammps": (keys.NODE_ENERGIES, keys.FORCES),
    "ase": (keys.ENERGY, keys.NODE_ENERGIES, keys.FORCES),
    "energy": (keys.NODE_ENERGIES,),
}


def artifact_outputs(target: str, energy_uncertainty: bool, direct_forces: bool = False) -> list[str]:
    outputs = DIRECT_FORCE_OUTPUTS[target] if direct_forces else TARGET_OUTPUTS[target]
    return list(outputs) + list(UNCERTAINTY_OUTPUTS[target] if energy_uncertainty else ())


#: The inputs each target takes. ``lammps`` also takes node_energy_mask [N] (bool):
#: the atoms whose energies the edge forces differentiate (a rank's own atoms,
#: not its ghost atoms, whose receptive fields are cut off).
TARGET_INPUTS: dict[str, tuple[str, ...]] = {
    "lammps": INPUTS + (keys.NODE_ENERGY_MASK,),
    "ase": INPUTS,
    "energy": INPUTS,
}


def electrostatics_inputs(total_charge: bool, global_correction: bool, coulomb_method: str | None, target: str) -> list[str]:
    """Inputs a model with charges adds: its total charge; for several LAMMPS ranks the correction's shift and its
    weight; the long-range edge list; for Ewald the positions, cell, pbc and the host's k vectors."""
    inputs = [keys.TOTAL_CHARGE] if total_charge else []
    if global_correction and target == "lammps":
        inputs += [keys.CHARGE_SHIFT, keys.CHARGE_SHIFT_WEIGHT]
    if coulomb_method is not None:
        inputs += [keys.LR_EDGE_INDEX, keys.LR_EDGE_VECTORS]
    if coulomb_method == "ewald":
        inputs += [keys.POSITIONS, keys.CELL, keys.PBC, keys.K_INDICES]
    return inputs


def electrostatics_outputs(charges: bool, global_correction: bool, coulomb_method: str | None, target: str) -> list[str]:
    """Outputs a model with charges adds: the charges; with derivatives the long-range edge forces and Ewald's direct
    position and cell terms (lammps; ase folds them into its forces and virial)."""
    outputs = [keys.CHARGES] if charges else []
    if target == "energy":
        return outputs
    if coulomb_method is not None:
        outputs.append(keys.LR_EDGE_FORCES)
    if coulomb_method == "ewald" and target == "lammps":
        outputs += [keys.POSITION_FORCES, keys.CELL_GRADIENT]
    return outputs


#: A second function in the artifact, for callers that hold part of a system (several LAMMPS ranks): the same
#: inputs, one output [1, 4], the counted atoms' sum q~, sum f, dE/dc and d^2E/dc^2 at the given shift c; a
#: forward pass only (with the Coulomb sum's own derivatives by c), so the first of the two evaluations per step
#: costs less than a full one.
CHARGE_CORRECTION_ENTRY = keys.CHARGE_CORRECTION_TERMS


def entry_points(global_correction: bool, target: str) -> list[str]:
    return [CHARGE_CORRECTION_ENTRY] if global_correction and target == "lammps" else []


EXTENSIONS: dict[str, str] = {"aotinductor": ".pt2", "torchscript": ".pt"}

UNIT_NAMES = {"metal": ("eV", "Angstrom"), "real": ("kcal/mol", "Angstrom")}


class ArtifactMetadata(BaseModel):
    """Everything a caller needs to run an artifact correctly (docs/compiling.md#the-artifact-contract)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["mlipkit-artifact"] = ARTIFACT_FORMAT
    format_version: int = ARTIFACT_FORMAT_VERSION
    model_name: str
    type_names: list[str] = Field(min_length=1)
    r_max: float = Field(gt=0.0)
    num_message_passing_layers: int = Field(ge=0)
    units: Literal["metal", "real"]
    energy_unit: str
    length_unit: str
    dtype: Literal["float32", "float64"]
    device: Literal["cpu", "cuda"]
    mode: ExportMode
    target: ExportTarget
    inputs: list[str]
    outputs: list[str]
    op_libraries: list[str]
    modifiers: list[str]
    mlipkit_version: str
    torch_version: str
    config_hash: str
    #: electrostatics (docs/charges.md): the second edge list's cutoff (0: none), the Coulomb
    #: method and charge correction ("none": none), the categorical embedding's total charges, Ewald's k_max (1/Å)
    long_range_cutoff: float = Field(0.0, ge=0.0)
    coulomb_method: str = "none"
    charge_correction: str = "none"
    available_total_charges: list[str] = Field(default_factory=list)
    ewald_k_max: float = Field(0.0, ge=0.0)
    #: functions beside the main one (see CHARGE_CORRECTION_ENTRY), each with the main one's inputs
    entry_points: list[str] = Field(default_factory=list)
    #: the graph calls mlipkit::halo_exchange between layers (docs/lammps/pair_style.md#graph-and-mpi), on rows at most this wide
    halo_exchange: bool = False
    halo_exchange_width: int = Field(0, ge=0)

    def to_strings(self) -> dict[str, str]:
        strings = {}
        for name, value in self.model_dump().items():
            text = " ".join(value) if isinstance(value, list) else repr(value) if isinstance(value, float) else str(value)
            strings[KEY_PREFIX + name] = text
        return strings

    @classmethod
    def from_strings(cls, strings: dict[str, str], source: str) -> "ArtifactMetadata":
        """Parse and validate; ``source`` names the file in error messages."""
        fields = {k.removeprefix(KEY_PREFIX): v for k, v in strings.items() if k.startswith(KEY_PREFIX)}
        if fields.get("format") != ARTIFACT_FORMAT:
            raise ValueError(f"{source} is not an mlipkit artifact (its metadata has no '{KEY_PREFIX}format' entry)")
        version = fields.get("format_version")
        if version != str(ARTIFACT_FORMAT_VERSION):
            raise ValueError(
                f"{source} has artifact format version {version} (written by mlipkit {fields.get('mlipkit_version')}); "
                f"this mlipkit reads version {ARTIFACT_FORMAT_VERSION}: recompile it from its checkpoint"
            )
        list_fields = {name for name, field in cls.model_fields.items() if field.annotation == list[str]}
        values = {name: text.split() if name in list_fields else text for name, text in fields.items()}
        known = {name: value for name, value in values.items() if name in cls.model_fields}
        return cls.model_validate(known)

    def to_text(self) -> str:
        """``key=value`` lines, the TorchScript archive's form."""
        return "".join(f"{key}={value}\n" for key, value in self.to_strings().items())

    @classmethod
    def from_text(cls, text: str, source: str) -> "ArtifactMetadata":
        strings = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        return cls.from_strings(strings, source)


def config_hash(model_name: str, config: BaseModel) -> str:
    """sha256 of the model name and its canonical config (JSON, sorted keys)."""
    text = json.dumps({"model_name": model_name, "config": config.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
