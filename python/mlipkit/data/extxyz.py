"""Labelled structures and the extended-XYZ reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import ase
import ase.io
import numpy as np
from ase.stress import voigt_6_to_full_3x3_stress

#: ``config_type`` that marks a frame as an isolated-atom reference (MACE's convention).
ISOLATED_ATOM_CONFIG_TYPE = "IsolatedAtom"

LABELS = ("energy", "forces", "stress", "charges", "total_charge", "dipole")
#: where a structure's total charge is looked for when its own key is absent (mlip and ASE calculators use "charge")
TOTAL_CHARGE_FALLBACK_KEY = "charge"
#: Labels of a model's extra output heads, read under these names from ``info``
#: (graph_*) or ``arrays`` (node_*); trailing shape per task: () scalars, (3,) vectors.
HEAD_LABELS = {"graph_scalars": (), "graph_vectors": (3,), "node_scalars": (), "node_vectors": (3,)}


@dataclass
class Configuration:
    """One structure with its optional labels, in the units of the file (eV, Å)."""

    symbols: list[str]
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None  # [3, 3], ASE sign convention (positive = tensile)
    charges: np.ndarray | None = None
    total_charge: float | None = None
    dipole: np.ndarray | None = None  # [3], e Å
    #: extra output labels by HEAD_LABELS name: graph [T] / [T, 3], node [N, T] / [N, T, 3]
    head_labels: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def is_isolated_atom(self) -> bool:
        """True for a single-atom reference frame (isolated-atom energy E0)."""
        if len(self.symbols) != 1:
            return False
        return self.info.get("config_type") == ISOLATED_ATOM_CONFIG_TYPE or not bool(np.any(self.pbc))


def _label(atoms: ase.Atoms, key: str, per_atom: bool) -> Any:
    calc_results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    if key in calc_results:
        return calc_results[key]
    store = atoms.arrays if per_atom else atoms.info
    return store.get(key)


def _as_finite_array(value: Any, shape: tuple[int, ...], what: str, source: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{source}: {what} is not numeric ({value!r})") from error
    if array.shape != shape:
        raise ValueError(f"{source}: {what} has shape {array.shape}, expected {shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{source}: {what} contains NaN or infinite values")
    return array


def _stress_3x3(value: Any, source: str, key: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.shape == (6,):
        array = voigt_6_to_full_3x3_stress(array)
    elif array.shape == (9,):
        array = array.reshape(3, 3)
    return _as_finite_array(array, (3, 3), f"stress '{key}' (6 Voigt, 9 or 3x3 values)", source)


def configuration_from_atoms(
    atoms: ase.Atoms,
    *,
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    charges_key: str = "charges",
    total_charge_key: str = "total_charge",
    dipole_key: str = "dipole",
    source: str = "<memory>",
) -> Configuration:
    """Read labels from an Atoms' calculator results, ``info`` or ``arrays``."""
    n = len(atoms)
    configuration = Configuration(
        symbols=atoms.get_chemical_symbols(),
        positions=_as_finite_array(atoms.positions, (n, 3), "positions", source),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        info=dict(atoms.info),
        source=source,
    )
    energy = _label(atoms, energy_key, per_atom=False)
    if energy is not None:
        configuration.energy = float(_as_finite_array(energy, (), f"energy '{energy_key}'", source))
    forces = _label(atoms, forces_key, per_atom=True)
    if forces is not None:
        configuration.forces = _as_finite_array(forces, (n, 3), f"forces '{forces_key}'", source)
    stress = _label(atoms, stress_key, per_atom=False)
    if stress is not None:
        configuration.stress = _stress_3x3(stress, source, stress_key)
    charges = _label(atoms, charges_key, per_atom=True)
    if charges is not None:
        configuration.charges = _as_finite_array(charges, (n,), f"charges '{charges_key}'", source)
    for name, task_shape in HEAD_LABELS.items():
        per_atom = name.startswith("node")
        value = _label(atoms, name, per_atom=per_atom)
        if value is None:
            continue
        array = np.asarray(value, dtype=np.float64)
        leading = (n,) if per_atom else ()
        tasks = array.size // max(int(np.prod(leading + task_shape)), 1)
        configuration.head_labels[name] = _as_finite_array(array, leading + (tasks,) + task_shape, f"label '{name}'", source)
    dipole = _label(atoms, dipole_key, per_atom=False)
    if dipole is not None:
        configuration.dipole = _as_finite_array(dipole, (3,), f"dipole '{dipole_key}'", source)
    total_charge = _label(atoms, total_charge_key, per_atom=False)
    if total_charge is None:
        total_charge = atoms.info.get(TOTAL_CHARGE_FALLBACK_KEY)
    if total_charge is not None:
        configuration.total_charge = float(
            _as_finite_array(total_charge, (), f"total charge '{total_charge_key}'", source)
        )
    return configuration


def atoms_total_charge(atoms: ase.Atoms) -> float:
    """An Atoms' total charge: ``info["total_charge"]`` or ``info["charge"]``, else its initial charges' sum (0 without)."""
    for key in ("total_charge", TOTAL_CHARGE_FALLBACK_KEY):
        if atoms.info.get(key) is not None:
            return float(atoms.info[key])
    return float(atoms.get_initial_charges().sum())


def read_extxyz(
    path: str | Path,
    *,
    required: Sequence[str] = (),
    energy_key: str = "energy",
    forces_key: str = "forces",
    stress_key: str = "stress",
    charges_key: str = "charges",
    total_charge_key: str = "total_charge",
    dipole_key: str = "dipole",
) -> list[Configuration]:
    """Read every frame of an extended-XYZ file.

    ``required`` names labels (from ``LABELS``) every frame but isolated-atom
    references must carry; a frame without one is an error naming file and frame.
    """
    path = Path(path)
    unknown = sorted(set(required) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown label(s) {unknown} in required; known labels are {list(LABELS)}")
    if not path.is_file():
        raise FileNotFoundError(f"dataset file not found: {path}")
    try:
        frames = ase.io.read(path, index=":", format="extxyz")
    except Exception as error:  # ase raises many types for malformed files
        raise ValueError(f"{path}: not a readable extended-XYZ file: {error}") from error
    if not frames:
        raise ValueError(f"{path}: contains no structures")
    label_keys = {
        "energy": energy_key,
        "forces": forces_key,
        "stress": stress_key,
        "charges": charges_key,
        "total_charge": total_charge_key,
        "dipole": dipole_key,
    }
    configurations = []
    for index, atoms in enumerate(frames):
        configuration = configuration_from_atoms(
            atoms, **{f"{label}_key": key for label, key in label_keys.items()}, source=f"{path} frame {index}"
        )
        missing = [label for label in required if getattr(configuration, label) is None]
        if missing and not configuration.is_isolated_atom:
            raise ValueError(
                f"{configuration.source}: missing required label(s) "
                + ", ".join(f"{label} (key '{label_keys[label]}')" for label in missing)
            )
        configurations.append(configuration)
    return configurations
