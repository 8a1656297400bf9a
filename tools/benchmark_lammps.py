"""LAMMPS speed of pair_style mlip: timesteps/s for fcc Cu on 1 and 2 MPI ranks.

    python tools/benchmark_lammps.py                      # default NequIP, float32, 256 and 2048 atoms
    python tools/benchmark_lammps.py --artifact cu.pt2 --sizes 4 --ranks 1 2 4
    python tools/benchmark_lammps.py --coulomb 10 --sizes 4 6 --ranks 1 2   # the cost of the Coulomb term

Compiles the default NequIP (4 layers, l_max 2, 32 features, r_max 5) for Cu
with AOTInductor unless --artifact is given, then runs NVE in LAMMPS and
reports timesteps/s, the Pair share of LAMMPS's timing breakdown, and the
share of Pair time spent outside the model (graph building and copies), as
pair_style mlip itself measures it. ``--coulomb R`` also compiles the same
model with predicted charges and a damped shifted Coulomb term at a
long-range cutoff of R Å (uniform charge correction: two evaluations per step
on several ranks) and reports its time per step against the plain model's.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mlipkit
from mlipkit.compile import compile_model

DECK = """
units metal
atom_style atomic
lattice fcc 3.61
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlip
pair_coeff * * {artifact} Cu
velocity all create 300.0 87287 mom yes rot yes
fix integrate all nve
timestep 0.001
thermo {steps}
run {steps}
"""


def default_artifact(directory: Path, dtype: torch.dtype, mode: str, coulomb_cutoff: float | None = None) -> Path:
    options = {}
    if coulomb_cutoff is not None:
        options = dict(use_coulomb_term=True, coulomb={"long_range_cutoff": coulomb_cutoff})
    model = mlipkit.build_model("nequip", type_names=["Cu"], r_max=5.0, seed=0, dtype=dtype, per_type_energy_shifts=-3.5, **options)
    if options:
        # the untrained readout's charges (a few tenths of e) make thousands of eV in a lattice, and the crystal flies
        # apart within the run: a tenth of them keeps the dynamics sane (the cost is the same)
        with torch.no_grad():
            model.partial_charges.readout.out.weight.mul_(0.1)
    extension = ".pt2" if mode == "aotinductor" else ".pt"
    path = directory / f"default_nequip_cu{'_coulomb' if options else ''}{extension}"
    started = time.perf_counter()
    compile_model(model, path, mode=mode)
    what = f"with a Coulomb term at {coulomb_cutoff} Å " if options else ""
    print(f"compiled the default NequIP {what}({str(dtype).removeprefix('torch.')}, {mode}) in {time.perf_counter() - started:.0f} s")
    return path


def run(artifact: Path, cells: int, ranks: int, steps: int, threads: int, directory: Path) -> dict[str, float]:
    deck = directory / f"bench_{cells}_{ranks}.in"
    deck.write_text(DECK.format(cells=cells, artifact=artifact, steps=steps))
    command = [str(Path(sys.executable).parent / "lmp"), "-in", str(deck), "-log", "none", "-nocite"]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)] + command
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads))
    ).stdout
    loop = re.search(r"Loop time of ([\d.e+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", output)
    pair = re.search(r"^Pair\s*\|.*\|\s*([\d.]+)\s*$", output, re.MULTILINE)
    model = re.search(r"model ([\d.]+)%, graph building and copies ([\d.]+)%", output)
    seconds = float(loop.group(1))
    return {
        "atoms": int(loop.group(4)),
        "steps_per_second": int(loop.group(3)) / seconds,
        "pair_share": float(pair.group(1)),
        "outside_model_share": float(model.group(2)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="a compiled Cu model (default: compile the default NequIP)")
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="fcc cells per edge (4: 256 atoms, 8: 2048)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="OpenMP threads per rank (each value in turn)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mode", choices=["aotinductor", "torchscript"], default="aotinductor")
    parser.add_argument("--coulomb", type=float, metavar="CUTOFF", help="also time the model with a Coulomb term at this cutoff")
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        dtype = getattr(torch, arguments.dtype)
        artifacts = {"plain": arguments.artifact or default_artifact(directory, dtype, arguments.mode)}
        if arguments.coulomb is not None:
            artifacts["coulomb"] = default_artifact(directory, dtype, arguments.mode, arguments.coulomb)
        print("| model | atoms | ranks x threads | timesteps/s | Pair % of loop | Pair time outside the model | time / plain |")
        print("|---|---|---|---|---|---|---|")
        for cells in arguments.sizes:
            for ranks in arguments.ranks:
                for threads in arguments.threads:
                    plain_rate = None
                    for name, artifact in artifacts.items():
                        result = run(artifact.resolve(), cells, ranks, arguments.steps, threads, directory)
                        plain_rate = plain_rate or result["steps_per_second"]
                        print(
                            f"| {name} | {result['atoms']} | {ranks} x {threads} | {result['steps_per_second']:.3g} | "
                            f"{result['pair_share']:.1f} | {result['outside_model_share']:.1f}% | "
                            f"{plain_rate / result['steps_per_second']:.2f} |",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
