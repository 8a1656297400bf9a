"""LAMMPS speed of pair_style mlip: timesteps/s, work and memory for fcc Cu on MPI ranks and threads.

    python tools/benchmark_lammps.py                      # default NequIP, float32, 256 and 2048 atoms
    python tools/benchmark_lammps.py --artifact cu.pt2 --sizes 4 --ranks 1 2 4
    python tools/benchmark_lammps.py --coulomb 10 --sizes 4 6 --ranks 1 2   # the cost of the Coulomb term
    python tools/benchmark_lammps.py --models nequip mace --sizes 12 16 --ranks 1 2 4 8 --comm halo shell
                                                          # strong scaling: halo exchange against the ghost shell
    python tools/benchmark_lammps.py --models nequip mace --sizes 12 16 --subdomain 2
                                                          # one rank of 8 timed alone (no oversubscription)
    python tools/benchmark_lammps.py ... --json out/lammps.json --plot docs/figures/lammps_scaling.png
    python tools/benchmark_lammps.py --plot-from out/lammps.json --plot docs/figures/lammps_scaling.png
    mlip-compile out/benchmark_peers/artifacts/gemnet_oc_C_O_Cu.ckpt slab.pt2 --modifier symmetric_neighbour_caps
    python tools/benchmark_lammps.py --slab66 --artifact slab.pt2 \
        --comm shell --ranks 1 --threads 2 --steps 10     # GemNet-OC on the OC20-shaped slab (edge messages: comm shell)

Compiles the default NequIP (4 layers, l_max 2, 32 features, r_max 5) and/or
MACE (2 layers, 128x0e+128x1o, max_ell 3, correlation 3, r_max 5) for Cu with
AOTInductor unless --artifact is given, then runs NVE in LAMMPS and reports
timesteps/s, the Pair share of LAMMPS's timing breakdown, the share of Pair
time spent outside the model (graph building and copies), and, from
pair_style mlip's own accounting, the work per atom-step: the CPU time of all
ranks in the pair style outside halo exchanges, divided by atoms and steps
(oversubscribed ranks spin while they wait for each other, so their wall and
CPU times overstate the work; the exchanges are timed apart and reported
beside it), its efficiency against one rank (work on 1 rank / work on P
ranks), and the peak memory of a rank. ``--coulomb R`` also compiles the
NequIP with predicted charges and a damped shifted Coulomb term at a
long-range cutoff of R Å (uniform charge correction: two evaluations per step
on several ranks) and reports its time per step against the plain model's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import mlipkit
from mlipkit.compile import compile_model
from mlipkit.compile.metadata import EXTENSIONS

DECK = """
units metal
atom_style atomic
lattice fcc 3.61
region box block 0 {cells} 0 {cells} 0 {cells}
create_box 1 box
create_atoms 1 box
mass 1 63.546
pair_style mlip comm {comm}
pair_coeff * * {artifact} Cu
velocity all create 300.0 87287 mom yes rot yes
fix integrate all nve
timestep 0.001
thermo {steps}
run {steps}
"""


def default_artifact(
    directory: Path, model_name: str, dtype: torch.dtype, mode: str, coulomb_cutoff: float | None = None
) -> Path:
    options = {}
    if coulomb_cutoff is not None:
        options = dict(use_coulomb_term=True, coulomb={"long_range_cutoff": coulomb_cutoff})
    model = mlipkit.build_model(model_name, type_names=["Cu"], r_max=5.0, seed=0, dtype=dtype, per_type_energy_shifts=-3.5, **options)
    if options:
        # the untrained readout's charges (a few tenths of e) make thousands of eV in a lattice, and the crystal flies
        # apart within the run: a tenth of them keeps the dynamics sane (the cost is the same)
        with torch.no_grad():
            model.partial_charges.readout.out.weight.mul_(0.1)
    path = directory / f"default_{model_name}_cu{'_coulomb' if options else ''}{EXTENSIONS[mode]}"
    started = time.perf_counter()
    compile_model(model, path, mode=mode)
    what = f"with a Coulomb term at {coulomb_cutoff} Å " if options else ""
    print(f"compiled the default {model_name} {what}({str(dtype).removeprefix('torch.')}, {mode}) in {time.perf_counter() - started:.0f} s")
    return path


#: the OC20 shape (tools/benchmark_peers.py's slab66: Cu(111) 4 x 4 x 4 with CO, 8 Å of vacuum) for models of C, O and Cu
SLAB_DECK = """
units metal
atom_style atomic
read_data {data}
pair_style mlip comm {comm}
pair_coeff * * {artifact} C O Cu
velocity all create 300.0 87287 mom yes rot yes
fix integrate all nve
timestep 0.001
thermo {steps}
run {steps}
"""


def slab_data(directory: Path) -> Path:
    from ase.io import write
    from benchmark_peers import structure

    path = directory / "slab66.data"
    write(path, structure("slab66"), format="lammps-data", specorder=["C", "O", "Cu"], masses=True)
    return path


def run(artifact: Path, cells: int | None, ranks: int, steps: int, threads: int, comm: str, directory: Path) -> dict[str, float]:
    """One LAMMPS run: fcc Cu of ``cells`` per edge, or (``cells`` None) the 66-atom slab."""
    deck = directory / f"bench_{cells or 'slab66'}_{ranks}.in"
    if cells is None:
        deck.write_text(SLAB_DECK.format(data=slab_data(directory), artifact=artifact, steps=steps, comm=comm))
    else:
        deck.write_text(DECK.format(cells=cells, artifact=artifact, steps=steps, comm=comm))
    command = [str(Path(sys.executable).parent / "lmp"), "-in", str(deck), "-log", "none", "-nocite"]
    if ranks > 1:
        command = [str(Path(sys.executable).parent / "mpirun"), "-np", str(ranks)] + command
    finished = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    if finished.returncode != 0:
        raise SystemExit(f"benchmark_lammps: LAMMPS failed on {deck}:\n{(finished.stdout + finished.stderr)[-2000:]}")
    output = finished.stdout
    loop = re.search(r"Loop time of ([\d.e+-]+) on (\d+) procs for (\d+) steps with (\d+) atoms", output)
    pair = re.search(r"^Pair\s*\|.*\|\s*([\d.]+)\s*$", output, re.MULTILINE)
    model = re.search(r"graph building and copies ([\d.]+)%", output)
    work = re.search(r"work per evaluation, all ranks together: ([\d.e+-]+) CPU s outside halo exchanges, ([\d.e+-]+) "
                     r"CPU s in them; graph nodes of a rank: (\d+) owned \+ (\d+) others \(mean\); peak memory of a rank "
                     r"(\d+) MB", output)
    seconds = float(loop.group(1))
    atoms = int(loop.group(4))
    return {
        "atoms": atoms,
        "steps_per_second": int(loop.group(3)) / seconds,
        "pair_share": float(pair.group(1)),
        "outside_model_share": float(model.group(1)),
        "work_per_atom_step_us": 1e6 * float(work.group(1)) / atoms,
        "exchange_per_atom_step_us": 1e6 * float(work.group(2)) / atoms,
        "owned_nodes": int(work.group(3)),
        "ghost_nodes": int(work.group(4)),
        "peak_rank_megabytes": int(work.group(5)),
    }


def subdomain_efficiency(artifact: Path, cells: int, ranks_per_edge: int) -> str:
    """One rank's halo graph timed alone, on one thread: what a rank of ranks_per_edge**3 costs without sharing cores.

    The owned atoms are one of the box's ranks_per_edge**3 equal blocks, the others the atoms their edges reach
    (edges into owned atoms only, as pair_style mlip builds them with comm halo); returns a table row with the
    whole box's time per atom, the block's time per owned atom and their ratio (the work efficiency).
    """
    import numpy as np
    from ase.build import bulk

    from mlipkit.compile import Artifact
    from mlipkit.data import keys
    from mlipkit.data.extxyz import Configuration
    from mlipkit.data.graph import compute_edge_vectors, graph_from_configuration

    torch.set_num_threads(1)
    model = Artifact(artifact)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(cells)
    atoms.rattle(0.05, seed=1)
    configuration = Configuration(symbols=atoms.get_chemical_symbols(), positions=atoms.positions,
                                  cell=atoms.cell.array, pbc=np.array([True] * 3))
    graph = graph_from_configuration(configuration, model.metadata.r_max, model.metadata.type_names, model.dtype)
    types, edges, vectors = graph[keys.ATOM_TYPES], graph[keys.EDGE_INDEX], compute_edge_vectors(graph).to(model.dtype)

    def seconds(types, edges, vectors, mask):
        model.run(types, edges, vectors, mask)
        best = float("inf")
        for _ in range(2):
            started = time.perf_counter()
            model.run(types, edges, vectors, mask)
            best = min(best, time.perf_counter() - started)
        return best

    num_atoms = len(atoms)
    whole = seconds(types, edges, vectors, torch.ones(num_atoms, dtype=torch.bool)) / num_atoms
    owned = np.all(atoms.get_scaled_positions() % 1.0 < 1.0 / ranks_per_edge, axis=1)
    into_owned = torch.from_numpy(owned[edges[1].numpy()])
    block_edges, block_vectors = edges[:, into_owned], vectors[into_owned]
    owned_atoms = np.nonzero(owned)[0]
    others = np.setdiff1d(np.unique(block_edges[0].numpy()), owned_atoms)
    nodes = np.concatenate([owned_atoms, others])
    node_of = np.full(num_atoms, -1)
    node_of[nodes] = np.arange(len(nodes))
    block_edges = torch.from_numpy(node_of[block_edges.numpy()])
    by_receiver = torch.argsort(block_edges[1], stable=True)
    mask = torch.arange(len(nodes)) < len(owned_atoms)
    block = seconds(types[nodes], block_edges[:, by_receiver].contiguous(), block_vectors[by_receiver].contiguous(), mask)
    block /= len(owned_atoms)
    return (f"| {num_atoms} | 1/{ranks_per_edge ** 3} | {len(owned_atoms):,} + {len(others):,} | {1e6 * whole:.0f} | "
            f"{1e6 * block:.0f} | {whole / block:.2f} |")


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Speed-up over one rank, work efficiency and peak memory of a rank against the ranks, a line per model, size, comm.

    Ranks beyond the core count time-share the cores, so their speed-up says little; the work efficiency (one
    rank's CPU time in the pair style over all ranks' together) says whether ranks repeat each other's work.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, efficiency, memory) = plt.subplots(1, 3, figsize=(14, 4))
    series: dict[tuple, list[dict]] = {}
    for row in rows:
        if row["threads"] == 1 and row["comm"] != "-":
            series.setdefault((row["model"], row["atoms"], row["comm"]), []).append(row)
    for (model, atoms, comm), points in series.items():
        one_rank = next((r for r in rows if (r["model"], r["atoms"], r["ranks"], r["threads"]) == (model, atoms, 1, 1)), None)
        if one_rank is None:
            continue
        points = sorted({r["ranks"]: r for r in [one_rank] + points}.values(), key=lambda r: r["ranks"])
        ranks = [r["ranks"] for r in points]
        style = "-o" if comm == "halo" else "--s"
        label = f"{model}, {atoms:,} atoms, comm {comm}"
        speed.plot(ranks, [r["steps_per_second"] / one_rank["steps_per_second"] for r in points], style, label=label)
        efficiency.plot(ranks, [one_rank["work_per_atom_step_us"] / r["work_per_atom_step_us"] for r in points], style, label=label)
        memory.plot(ranks, [r["peak_rank_megabytes"] / 1024 for r in points], style, label=label)
    cores = os.cpu_count() or 1
    speed.axvline(cores, color="grey", lw=0.8, ls=":")
    speed.text(cores, speed.get_ylim()[0], f" {cores} cores", va="bottom", fontsize=8, color="grey")
    speed.set(xscale="log", xlabel="MPI ranks (1 thread each)", ylabel="timesteps/s over 1 rank", title="Speed-up")
    efficiency.set(xscale="log", xlabel="MPI ranks", ylabel="work of 1 rank / work of all ranks",
                   title="Work efficiency (1: no repeated work)", ylim=(0, 1.1))
    memory.set(xscale="log", xlabel="MPI ranks", ylabel="peak memory of a rank (GB)", title="Memory per rank", ylim=(0, None))
    for axes in (speed, efficiency, memory):
        ticks = sorted({r["ranks"] for r in rows})
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.minorticks_off()
        axes.grid(alpha=0.3)
    efficiency.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifact", type=Path, help="a compiled Cu model (default: compile the default models)")
    parser.add_argument("--models", nargs="+", choices=["nequip", "mace"], default=["nequip"])
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 8], help="fcc cells per edge (4: 256 atoms, 8: 2048)")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="OpenMP threads per rank (each value in turn)")
    parser.add_argument("--comm", nargs="+", choices=["halo", "shell"], default=["halo"], help="pair_style mlip comm modes")
    parser.add_argument("--shell-max-ranks", type=int, default=4,
                        help="leave out shell runs on more ranks (each rank holds its whole receptive field: 8 ranks of "
                             "6,912 atoms need more than 24 GB)")
    parser.add_argument("--slab66", action="store_true",
                        help="instead of fcc Cu: the 66-atom Cu(111) slab with CO (OC20's shape); --artifact a C/O/Cu model")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--mode", choices=["aotinductor", "torchscript"], default="aotinductor")
    parser.add_argument("--coulomb", type=float, metavar="CUTOFF", help="also time the NequIP with a Coulomb term at this cutoff")
    parser.add_argument("--subdomain", type=int, metavar="RANKS_PER_EDGE",
                        help="instead of LAMMPS: time one rank's halo graph (one of RANKS_PER_EDGE**3 blocks of the box) "
                             "alone on one thread against the whole box, the work efficiency without shared cores")
    parser.add_argument("--json", type=Path, help="also write the rows of the table here")
    parser.add_argument("--plot", type=Path, help="draw speed-up and memory per rank against the ranks into this PNG")
    parser.add_argument("--plot-from", type=Path, metavar="JSON", help="only draw --plot from the rows of an earlier --json")
    arguments = parser.parse_args()
    if arguments.slab66 and not arguments.artifact:
        parser.error("--slab66 needs --artifact: a model of C, O and Cu")
    if arguments.plot_from:
        plot_scaling(json.loads(arguments.plot_from.read_text())["rows"], arguments.plot or arguments.plot_from.with_suffix(".png"))
        return
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        dtype = getattr(torch, arguments.dtype)
        if arguments.artifact:
            artifacts = {"given": arguments.artifact}
        else:
            artifacts = {name: default_artifact(directory, name, dtype, arguments.mode) for name in arguments.models}
        if arguments.coulomb is not None:
            artifacts["nequip+coulomb"] = default_artifact(directory, "nequip", dtype, arguments.mode, arguments.coulomb)
        if arguments.subdomain:
            print("| model | atoms | block | owned + others | whole box (µs/atom) | block (µs/owned atom) | work efficiency |")
            print("|---|---|---|---|---|---|---|")
            for cells in arguments.sizes:
                for name, artifact in artifacts.items():
                    print(f"| {name} " + subdomain_efficiency(artifact, cells, arguments.subdomain), flush=True)
            return
        print(f"# pair_style mlip on {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
              f"{time.strftime('%Y-%m-%d')}, {arguments.dtype}, {arguments.steps} steps")
        print("| model | atoms | comm | ranks x threads | timesteps/s | vs 1 x 1 | work per atom-step (µs) | work efficiency "
              "| halo exchange per atom-step (µs) | graph nodes of a rank: owned + others | peak memory of a rank (MB) "
              "| Pair % of loop | Pair time outside the model |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for cells in [None] if arguments.slab66 else arguments.sizes:
            for name, artifact in artifacts.items():
                baseline = None
                for comm in arguments.comm:
                    for ranks in arguments.ranks:
                        for threads in arguments.threads:
                            if comm == "shell" and ranks > arguments.shell_max_ranks or ranks == 1 and comm != arguments.comm[0]:
                                continue
                            result = run(artifact.resolve(), cells, ranks, arguments.steps, threads, comm, directory)
                            baseline = baseline or result
                            rows.append(dict(result, model=name, comm=comm if ranks > 1 else "-", ranks=ranks, threads=threads))
                            print(
                                f"| {name} | {result['atoms']} | {comm if ranks > 1 else '-'} | {ranks} x {threads} | "
                                f"{result['steps_per_second']:.3g} | {result['steps_per_second'] / baseline['steps_per_second']:.2f} | "
                                f"{result['work_per_atom_step_us']:.0f} | "
                                f"{baseline['work_per_atom_step_us'] / result['work_per_atom_step_us']:.2f} | "
                                f"{result['exchange_per_atom_step_us']:.1f} | "
                                f"{result['owned_nodes']:,} + {result['ghost_nodes']:,} | {result['peak_rank_megabytes']} | "
                                f"{result['pair_share']:.1f} | {result['outside_model_share']:.1f}% |",
                                flush=True,
                            )
        if arguments.json:
            arguments.json.parent.mkdir(parents=True, exist_ok=True)
            arguments.json.write_text(json.dumps({
                "date": time.strftime("%Y-%m-%d"), "processor": platform.processor() or platform.machine(),
                "cores": os.cpu_count(), "dtype": arguments.dtype, "steps": arguments.steps, "rows": rows,
            }, indent=1))
        if arguments.plot:
            plot_scaling(rows, arguments.plot)


if __name__ == "__main__":
    main()
