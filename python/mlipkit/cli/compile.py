"""``mlip-compile model.ckpt out.pt2``: modifiers, export, verification, timings."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from mlipkit.compile.artifact import mode_of_path
from mlipkit.compile.export import CompileError, compile_checkpoint
from mlipkit.compile.metadata import EXTENSIONS, TARGET_OUTPUTS
from mlipkit.compile.modifiers import MODIFIERS, ModifierError


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlip-compile",
        description="Compile an mlipkit checkpoint into a verified artifact for LAMMPS, ASE and C++.",
        epilog="Targets, modifiers and the artifact contract: docs/compiling.md. Running the artifact in LAMMPS: "
        "docs/lammps/pair_style.md; in C++: docs/cpp.md.",
    )
    parser.add_argument(
        "checkpoint", nargs="?", help="model.ckpt written by mlipkit, or a model file mlip-import reads (imported first)"
    )
    parser.add_argument("output", nargs="?", help="artifact path: .pt2 (AOTInductor) or .pt (TorchScript)")
    parser.add_argument("--mode", choices=list(EXTENSIONS), help="export route (default: from the output's extension)")
    parser.add_argument("--dtype", choices=["float32", "float64"], help="precision (default: the checkpoint's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--target",
        choices=list(TARGET_OUTPUTS),
        default="lammps",
        help="outputs: lammps = per-atom energies + edge forces (callers derive forces, virial, "
        "per-atom virial); ase = also energy, forces, virial, per-atom virials; energy = per-atom energies only",
    )
    parser.add_argument(
        "--modifier",
        action="append",
        default=[],
        metavar="NAME[:{PARAMS}]",
        help="apply a modifier before export (repeatable, in order); see --list-modifiers and docs/compiling.md#modifiers",
    )
    parser.add_argument("--list-modifiers", action="store_true", help="list the modifiers and exit")
    parser.add_argument("--run-arguments", metavar="CONFIG", help="a mace_run_train state-dict checkpoint's arguments (see mlip-import)")
    return parser


def imported_checkpoint(source: str, run_arguments: str | None, directory: Path) -> str:
    """``source`` itself if it is an mlipkit checkpoint, else the checkpoint ``mlip-import`` makes of it."""
    from mlipkit.importers import import_checkpoint
    from mlipkit.models.checkpoint import NotACheckpoint, read_checkpoint

    try:
        read_checkpoint(source)
        return source
    except NotACheckpoint:
        pass
    imported = import_checkpoint(source, directory / "imported.ckpt", run_arguments=run_arguments)
    print(f"imported {source} ({imported.imported_from['format']}, {imported.imported_from['source_class']})")
    return str(directory / "imported.ckpt")


def main(argv: list[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    if arguments.list_modifiers:
        width = max(len(name) for name in MODIFIERS)
        for name, modifier in MODIFIERS.items():
            print(f"{name:<{width}}  {modifier.summary}")
        return 0
    if not arguments.checkpoint or not arguments.output:
        parser().error("give a checkpoint and an output path (or --list-modifiers)")
    try:
        mode = arguments.mode or mode_of_path(Path(arguments.output))
        print(f"mlip-compile {arguments.checkpoint} -> {arguments.output} ({mode}, target {arguments.target})")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as directory:
            checkpoint = imported_checkpoint(arguments.checkpoint, arguments.run_arguments, Path(directory))
            report = compile_checkpoint(
                checkpoint,
                arguments.output,
                mode=mode,
                dtype=getattr(torch, arguments.dtype) if arguments.dtype else None,
                device=arguments.device,
                target=arguments.target,
                modifiers=arguments.modifier,
                log=print,
            )
    except (CompileError, ModifierError, ValueError, FileNotFoundError) as error:
        print(f"mlip-compile: error: {error}", file=sys.stderr)
        return 1
    checks = ", ".join(f"{name} {difference:.1e}" for name, difference in report.verification.items())
    print(f"verified against the eager model (max relative difference: {checks})")
    print(f"wrote {report.path} ({report.metadata.dtype}, {report.metadata.device}) in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
