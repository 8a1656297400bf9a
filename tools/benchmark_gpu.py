"""Energy and forces of NequIP and MACE on a GPU: the reference path (e3nn and torch ops) against mlipkit's
device kernels, float32, Cu supercells from 256 to about 50,000 atoms.

    python tools/benchmark_gpu.py --output out/gpu            # on a GPU machine (tools/gpu_check.sh runs it)
    python tools/benchmark_gpu.py --device cpu --repeats 8    # a dry run of the script on the CPU (tiny cells)

Each cell is timed as the median of --calls calls after two warm-up calls (the device synchronised around
each), its peak memory read from the device allocator (the process's peak resident memory on the CPU).
Models are benchmark_peers.py's (same options, same r_max), built once per path with the same weights; a size
that does not fit in the GPU's memory is reported as such. Writes benchmark.json and benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchmark_peers import MLIPKIT_OPTIONS, R_MAX, REFERENCE_PATH  # noqa: E402

#: supercell repeats of the 4-atom cubic Cu cell: 256, 2,048, 10,976 and 48,668 atoms
GPU_REPEATS = (4, 8, 14, 23)
#: the dry run on the CPU: 32 and 108 atoms
CPU_REPEATS = (2, 3)
PATHS = {"reference": REFERENCE_PATH, "kernels": {"nequip": {}, "mace": {}}}


def build(model_name: str, path: str, dtype: torch.dtype, device: str):
    import mlipkit

    options = dict(PATHS[path][model_name], r_max=R_MAX, avg_num_neighbours=10.0, **MLIPKIT_OPTIONS[model_name])
    return mlipkit.build_model(model_name, dtype=dtype, type_names=["Cu"], seed=0, **options).eval().to(device)


def graph_on(repeats: int, dtype: torch.dtype, device: str) -> dict:
    from mlipkit.data import graph_from_atoms

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeats,) * 3)
    atoms.rattle(0.05, seed=0)
    graph = graph_from_atoms(atoms, R_MAX, ["Cu"], dtype)
    return {name: value.to(device) for name, value in graph.items()}


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_cell(model, graph: dict, device: str, calls: int) -> dict:
    """Median seconds of an energy+forces call and the peak memory of those calls."""
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for call in range(calls + 2):
        synchronize(device)
        start = time.perf_counter()
        results = model(graph)
        results["forces"].sum().item()
        synchronize(device)
        if call >= 2:
            seconds.append(time.perf_counter() - start)
        del results
    return {"seconds": statistics.median(seconds), "peak_mb": peak_memory_mb(device)}


def run(models: list[str], repeats: tuple[int, ...], device: str, calls: int) -> list[dict]:
    dtype = torch.float32
    rows = []
    for model_name in models:
        built = {path: build(model_name, path, dtype, device) for path in PATHS}
        built["kernels"].load_state_dict(built["reference"].state_dict())
        for repeat in repeats:
            graph = graph_on(repeat, dtype, device)
            num_atoms, num_edges = int(graph["positions"].shape[0]), int(graph["edge_index"].shape[1])
            for path, model in built.items():
                row = {"model": model_name, "path": path, "atoms": num_atoms, "edges": num_edges}
                try:
                    row.update(time_cell(model, graph, device, calls))
                    row["atom_steps_per_s"] = num_atoms / row["seconds"]
                    row["mb_per_atom"] = row["peak_mb"] / num_atoms
                except torch.OutOfMemoryError:
                    row["error"] = "out of memory"
                    torch.cuda.empty_cache()
                rows.append(row)
                print(json.dumps(row), flush=True)
            del graph
    return rows


def markdown(rows: list[dict], machine: str) -> str:
    lines = [
        f"{machine}; float32; energy + forces; median of the timed calls; memory: peak allocated during the calls "
        "(weights and graph included)",
        "",
        "| model | atoms | edges | reference ms | kernels ms | speed-up | kernels atom-steps/s | reference MB/atom | kernels MB/atom |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    cells = {(row["model"], row["atoms"], row["path"]): row for row in rows}
    for model, atoms in sorted({(row["model"], row["atoms"]) for row in rows}):
        reference, kernels = cells[(model, atoms, "reference")], cells[(model, atoms, "kernels")]

        def milliseconds(row):
            return f"{row['seconds'] * 1e3:,.1f}" if "seconds" in row else row["error"]

        def per_atom(row):
            return f"{row['mb_per_atom']:.3f}" if "seconds" in row else "-"

        speedup = f"{reference['seconds'] / kernels['seconds']:.2f}" if "seconds" in reference and "seconds" in kernels else "-"
        throughput = f"{kernels['atom_steps_per_s']:,.0f}" if "seconds" in kernels else "-"
        lines.append(
            f"| {model} | {atoms:,} | {kernels['edges']:,} | {milliseconds(reference)} | {milliseconds(kernels)} | {speedup} "
            f"| {throughput} | {per_atom(reference)} | {per_atom(kernels)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--models", nargs="+", default=["nequip", "mace"], choices=["nequip", "mace"])
    parser.add_argument("--repeats", nargs="+", type=int, help="supercell repeats of the 4-atom Cu cell")
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--output", type=Path, default=Path("out/gpu"))
    arguments = parser.parse_args()
    if arguments.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a GPU and a CUDA build of torch; --device cpu makes a dry run")
    repeats = tuple(arguments.repeats or (GPU_REPEATS if arguments.device == "cuda" else CPU_REPEATS))
    machine = torch.cuda.get_device_name() if arguments.device == "cuda" else "CPU (dry run)"
    rows = run(arguments.models, repeats, arguments.device, arguments.calls)
    arguments.output.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"), "rows": rows}
    (arguments.output / "benchmark.json").write_text(json.dumps(report, indent=1))
    (arguments.output / "benchmark.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))


if __name__ == "__main__":
    main()
