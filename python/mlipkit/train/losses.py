"""Loss terms per output and the error metrics reported for them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlipkit.data import keys
from mlipkit.models.config import LossConfig

#: graph field each fitted output is compared with
TARGET_FIELDS = {"energy": keys.ENERGY, "forces": keys.FORCES, "stress": keys.STRESS}


def prediction_and_target(output: str, predictions: dict, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened prediction and label of one output; energies per atom."""
    field = TARGET_FIELDS[output]
    predicted, target = predictions[field], graph[field]
    if output == "energy":
        num_atoms = graph[keys.NUM_ATOMS].to(predicted.dtype)
        predicted, target = predicted / num_atoms, target / num_atoms
    return predicted.reshape(-1), target.reshape(-1)


def loss_term(predicted: torch.Tensor, target: torch.Tensor, loss: LossConfig) -> torch.Tensor:
    if loss.name == "mse":
        return F.mse_loss(predicted, target)
    if loss.name == "l1":
        return F.l1_loss(predicted, target)
    if loss.name == "huber":
        return F.huber_loss(predicted, target, delta=loss.huber_delta)
    raise ValueError(f"loss '{loss.name}' cannot be computed for this output")


def total_loss(predictions: dict, graph: dict, losses: dict[str, LossConfig]) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the configured terms, and each term's value."""
    terms = {}
    total = 0.0
    for output, loss in losses.items():
        term = loss_term(*prediction_and_target(output, predictions, graph), loss)
        terms[output] = float(term.detach())
        total = total + loss.weight * term
    return total, terms


class ErrorAccumulator:
    """Sums of absolute and squared errors per output over an epoch: MAE and RMSE."""

    def __init__(self) -> None:
        self.absolute: dict[str, float] = {}
        self.squared: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def add(self, predictions: dict, graph: dict, outputs) -> None:
        for output in outputs:
            predicted, target = prediction_and_target(output, predictions, graph)
            difference = (predicted.detach() - target).double()
            self.absolute[output] = self.absolute.get(output, 0.0) + float(difference.abs().sum())
            self.squared[output] = self.squared.get(output, 0.0) + float((difference**2).sum())
            self.count[output] = self.count.get(output, 0) + difference.numel()

    def metrics(self, prefix: str) -> dict[str, float]:
        values = {}
        for output, count in self.count.items():
            values[f"{prefix}_{output}_mae"] = self.absolute[output] / count
            values[f"{prefix}_{output}_rmse"] = (self.squared[output] / count) ** 0.5
        return values
