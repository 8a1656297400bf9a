"""``mlip-info out.pt2``: print an artifact's metadata."""

from __future__ import annotations

import argparse
import json
import sys

from mlipkit.compile.artifact import read_metadata


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlip-info", description="Print the metadata of an mlipkit artifact.")
    parser.add_argument("artifact", help=".pt2 or .pt file written by mlip-compile")
    parser.add_argument("--json", action="store_true", help="print JSON instead of aligned text")
    arguments = parser.parse_args(argv)
    try:
        metadata = read_metadata(arguments.artifact)
    except (ValueError, FileNotFoundError) as error:
        print(f"mlip-info: error: {error}", file=sys.stderr)
        return 1
    fields = metadata.model_dump()
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
