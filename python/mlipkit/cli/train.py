"""``mlip-train config.yaml``: train a model from extended-XYZ data into best.ckpt and last.ckpt."""

from __future__ import annotations

import argparse
import sys

from mlipkit.train import ConfigError, Trainer, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlip-train",
        description="Train an mlipkit model from a YAML config.",
        epilog="How training works and its defaults: docs/training.md. Every key of a config: docs/training-config.md. "
        "Model options: docs/models/nequip.md, docs/models/mace.md, docs/models/gemnet-oc.md.",
    )
    parser.add_argument("config", help="training config (YAML); every key is in docs/training-config.md")
    parser.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.ckpt")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    arguments = parser.parse_args(argv)
    try:
        config = load_config(arguments.config)
        result = Trainer(config, progress=not arguments.no_progress).run(resume=arguments.resume)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"mlip-train: error: {error}", file=sys.stderr)
        if isinstance(error, ConfigError):
            print("mlip-train: every key of a config, with its default: docs/training-config.md", file=sys.stderr)
        return 1
    print(f"best checkpoint: {result.best_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
