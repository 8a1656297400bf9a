"""``mlip-import SOURCE OUT.ckpt``: another package's trained model as an mlipkit checkpoint."""

from __future__ import annotations

import argparse
import sys
import time

from mlipkit.importers import import_checkpoint
from mlipkit.importers.unpickling import FileHoldsCode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlip-import",
        description="Import a model trained with mace-torch, nequip (0.7-0.19) or fairchem (GemNet-OC) into an mlipkit checkpoint "
        "(read without running anything from the file; the other package need not be installed).",
        epilog="Supported and refused models, and how the weights carry over: docs/importing.md.",
    )
    parser.add_argument(
        "source",
        help="mace-torch .model file, mace_run_train state-dict checkpoint (.pt), nequip-train checkpoint (.ckpt) "
        "or fairchem GemNet-OC checkpoint (.pt)",
    )
    parser.add_argument("output", help="mlipkit checkpoint to write (model.ckpt)")
    parser.add_argument(
        "--run-arguments",
        metavar="CONFIG",
        help="for a mace_run_train state-dict checkpoint: the YAML (or JSON) of the arguments it was trained with",
    )
    parser.add_argument("--no-ema", action="store_true", help="fairchem: the last weights, not the averaged (EMA) ones it predicts with")
    parser.add_argument("--elements", nargs="+", metavar="SYMBOL", help="fairchem: the elements to keep (default: all of its embedding)")
    arguments = parser.parse_args(argv)
    start = time.perf_counter()
    print(f"mlip-import {arguments.source} -> {arguments.output}", flush=True)
    try:
        imported = import_checkpoint(
            arguments.source,
            arguments.output,
            run_arguments=arguments.run_arguments,
            use_ema=not arguments.no_ema,
            type_names=arguments.elements,
        )
    except (FileHoldsCode, ValueError, FileNotFoundError) as error:
        print(f"mlip-import: error: {error}", file=sys.stderr)
        return 1
    summary = imported.summary()
    width = max(len(name) for name in summary)
    for name, value in summary.items():
        print(f"  {name:<{width}}  {value}")
    print(f"wrote {arguments.output} in {time.perf_counter() - start:.1f} s; compile it with mlip-compile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
