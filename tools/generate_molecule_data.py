"""Labelled molecule data from GFN2-xTB (tblite): short MD of small organic molecules and ions, reproducible from a seed.

    pip install tblite==0.8.0
    python tools/generate_molecule_data.py examples/data/ethanol_xtb.xyz                 # the shipped file
    python tools/generate_molecule_data.py molecules.xyz --molecules CH3CH2OH CH3COOH C6H6 --frames-per-run 200
    python tools/generate_molecule_data.py examples/data/ions_xtb.xyz --frames-per-run 40 \
        --molecules CH3CH2OH CH3COOH acetate methylammonium                               # the shipped charged set

Each molecule (an ASE g2 name, or one of the ions in IONS) runs Langevin MD
with GFN2-xTB at each temperature; every ``interval`` steps a frame is
written with the xTB energy and forces, its Mulliken charges ("charges"),
dipole ("dipole", e Å) and total charge (``info["charge"]``), as extended XYZ
(eV and Å, non-periodic). Isolated-atom reference frames
(config_type=IsolatedAtom) come first, one per element.
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


def xtb(charge: float = 0.0):
    try:
        from tblite.ase import TBLite
    except ImportError:
        raise SystemExit("this script needs tblite: pip install tblite==0.8.0") from None
    return TBLite(method="GFN2-xTB", charge=charge, verbosity=0)


def protonated(name: str, site: str) -> Atoms:
    """A g2 molecule with a proton added 1.02 Å from its first ``site`` atom, away from that atom's neighbours."""
    atoms = molecule(name)
    index = atoms.get_chemical_symbols().index(site)
    others = np.delete(atoms.positions, index, axis=0) - atoms.positions[index]
    bonded = others[np.linalg.norm(others, axis=1) < 1.6]
    direction = -bonded.sum(0)
    atoms += Atoms("H", positions=[atoms.positions[index] + 1.02 * direction / np.linalg.norm(direction)])
    return atoms


def deprotonated(name: str, site: str) -> Atoms:
    """A g2 molecule without the hydrogen bonded to its first ``site`` atom."""
    atoms = molecule(name)
    index = atoms.get_chemical_symbols().index(site)
    distances = atoms.get_distances(index, range(len(atoms)))
    hydrogen = min((d, i) for i, d in enumerate(distances) if atoms[i].symbol == "H")[1]
    del atoms[hydrogen]
    return atoms


#: ions by name: (total charge, builder)
IONS = {
    "acetate": (-1.0, lambda: deprotonated("CH3COOH", "O")),
    "methylammonium": (1.0, lambda: protonated("H3CNH2", "N")),
    "hydroxide": (-1.0, lambda: deprotonated("H2O", "O")),
    "hydronium": (1.0, lambda: protonated("H2O", "O")),
}


def species(name: str) -> tuple[Atoms, float]:
    if name in IONS:
        charge, build = IONS[name]
        return build(), charge
    return molecule(name), 0.0


def labelled(atoms: Atoms, config_type: str) -> Atoms:
    frame = Atoms(atoms.symbols, positions=atoms.positions)
    results = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces()}
    if len(atoms) > 1:
        results.update(charges=atoms.get_charges(), dipole=atoms.get_dipole_moment())
    frame.calc = SinglePointCalculator(frame, **results)
    frame.info["config_type"] = config_type
    frame.info["charge"] = float(atoms.calc.parameters.get("charge", 0.0))
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
    elements = sorted({symbol for name in names for symbol in species(name)[0].get_chemical_symbols()})
    frames = [isolated_atom(element) for element in elements]
    runs = [(name, temperature) for name in names for temperature in temperatures]
    with tqdm(total=len(runs) * frames_per_run, desc="GFN2-xTB MD", unit="frame") as progress:
        for name, temperature in runs:
            atoms, charge = species(name)
            atoms.calc = xtb(charge)
            config_type = f"md_{name}_{temperature:g}K"
            frames += langevin_frames(atoms, temperature, 0.5, frames_per_run, interval, rng,
                                      lambda state: labelled(state, config_type), progress)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--molecules", nargs="+", default=["CH3CH2OH"], help=f"ASE g2 molecule names, or ions {sorted(IONS)}")
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
