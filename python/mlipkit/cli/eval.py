"""``mlip-eval model.ckpt data.xyz``: errors of a trained model on labelled data."""

from __future__ import annotations

import argparse
import sys

from mlipkit.train.evaluation import evaluate_checkpoint

UNITS = {
    "energy": ("meV/atom", 1000.0),
    "forces": ("meV/Å", 1000.0),
    "stress": ("meV/Å³", 1000.0),
    "charges": ("me", 1000.0),
    "total_charge": ("me", 1000.0),
    "dipole": ("me·Å", 1000.0),
}


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlip-eval",
        description="Evaluate a checkpoint on labelled extended-XYZ data: MAE and RMSE of every labelled output.",
        epilog="What it reports (and the calibration of mean-variance models): docs/training.md#evaluating-mlip-eval.",
    )
    parser.add_argument("checkpoint", help="model.ckpt (mlip-train's best.ckpt, or one written by mlip-import)")
    parser.add_argument("data", help="extended-XYZ file with the labels to compare against (the label names of docs/training-config.md's data section)")
    parser.add_argument(
        "--output", help="write the predictions (energy, forces, stress; energy_uncertainty in the info) to this extended-XYZ file"
    )
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args(argv)
    try:
        metrics = evaluate_checkpoint(arguments.checkpoint, arguments.data, arguments.batch_size, arguments.output, arguments.device)
    except (FileNotFoundError, ValueError) as error:
        print(f"mlip-eval: error: {error}", file=sys.stderr)
        return 1
    for output, (unit, factor) in UNITS.items():
        if f"eval_{output}_mae" in metrics:
            print(f"{output:<7} MAE {factor * metrics[f'eval_{output}_mae']:10.3f} {unit:<9} RMSE {factor * metrics[f'eval_{output}_rmse']:10.3f} {unit}")
    if "eval_energy_nll" in metrics:
        print(
            f"energy  NLL {metrics['eval_energy_nll']:10.3f} per structure (energy per atom); mean std "
            f"{1000 * metrics['eval_energy_mean_sigma']:.3f} meV/atom; errors within 1 std "
            f"{100 * metrics['eval_energy_within_1sigma']:.1f}% (Gaussian: 68.3%), within 2 std "
            f"{100 * metrics['eval_energy_within_2sigma']:.1f}% (95.4%)"
        )
    if arguments.output:
        print(f"wrote predictions to {arguments.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
