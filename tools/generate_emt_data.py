"""Labelled metal data from ASE's EMT: fcc Cu or a CuAu alloy, reproducible from a seed.

    python tools/generate_emt_data.py examples/data/cu_emt.xyz                  # the shipped file
    python tools/generate_emt_data.py cuau.xyz --system CuAu --frames-per-run 40

Frames come from short Langevin MD runs at several temperatures on cells under
several isotropic strains with a small random shear; each frame carries the
EMT energy, forces and stress (extended XYZ, eV and Å, ASE stress sign). The
file starts with isolated-atom reference frames (config_type=IsolatedAtom)
for each element, so trainings can take E0 from the data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from md_sampling import langevin_frames
from tqdm import tqdm

LATTICE_CONSTANTS = {"Cu": 3.61, "CuAu": 3.87}
ELEMENTS = {"Cu": ["Cu"], "CuAu": ["Cu", "Au"]}


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    """A copy of ``atoms`` that keeps the EMT energy, forces and stress in the file."""
    frame = atoms.copy()
    frame.arrays.pop("momenta", None)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info["config_type"] = config_type
    return frame


def starting_cell(system: str, repeats: int, strain: float, rng: np.random.Generator) -> Atoms:
    atoms = bulk("Cu", "fcc", a=LATTICE_CONSTANTS[system], cubic=True).repeat(repeats)
    if system == "CuAu":
        atoms.symbols[rng.permutation(len(atoms))[: len(atoms) // 2]] = "Au"
    shear = rng.normal(scale=0.01, size=(3, 3))
    deformation = (1.0 + strain) * np.eye(3) + 0.5 * (shear + shear.T)
    atoms.set_cell(atoms.cell.array @ deformation, scale_atoms=True)
    return atoms


def generate(system: str, temperatures: list[float], strains: list[float], frames_per_run: int, interval: int,
             repeats: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    frames = []
    for element in ELEMENTS[system]:
        isolated = Atoms(element, positions=[[0.0, 0.0, 0.0]], pbc=False)
        isolated.calc = EMT()
        frames.append(labelled(isolated, "IsolatedAtom"))
    runs = [(temperature, strain) for temperature in temperatures for strain in strains]
    with tqdm(total=len(runs) * frames_per_run, desc=f"EMT MD ({system})", unit="frame") as progress:
        for temperature, strain in runs:
            atoms = starting_cell(system, repeats, strain, rng)
            atoms.calc = EMT()
            config_type = f"md_{system}_{temperature:g}K_strain{strain:+g}"
            # a first interval leaves the perfect lattice
            frames += langevin_frames(atoms, temperature, 2.0, frames_per_run, interval, rng,
                                      lambda state: labelled(state, config_type), progress, warmup_steps=interval)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--system", choices=sorted(ELEMENTS), default="Cu")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 800.0, 1300.0])
    parser.add_argument("--strains", type=float, nargs="+", default=[-0.02, 0.0, 0.02])
    parser.add_argument("--frames-per-run", type=int, default=25)
    parser.add_argument("--interval", type=int, default=10, help="MD steps of 2 fs between frames")
    parser.add_argument("--repeats", type=int, default=2, help="conventional cells per edge (2: 32 atoms)")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    frames = generate(arguments.system, arguments.temperatures, arguments.strains, arguments.frames_per_run,
                      arguments.interval, arguments.repeats, arguments.seed)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    write(arguments.output, frames, format="extxyz")
    print(f"wrote {len(frames)} frames to {arguments.output}")


if __name__ == "__main__":
    main()
