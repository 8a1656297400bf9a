"""``mlip-eval``: errors of a trained model on labelled data, and its predictions as extended XYZ."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mlipkit.data import keys
from mlipkit.data.extxyz import read_extxyz
from mlipkit.data.graph import batch_graphs
from mlipkit.models.checkpoint import load_checkpoint
from mlipkit.train.config import HEAD_OPTIONS
from mlipkit.train.losses import CHARGE_OUTPUTS, TARGET_FIELDS, ErrorAccumulator
from mlipkit.train.trainer import training_graphs


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, batch_size: int = 16, output: str | Path | None = None, device: str = "cpu"
) -> dict[str, float]:
    """MAE and RMSE of every output the data labels (energy per atom, forces, stress); for mean-variance
    models also the energy's negative log-likelihood and the fraction of errors within 1 and 2 std."""
    model = load_checkpoint(checkpoint).to(device)
    dtype = next(model.parameters()).dtype
    configurations = [c for c in read_extxyz(data) if not c.is_isolated_atom]
    if not configurations:
        raise ValueError(f"{data}: no structures to evaluate (only isolated-atom references)")
    labelled = [output for output in TARGET_FIELDS if predicts(model, output) and all(has_label(c, output) for c in configurations)]
    graphs = [
        {name: tensor.to(device) for name, tensor in graph.items()}
        for graph in training_graphs(configurations, model, labelled, dtype, str(data))
    ]
    errors = ErrorAccumulator()
    predicted_frames = []
    for start in range(0, len(graphs), batch_size):
        batch = batch_graphs(graphs[start : start + batch_size])
        predictions = model(batch)
        errors.add(predictions, batch, labelled)
        if output is not None:
            predicted_frames += _frames(configurations[start : start + batch_size], predictions, batch)
    if output is not None:
        write(output, predicted_frames, format="extxyz")
    return errors.metrics("eval")


def predicts(model, output: str) -> bool:
    if output in CHARGE_OUTPUTS:
        return model.predicts_charges
    return output not in HEAD_OPTIONS or getattr(model.config, HEAD_OPTIONS[output]) is not None


def has_label(configuration, output: str) -> bool:
    return output in configuration.head_labels if output in HEAD_OPTIONS else getattr(configuration, output) is not None


def _frames(configurations, predictions, batch) -> list[Atoms]:
    """The structures with the model's energy, forces and stress as their calculator results."""
    frames = []
    offsets = np.concatenate([[0], np.cumsum(batch[keys.NUM_ATOMS].cpu().numpy())])
    for index, configuration in enumerate(configurations):
        atoms = Atoms(configuration.symbols, positions=configuration.positions, cell=configuration.cell, pbc=configuration.pbc)
        results = {"energy": float(predictions[keys.ENERGY][index])}
        if keys.FORCES in predictions:
            results["forces"] = predictions[keys.FORCES][offsets[index] : offsets[index + 1]].detach().double().cpu().numpy()
        if keys.STRESS in predictions and configuration.pbc.all():
            results["stress"] = predictions[keys.STRESS][index].detach().double().cpu().numpy()
        if keys.CHARGES in predictions:
            results["charges"] = predictions[keys.CHARGES][offsets[index] : offsets[index + 1]].detach().double().cpu().numpy()
            if not configuration.pbc.any():
                results["dipole"] = predictions[keys.DIPOLE][index].detach().double().cpu().numpy()
        if keys.ENERGY_UNCERTAINTY in predictions:
            atoms.info["energy_uncertainty"] = float(predictions[keys.ENERGY_UNCERTAINTY][index])
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames
