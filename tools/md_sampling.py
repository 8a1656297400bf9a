"""Shared by the data generators: labelled frames sampled from Langevin MD."""

from __future__ import annotations

from typing import Callable

import numpy as np
from ase import Atoms, units
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution


def langevin_frames(
    atoms: Atoms,
    temperature: float,
    timestep_fs: float,
    num_frames: int,
    interval: int,
    rng: np.random.Generator,
    label: Callable[[Atoms], Atoms],
    progress,
    warmup_steps: int = 0,
) -> list[Atoms]:
    """``num_frames`` frames, one every ``interval`` steps after ``warmup_steps``, each made by ``label``."""
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dynamics = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature, friction=0.02, rng=rng)
    if warmup_steps:
        dynamics.run(warmup_steps)
    frames = []
    for _ in range(num_frames):
        dynamics.run(interval)
        frames.append(label(atoms))
        progress.update()
    return frames
