"""Labelled molecule data from GFN2-xTB (tblite): short MD of small organic molecules, reproducible from a seed.

    pip install tblite==0.8.0
    python tools/generate_molecule_data.py examples/data/ethanol_xtb.xyz                 # the shipped file
    python tools/generate_molecule_data.py molecules.xyz --molecules CH3CH2OH CH3COOH C6H6 --frames-per-run 200

Each molecule (an ASE g2 name) runs Langevin MD with GFN2-xTB at each
temperature; every ``interval`` steps a frame is written with the xTB energy
and forces (extended XYZ, eV and Å, non-periodic). Isolated-atom reference
frames (config_type=IsolatedAtom) come first, one per element.
"""

from __future__ import annotations

import argparse
import os

# tblite's threaded sums differ in the last bits from run to run, and MD
# amplifies that; one thread makes the data bitwise reproducible
os.environ.setdefault("OMP_NUM_THREADS", "1")
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import molecule
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from md_sampling import langevin_frames
from tqdm import tqdm


def xtb():
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise SystemExit("this script needs tblite: pip install tblite==0.8.0") from None
    return TBLite(method="GFN2-xTB", verbosity=0)


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    frame = Atoms(atoms.symbols, positions=atoms.positions)
    frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
    frame.info["config_type"] = config_type
    return frame


def isolated_atom(element: str) -> Atoms:
    atom = Atoms(element, positions=[[0.0, 0.0, 0.0]])
    calculator = xtb()
    # open-shell atoms: one unpaired electron for odd electron counts
    calculator.set(multiplicity=1 + (atom.get_atomic_numbers()[0] % 2))
    atom.calc = calculator
    return labelled(atom, "IsolatedAtom")


def generate(names: list[str], temperatures: list[float], frames_per_run: int, interval: int, seed: int) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    elements = sorted({symbol for name in names for symbol in molecule(name).get_chemical_symbols()})
    frames = [isolated_atom(element) for element in elements]
    runs = [(name, temperature) for name in names for temperature in temperatures]
    with tqdm(total=len(runs) * frames_per_run, desc="GFN2-xTB MD", unit="frame") as progress:
        for name, temperature in runs:
            atoms = molecule(name)
            atoms.calc = xtb()
            config_type = f"md_{name}_{temperature:g}K"
            frames += langevin_frames(atoms, temperature, 0.5, frames_per_run, interval, rng,
                                      lambda state: labelled(state, config_type), progress)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--molecules", nargs="+", default=["CH3CH2OH"], help="ASE g2 molecule names")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[300.0, 600.0])
    parser.add_argument("--frames-per-run", type=int, default=100)
    parser.add_argument("--interval", type=int, default=5, help="MD steps of 0.5 fs between frames")
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args()
    frames = generate(arguments.molecules, arguments.temperatures, arguments.frames_per_run, arguments.interval, arguments.seed)
    arguments.output.parent.mkdir(parents=True, exist_ok=True)
    write(arguments.output, frames, format="extxyz")
    print(f"wrote {len(frames)} frames to {arguments.output}")


if __name__ == "__main__":
    main()
