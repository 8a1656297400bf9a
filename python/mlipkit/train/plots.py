"""Learning curves and parity plots (PNG), written at the end of a training run."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mlipkit.train.losses import prediction_and_target  # noqa: E402

UNITS = {"energy": "eV/atom", "forces": "eV/Å", "stress": "eV/Å³"}  # extra heads: the units of their labels


def learning_curve(metrics_path: Path, output: Path) -> Path:
    with metrics_path.open() as handle:
        rows = list(csv.DictReader(handle))
    epochs = [int(row["epoch"]) for row in rows]
    figure, axis = plt.subplots(figsize=(6, 4))
    losses = {column: [float(row[column]) for row in rows] for column in ("train_loss", "validation_loss")}
    for column, values in losses.items():
        axis.plot(epochs, values, label=column.replace("_", " "))
    # a negative log-likelihood can be negative: a log scale only for positive losses
    axis.set_yscale("log" if all(value > 0 for values in losses.values() for value in values) else "linear")
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss")
    axis.legend()
    figure.tight_layout()
    figure.savefig(output, dpi=120)
    plt.close(figure)
    return output


def parity_plots(model, graphs, outputs, batch_size: int, directory: Path, name: str) -> list[Path]:
    """Predicted against reference values of each fitted output, with its MAE."""
    from mlipkit.train.trainer import batches

    collected = {output: ([], []) for output in outputs}
    model.eval()
    for batch in batches(graphs, batch_size):
        predictions = model(batch)
        for output in outputs:
            predicted, target = prediction_and_target(output, predictions, batch)
            collected[output][0].append(predicted.detach().double().cpu().numpy())
            collected[output][1].append(target.detach().double().cpu().numpy())
    paths = []
    for output, (predicted, target) in collected.items():
        predicted, target = np.concatenate(predicted), np.concatenate(target)
        figure, axis = plt.subplots(figsize=(4.5, 4.5))
        axis.scatter(target, predicted, s=4, alpha=0.5)
        low, high = float(min(target.min(), predicted.min())), float(max(target.max(), predicted.max()))
        axis.plot([low, high], [low, high], color="black", linewidth=0.8)
        mae = float(np.abs(predicted - target).mean())
        axis.set_title(f"{output} ({name} set): MAE {mae:.3g} {UNITS.get(output, '')}")
        axis.set_xlabel(f"reference ({UNITS.get(output, '')})")
        axis.set_ylabel(f"predicted ({UNITS.get(output, '')})")
        figure.tight_layout()
        path = directory / f"parity_{output}.png"
        figure.savefig(path, dpi=120)
        plt.close(figure)
        paths.append(path)
    return paths
