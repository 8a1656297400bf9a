"""Loss terms per output and the error metrics reported for them."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mlipkit.data import keys
from mlipkit.models.config import LossConfig

#: graph field each fitted output is compared with (the extra heads' fields carry their names)
TARGET_FIELDS = {
    "energy": keys.ENERGY,
    "forces": keys.FORCES,
    "stress": keys.STRESS,
    "graph_scalars": keys.GRAPH_SCALARS,
    "graph_vectors": keys.GRAPH_VECTORS,
    "node_scalars": keys.NODE_SCALARS,
    "node_vectors": keys.NODE_VECTORS,
}


def prediction_and_target(output: str, predictions: dict, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened prediction and label of one output; energies per atom."""
    field = TARGET_FIELDS[output]
    predicted, target = predictions[field], graph[field]
    if output == "energy":
        num_atoms = graph[keys.NUM_ATOMS].to(predicted.dtype)
        predicted, target = predicted / num_atoms, target / num_atoms
    return predicted.reshape(-1), target.reshape(-1)


def loss_term(predicted: torch.Tensor, target: torch.Tensor, loss: LossConfig, count: int | None = None) -> torch.Tensor:
    """Sum of the elementwise loss over ``count`` (default: the number of elements, i.e. the mean).

    Distributed training divides each rank's sum by the element count of the
    whole batch, so that the ranks' gradients add up to the one-process gradient.
    """
    count = predicted.numel() if count is None else count
    if loss.name == "mse":
        return F.mse_loss(predicted, target, reduction="sum") / count
    if loss.name == "l1":
        return F.l1_loss(predicted, target, reduction="sum") / count
    if loss.name == "huber":
        return F.huber_loss(predicted, target, reduction="sum", delta=loss.huber_delta) / count
    raise ValueError(f"loss '{loss.name}' cannot be computed for this output")


def label_count(output: str, graph: dict) -> int:
    """How many loss elements ``output`` has in a graph or batch."""
    return int(graph[TARGET_FIELDS[output]].numel())


def total_loss(
    predictions: dict, graph: dict, losses: dict[str, LossConfig], counts: dict[str, int] | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the configured terms, and each term's value (``counts``: see loss_term)."""
    terms = {}
    total = 0.0
    for output, loss in losses.items():
        term = loss_term(*prediction_and_target(output, predictions, graph), loss, (counts or {}).get(output))
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

    def all_reduce(self) -> None:
        """Sum the accumulated errors over the ranks of a distributed run."""
        import torch.distributed as dist

        outputs = sorted(self.count)
        sums = torch.tensor([[self.absolute[o], self.squared[o], self.count[o]] for o in outputs], dtype=torch.float64)
        dist.all_reduce(sums)
        for output, (absolute, squared, count) in zip(outputs, sums.tolist()):
            self.absolute[output], self.squared[output], self.count[output] = absolute, squared, int(count)

    def metrics(self, prefix: str) -> dict[str, float]:
        values = {}
        for output, count in self.count.items():
            values[f"{prefix}_{output}_mae"] = self.absolute[output] / count
            values[f"{prefix}_{output}_rmse"] = (self.squared[output] / count) ** 0.5
        return values
