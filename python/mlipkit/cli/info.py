"""``mlip-info FILE``: what an artifact or a checkpoint holds (an imported checkpoint: where it came from)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from mlipkit.compile.artifact import read_metadata
from mlipkit.models.checkpoint import NotACheckpoint, load_checkpoint, read_checkpoint


def checkpoint_fields(path: str) -> dict[str, Any]:
    contents = read_checkpoint(path)
    model = load_checkpoint(path)
    fields = {
        "kind": "mlipkit checkpoint",
        "model": contents["model_name"],
        "type_names": contents["type_names"],
        "r_max": contents["r_max"],
        "dtype": contents["dtype"],
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "mlipkit_version": contents["mlipkit_version"],
    }
    for name, value in (contents.get("extra") or {}).get("imported_from", {}).items():
        fields[f"imported_from.{name}"] = value
    return fields


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlip-info",
        description="Print the metadata of an mlipkit artifact or checkpoint.",
        epilog="What each field of an artifact means: docs/compiling.md#the-artifact-contract.",
    )
    parser.add_argument("artifact", help=".pt2 or .pt file written by mlip-compile, or a model.ckpt")
    parser.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    arguments = parser.parse_args(argv)
    try:
        try:
            fields = checkpoint_fields(arguments.artifact)
        except NotACheckpoint:
            fields = read_metadata(arguments.artifact).model_dump()
    except (ValueError, FileNotFoundError) as error:
        print(f"mlip-info: error: {error}", file=sys.stderr)
        return 1
    if arguments.json:
        print(json.dumps(fields, indent=2))
        return 0
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        text = " ".join(map(str, value)) if isinstance(value, list) else value
        print(f"{name:<{width}}  {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
