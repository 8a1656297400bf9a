"""mlip-train's optimisation step equals mace_run_train's: the same weights, frames and recipe give the same loss,
gradients, updated weights and EMA weights (fixture: tools/mace_torch_reference.py --training-step-fixture, written
in mace-torch 0.3.16's environment by its own loss, parameter groups, Adam, gradient clipping and torch_ema)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import mlipkit
from conftest import mace_torch_weights_in_mlipkit_layout, relative_error
from mlipkit.data import batch_graphs
from mlipkit.data.extxyz import Configuration
from mlipkit.data.graph import graph_from_configuration
from mlipkit.models.config import LossConfig
from mlipkit.train.config import OptimizerConfig
from mlipkit.train.losses import total_loss
from mlipkit.train.trainer import WeightAverage, build_optimizer, optimisation_step

FIXTURE = Path(__file__).parent / "data" / "mace_torch_training_step.pt"


@pytest.fixture(scope="module")
def reference():
    return torch.load(FIXTURE, weights_only=True)


def in_mlipkit_layout(model, reference, weights) -> dict[str, torch.Tensor]:
    return mace_torch_weights_in_mlipkit_layout(model, {**reference, "weights": weights})


def mlipkit_model(reference):
    settings = reference["training"]
    model = mlipkit.build_model(
        "mace", type_names=["Cu"], r_max=settings["r_max"], avg_num_neighbours=settings["avg_num_neighbours"],
        per_type_energy_shifts=[reference["atomic_energy"] + reference["shift"]], per_type_energy_scales=[reference["scale"]],
        **reference["options"],
    )
    state = in_mlipkit_layout(model, reference, reference["weights"])
    assert set(state) == {name for name, _ in model.named_parameters()}, "every parameter has a mace-torch twin"
    model.load_state_dict(state, strict=False)
    return model


def batches(reference):
    size = reference["training"]["batch_size"]
    graphs = [
        graph_from_configuration(
            Configuration(symbols=["Cu"] * len(numbers), positions=positions.numpy(), cell=cell.numpy(), pbc=np.ones(3, bool),
                          energy=float(energy), forces=forces.numpy()),
            reference["training"]["r_max"], ["Cu"], torch.float64,
        )
        for numbers, positions, cell, energy, forces in zip(
            reference["numbers"], reference["positions"], reference["cells"], reference["energies"], reference["forces"]
        )
    ]
    return [batch_graphs(graphs[start : start + size]) for start in range(0, len(graphs), size)]


def test_mace_torch_weights_map_one_to_one(reference):
    """The mapping is a signed permutation, so Adam (elementwise, sign-symmetric) takes the same step in either layout."""
    model = mlipkit_model(reference)
    for name, weight in reference["weights"].items():
        probe = {key: torch.zeros_like(value) for key, value in reference["weights"].items()}
        probe[name] = torch.ones_like(weight)
        hits = torch.cat([value.abs().flatten() for value in in_mlipkit_layout(model, reference, probe).values()])
        assert set(hits.unique().tolist()) <= {0.0, 1.0}, name


def test_training_step_equals_mace_run_train(reference):
    settings = reference["training"]
    model = mlipkit_model(reference)
    losses = {"energy": LossConfig(weight=settings["energy_weight"]), "forces": LossConfig(weight=settings["forces_weight"])}
    optimizer = build_optimizer(list(model.parameters()), OptimizerConfig(name="adam", lr=settings["lr"], amsgrad=True), settings["lr"])
    ema = WeightAverage(model, settings["ema_decay"])
    assert len(reference["steps"]) >= 2, "the fixture has several steps (amsgrad's running maximum, the EMA's warm-up)"
    for step, batch in zip(reference["steps"], batches(reference)):
        loss, _ = total_loss(model(batch), batch, losses)
        names, parameters = zip(*model.named_parameters())
        gradients = dict(zip(names, torch.autograd.grad(loss, parameters)))
        expected = in_mlipkit_layout(model, reference, step["gradients"])
        for name, gradient in gradients.items():
            assert relative_error(gradient, expected[name]) <= 1e-10, name
        _, loss = optimisation_step(model, batch, losses, optimizer, ema, settings["clip_grad"])
        assert float(loss) == pytest.approx(step["loss"], rel=1e-12)
        for label, weights, expected in (
            ("weights", dict(model.named_parameters()), in_mlipkit_layout(model, reference, step["weights"])),
            ("EMA weights", dict(ema.module.named_parameters()), in_mlipkit_layout(model, reference, step["ema_weights"])),
        ):
            for name, weight in weights.items():
                assert relative_error(weight, expected[name]) <= 1e-10, f"{label}: {name}"
