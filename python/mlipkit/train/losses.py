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
    "charges": keys.CHARGES,
    "total_charge": keys.TOTAL_CHARGE,
    "dipole": keys.DIPOLE,
}
#: outputs whose prediction is another field than their label: the total charge is fitted by the raw charges'
#: sum (after the correction it equals the label by construction, as in mlip)
PREDICTION_FIELDS = {"total_charge": keys.RAW_TOTAL_CHARGE}
#: outputs of models that predict partial charges
CHARGE_OUTPUTS = ("charges", "total_charge", "dipole")


def prediction_and_target(output: str, predictions: dict, graph: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Flattened prediction and label of one output; energies per atom."""
    field = TARGET_FIELDS[output]
    predicted, target = predictions[PREDICTION_FIELDS.get(output, field)], graph[field]
    if output == "energy":
        num_atoms = graph[keys.NUM_ATOMS].to(predicted.dtype)
        predicted, target = predicted / num_atoms, target / num_atoms
    return predicted.reshape(-1), target.reshape(-1)


def energy_variance(predictions: dict) -> torch.Tensor | None:
    """Variance of the per-atom energy of mean-variance models (the square of their std output), else None."""
    std = predictions.get(keys.ENERGY_UNCERTAINTY)
    return None if std is None else std.reshape(-1) ** 2


def loss_term(
    predicted: torch.Tensor,
    target: torch.Tensor,
    loss: LossConfig,
    count: int | None = None,
    variance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of the elementwise loss over ``count`` (default: the number of elements, i.e. the mean).

    Distributed training divides each rank's sum by the element count of the
    whole batch, so that the ranks' gradients add up to the one-process gradient.
    ``gaussian_nll`` is torch's GaussianNLLLoss (variance clamped at
    ``gaussian_nll_eps`` in the loss only), and needs the prediction's variance.
    """
    count = predicted.numel() if count is None else count
    if loss.name == "mse":
        return F.mse_loss(predicted, target, reduction="sum") / count
    if loss.name == "l1":
        return F.l1_loss(predicted, target, reduction="sum") / count
    if loss.name == "huber":
        return F.huber_loss(predicted, target, reduction="sum", delta=loss.huber_delta) / count
    if loss.name == "gaussian_nll" and variance is not None:
        return F.gaussian_nll_loss(predicted, target, variance, eps=loss.gaussian_nll_eps, reduction="sum") / count
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
        variance = energy_variance(predictions) if output == "energy" else None
        term = loss_term(*prediction_and_target(output, predictions, graph), loss, (counts or {}).get(output), variance)
        terms[output] = float(term.detach())
        total = total + loss.weight * term
    return total, terms


class ErrorAccumulator:
    """Sums over an epoch per output: absolute and squared errors (MAE, RMSE); for energies with a predicted
    std also the Gaussian negative log-likelihood, the mean std and how many errors fall within 1 and 2 std
    (calibration)."""

    def __init__(self) -> None:
        self.sums: dict[tuple[str, str], float] = {}

    def _add(self, output: str, statistic: str, value: float) -> None:
        self.sums[output, statistic] = self.sums.get((output, statistic), 0.0) + value

    def add(self, predictions: dict, graph: dict, outputs) -> None:
        for output in outputs:
            predicted, target = prediction_and_target(output, predictions, graph)
            difference = (predicted.detach() - target).double()
            self._add(output, "absolute", float(difference.abs().sum()))
            self._add(output, "squared", float((difference**2).sum()))
            self._add(output, "count", difference.numel())
            variance = energy_variance(predictions) if output == "energy" else None
            if variance is not None:
                variance = variance.detach().double()
                self._add(output, "nll", float((0.5 * torch.log(2 * torch.pi * variance) + difference**2 / (2 * variance)).sum()))
                self._add(output, "mean_sigma", float(variance.sqrt().sum()))
                self._add(output, "within_1sigma", float((difference.abs() <= variance.sqrt()).sum()))
                self._add(output, "within_2sigma", float((difference.abs() <= 2 * variance.sqrt()).sum()))

    def all_reduce(self) -> None:
        """Sum the accumulated errors over the ranks of a distributed run."""
        import torch.distributed as dist

        names = sorted(self.sums)
        sums = torch.tensor([self.sums[name] for name in names], dtype=torch.float64)
        dist.all_reduce(sums)
        self.sums = dict(zip(names, sums.tolist()))

    def metrics(self, prefix: str) -> dict[str, float]:
        values = {}
        for (output, statistic), total in self.sums.items():
            count = self.sums[output, "count"]
            if statistic == "absolute":
                values[f"{prefix}_{output}_mae"] = total / count
            elif statistic == "squared":
                values[f"{prefix}_{output}_rmse"] = (total / count) ** 0.5
            elif statistic != "count":
                values[f"{prefix}_{output}_{statistic}"] = total / count
        return values
