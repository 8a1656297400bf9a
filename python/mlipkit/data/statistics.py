"""Dataset statistics, the numbers models take as hyperparameters."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pydantic import BaseModel
from tqdm.auto import tqdm

from mlipkit.data.extxyz import Configuration
from mlipkit.data.graph import type_indices
from mlipkit.data.neighbours import neighbour_list


class DatasetStatistics(BaseModel):
    """Statistics of a set of configurations; a field is None when no data defines it."""

    num_configurations: int
    num_atoms: int
    num_neighbors_mean: float
    avg_r_min: float | None
    per_atom_energy_mean: float | None
    per_atom_energy_std: float | None
    total_energy_std: float | None
    forces_rms: float | None
    per_type_forces_rms: list[float | None] | None
    isolated_atom_energies: dict[str, float]
    #: per-type energies whose sums over each structure's atoms best fit its energy (least squares; minimum norm
    #: where compositions do not tell the types apart): mace-torch's E0s "average"
    least_squares_atomic_energies: dict[str, float] | None = None


def _std(values: list[float]) -> float | None:
    return float(np.std(values)) if values else None


def compute_statistics(
    configurations: Sequence[Configuration],
    r_max: float,
    type_names: Sequence[str],
    progress: bool = False,
) -> DatasetStatistics:
    """Statistics over ``configurations``; isolated-atom frames only feed ``isolated_atom_energies``."""
    if not configurations:
        raise ValueError("cannot compute statistics of an empty dataset")
    num_types = len(type_names)
    neighbour_counts, min_distances = [], []
    per_atom_energies, total_energies, compositions = [], [], []
    force_squares = np.zeros(num_types)
    force_counts = np.zeros(num_types, dtype=np.int64)
    isolated: dict[str, float] = {}
    num_atoms = 0
    for configuration in tqdm(configurations, desc="dataset statistics", disable=not progress):
        types = type_indices(configuration.symbols, type_names)
        if configuration.is_isolated_atom:
            if configuration.energy is not None:
                isolated[configuration.symbols[0]] = configuration.energy
            continue
        n = len(types)
        num_atoms += n
        edge_index, shifts = neighbour_list(configuration.positions, configuration.cell, configuration.pbc, r_max)
        neighbour_counts.append(edge_index.shape[1])
        if edge_index.shape[1]:
            vectors = (
                configuration.positions[edge_index[1]]
                - configuration.positions[edge_index[0]]
                + shifts @ configuration.cell
            )
            min_distances.append(float(np.linalg.norm(vectors, axis=1).min()))
        if configuration.energy is not None:
            per_atom_energies.append(configuration.energy / n)
            total_energies.append(configuration.energy)
            compositions.append(np.bincount(types, minlength=num_types))
        if configuration.forces is not None:
            np.add.at(force_squares, types, np.sum(configuration.forces**2, axis=1))
            np.add.at(force_counts, types, 3)
    if num_atoms == 0:
        raise ValueError("the dataset holds only isolated-atom reference frames")
    has_forces = force_counts.sum() > 0
    return DatasetStatistics(
        num_configurations=len(configurations),
        num_atoms=num_atoms,
        num_neighbors_mean=float(sum(neighbour_counts)) / num_atoms,
        avg_r_min=float(np.mean(min_distances)) if min_distances else None,
        per_atom_energy_mean=float(np.mean(per_atom_energies)) if per_atom_energies else None,
        per_atom_energy_std=_std(per_atom_energies),
        total_energy_std=_std(total_energies),
        forces_rms=float(np.sqrt(force_squares.sum() / force_counts.sum())) if has_forces else None,
        per_type_forces_rms=[
            float(np.sqrt(s / c)) if c else None for s, c in zip(force_squares, force_counts)
        ]
        if has_forces
        else None,
        isolated_atom_energies=isolated,
        least_squares_atomic_energies=_least_squares_energies(compositions, total_energies, type_names),
    )


def _least_squares_energies(compositions: list[np.ndarray], energies: list[float], type_names: Sequence[str]) -> dict[str, float] | None:
    if not energies:
        return None
    counts = np.array(compositions, dtype=np.float64)
    solution = np.linalg.lstsq(counts, np.array(energies), rcond=None)[0]
    present = counts.sum(axis=0) > 0
    return {name: float(value) for name, value, seen in zip(type_names, solution, present) if seen}
