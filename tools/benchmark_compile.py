"""Construction and compile time of default models, and speed of the artifact against the eager model.

    .venv/bin/python tools/benchmark_compile.py [--model nequip mace] [--dtype float32 float64]
                                                [--mode aotinductor torchscript] [--profile]

For each model, dtype and mode: builds the model at its default size (NequIP:
num_layers=4, l_max=2, 32 features; MACE: 2 interactions, 128x0e+128x1o,
max_ell=3, correlation 3; one species Cu, r_max=5), saves it, runs
``mlip-compile`` on it (printing every stage) and times energy+forces calls on
a 256-atom fcc Cu cell with the eager model and with the artifact (median of
repeated calls, after warm-up). ``--profile`` prints where the eager model's
time goes, by operator, instead of compiling. tools/benchmark_peers.py puts
these numbers beside nequip's and mace-torch's.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from ase.build import bulk

import mlipkit
import mlipkit.models
from mlipkit.compile import Artifact, compile_checkpoint
from mlipkit.data import graph_from_atoms, keys
from mlipkit.data.graph import compute_edge_vectors


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def print_profile(call, title: str, calls: int = 3) -> None:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        for _ in range(calls):
            call()
    print(f"\n{title}: self CPU time by operator over {calls} calls")
    print(profile.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", default=["nequip"], choices=sorted(mlipkit.models.REGISTRY))
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--mode", nargs="+", default=["aotinductor"], choices=["aotinductor", "torchscript"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--profile", action="store_true",
                        help="print where the eager model's time goes (torch.profiler, by operator) instead of compiling")
    arguments = parser.parse_args()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=0)
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        for model_name in arguments.model:
            for dtype_name in arguments.dtype:
                dtype = getattr(torch, dtype_name)
                start = time.perf_counter()
                model = mlipkit.build_model(model_name, dtype=dtype, type_names=["Cu"], r_max=5.0, seed=0)
                build_s = time.perf_counter() - start
                checkpoint = mlipkit.save_checkpoint(model, Path(directory) / f"{model_name}_{dtype_name}.ckpt")
                graph = graph_from_atoms(atoms, model.r_max, model.type_names, dtype)
                inputs = (graph[keys.ATOM_TYPES], graph[keys.EDGE_INDEX], compute_edge_vectors(graph))
                eager_ms = median_ms(lambda: model(graph)[keys.FORCES], arguments.repeats)
                if arguments.profile:
                    print_profile(lambda: model(graph)[keys.FORCES], f"{model_name} {dtype_name} eager {eager_ms:.0f} ms")
                    continue
                for mode in arguments.mode:
                    output = Path(directory) / f"{model_name}_{dtype_name}{'.pt2' if mode == 'aotinductor' else '.pt'}"
                    print(f"mlip-compile default {model_name}, {dtype_name}, {mode}:")
                    start = time.perf_counter()
                    compile_checkpoint(checkpoint, output, mode=mode, log=print)
                    compile_s = time.perf_counter() - start
                    artifact = Artifact(output)
                    compiled_ms = median_ms(lambda: artifact.run(*inputs), arguments.repeats)
                    rows.append((model_name, dtype_name, mode, build_s, compile_s, eager_ms, compiled_ms))
    print(f"\n256-atom Cu cell ({inputs[1].shape[1]} edges), energy+forces, median of {arguments.repeats} calls, "
          f"{torch.get_num_threads()} threads")
    print(f"{'model':<7} {'dtype':<8} {'mode':<12} {'build s':>8} {'compile s':>10} {'eager ms':>10} {'artifact ms':>12} {'speed-up':>9}")
    for model_name, dtype_name, mode, build_s, compile_s, eager_ms, compiled_ms in rows:
        print(f"{model_name:<7} {dtype_name:<8} {mode:<12} {build_s:>8.2f} {compile_s:>10.1f} {eager_ms:>10.1f} "
              f"{compiled_ms:>12.1f} {eager_ms / compiled_ms:>8.2f}x")


if __name__ == "__main__":
    main()
