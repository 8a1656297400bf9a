"""Energy conservation of GemNet-OC in NVE (LAMMPS, float64 TorchScript artifacts), with and without quadruplets.

    .venv/bin/python tools/gemnet_oc_nve.py [--steps 2000] [--output out/gemnet_oc_nve]

Untrained small GemNet-OC models (two blocks, every other interaction on,
network energies scaled to 0.1 eV) on a rattled 32-atom Cu/Au cell at 300 K,
1 fs steps: the drift of the total energy (linear fit, eV/atom/ps) and its
fluctuation, for quad_interaction off (mlipkit's default) and on with each
quadruplet basis. Quadruplets make the energy non-smooth where a dihedral is
undefined or flips (collinear or planar atoms, which crystals are full of),
which shows up as drift.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

CONFIGURATIONS = {
    "no quadruplets (default)": dict(quad_interaction=False),
    "quadruplets, spherical_harmonics": dict(quad_interaction=True, sbf="spherical_harmonics"),
    "quadruplets, legendre_outer": dict(quad_interaction=True, sbf="legendre_outer"),
}


def main() -> None:
    from conftest import build_small
    from test_lammps import STRUCTURES, md_deck, read_thermo, run_lammps, write_data

    from mlipkit.compile import compile_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--output", type=Path, default=ROOT / "out" / "gemnet_oc_nve")
    arguments = parser.parse_args()
    atoms = STRUCTURES["triclinic_32"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    lines = [f"NVE, {len(atoms)} atoms, 300 K, 1 fs, {arguments.steps} steps (LAMMPS, float64 TorchScript)", "",
             "| GemNet-OC | drift (eV/atom/ps) | fluctuation (eV/atom) |", "|---|---|---|"]
    for name, options in CONFIGURATIONS.items():
        directory = arguments.output / name.split(",")[0].replace(" ", "_") / options.get("sbf", "none")
        directory.mkdir(parents=True, exist_ok=True)
        artifact = directory / "model.pt"
        if not artifact.exists():
            model = build_small("gemnet_oc", type_names=elements, per_type_energy_shifts=[-3.5, -3.8],
                                per_type_energy_scales=0.1, **options)
            compile_model(model, artifact, mode="torchscript")
        write_data(atoms, directory / "data.lmp", elements)
        try:
            run_lammps(directory, md_deck(artifact, elements, arguments.steps, 0.001, 300.0))
        except (AssertionError, subprocess.SubprocessError) as failure:
            lines.append(f"| {name} | failed: {str(failure).splitlines()[0]} | |")
            continue
        thermo = read_thermo(directory)
        time, total = thermo[:, 1], thermo[:, 2]
        drift = np.polyfit(time, total, 1)[0] / len(atoms)
        lines.append(f"| {name} | {drift:.2e} | {total.std() / len(atoms):.2e} |")
        print(lines[-1], flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
