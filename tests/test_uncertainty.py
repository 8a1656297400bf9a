"""Mean-variance models (PhysicsML's mean_var_*): the std output, the gaussian_nll loss, and learning the noise."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from e3nn import o3
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from conftest import STRUCTURES, build_small, evaluate, evaluate_many, relative_error
from mlipkit import _runtime
from mlipkit.calculators import MLIPCalculator
from mlipkit.compile import Artifact
from mlipkit.compile.export import contract_inputs
from mlipkit.data import graph_from_atoms, keys
from mlipkit.models import load_checkpoint
from mlipkit.models.config import LossConfig
from mlipkit.train import Trainer, parse_config
from mlipkit.train.losses import ErrorAccumulator, total_loss

MEAN_VAR = ["mean_var_nequip", "mean_var_mace"]


@pytest.mark.parametrize("name", MEAN_VAR)
def test_std_is_the_absolute_mean_of_scaled_atom_terms(name):
    model = build_small(name, per_type_energy_scales=[0.5, 1.0, 1.5, 2.0, 3.0])
    atoms = STRUCTURES["triclinic"]()
    out = evaluate(model, atoms)
    terms = out[keys.NODE_ENERGY_UNCERTAINTY]
    assert terms.shape == (len(atoms),)
    assert out[keys.ENERGY_UNCERTAINTY].shape == (1,)
    assert relative_error(out[keys.ENERGY_UNCERTAINTY], terms.sum().abs().reshape(1) / len(atoms)) <= 1e-14
    # the per-type energy scale multiplies the terms, as it does the energies
    unscaled = evaluate(build_small(name), atoms)[keys.NODE_ENERGY_UNCERTAINTY]
    scales = torch.tensor([[0.5, 1.0, 1.5, 2.0, 3.0][t] for t in [3, 4]], dtype=torch.float64)
    assert relative_error(terms, unscaled * scales[[0, 1]]) <= 1e-12


@pytest.mark.parametrize("name", MEAN_VAR)
def test_std_is_invariant_intensive_and_batches(name):
    model = build_small(name)
    atoms = STRUCTURES["triclinic"]()
    std = evaluate(model, atoms)[keys.ENERGY_UNCERTAINTY]
    # a rotation times the inversion
    torch.manual_seed(2)
    rotation_inversion = -o3.rand_matrix(dtype=torch.float64).numpy()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ rotation_inversion.T)
    rotated.positions = atoms.positions @ rotation_inversion.T
    assert relative_error(evaluate(model, rotated)[keys.ENERGY_UNCERTAINTY], std) <= 1e-12
    assert relative_error(evaluate(model, atoms.repeat((1, 2, 2)))[keys.ENERGY_UNCERTAINTY], std) <= 1e-12
    molecule = STRUCTURES["molecule"]()
    batched = evaluate_many(model, [atoms, molecule])[keys.ENERGY_UNCERTAINTY]
    alone = torch.cat([std, evaluate(model, molecule)[keys.ENERGY_UNCERTAINTY]])
    assert relative_error(batched, alone) <= 1e-12


def test_gaussian_nll_is_torchs_on_per_atom_energies():
    generator = torch.Generator().manual_seed(0)
    num_atoms = torch.tensor([3, 5, 8, 2])
    energy, target = torch.randn(2, 4, generator=generator, dtype=torch.float64) * num_atoms
    std = torch.rand(4, generator=generator, dtype=torch.float64) * 0.3
    std[0] = 0.01  # below sqrt(eps): clamped in the loss
    predictions = {keys.ENERGY: energy, keys.ENERGY_UNCERTAINTY: std}
    graph = {keys.ENERGY: target, keys.NUM_ATOMS: num_atoms}
    loss, _ = total_loss(predictions, graph, {"energy": LossConfig(name="gaussian_nll")})
    expected = torch.nn.GaussianNLLLoss(eps=0.01)(energy / num_atoms, target / num_atoms, std**2)
    assert relative_error(loss, expected) <= 1e-14
    with pytest.raises(ValueError, match="gaussian_nll' cannot be computed"):
        total_loss({keys.ENERGY: energy}, graph, {"energy": LossConfig(name="gaussian_nll")})


def test_calibration_metrics():
    errors = ErrorAccumulator()
    num_atoms = torch.ones(4, dtype=torch.long)
    predictions = {keys.ENERGY: torch.tensor([0.5, 1.5, 2.5, 0.0]), keys.ENERGY_UNCERTAINTY: torch.ones(4)}
    errors.add(predictions, {keys.ENERGY: torch.zeros(4), keys.NUM_ATOMS: num_atoms}, ["energy"])
    metrics = errors.metrics("test")
    assert metrics["test_energy_within_1sigma"] == 0.5
    assert metrics["test_energy_within_2sigma"] == 0.75
    assert metrics["test_energy_mean_sigma"] == 1.0
    expected = float(np.mean(0.5 * np.log(2 * np.pi) + np.array([0.5, 1.5, 2.5, 0.0]) ** 2 / 2))
    assert metrics["test_energy_nll"] == pytest.approx(expected, rel=1e-6)


def noisy_frames(count: int, noise: float, symbol: str, seed: int):
    """Four-atom cells of one element, EMT energies plus Gaussian noise of ``noise`` eV per atom."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk(symbol, "fcc", a=3.61 if symbol == "Cu" else 4.08, cubic=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        energy = atoms.get_potential_energy() + len(atoms) * noise * rng.normal()
        atoms.calc = SinglePointCalculator(atoms, energy=energy)
        frames.append(atoms)
    return frames


def test_mean_var_learns_a_larger_std_where_the_labels_are_noisier(tmp_path):
    path = tmp_path / "noisy.xyz"
    write(path, noisy_frames(48, 0.02, "Cu", 1) + noisy_frames(48, 0.2, "Au", 2), format="extxyz")
    values = {
        "data": {"train": str(path), "batch_size": 8, "validation_fraction": 0.25, "test_fraction": 0.0},
        "model": {
            "name": "mean_var_nequip_model", "r_max": 3.5, "num_layers": 1, "max_ell": 1, "num_features": 4,
            "radial_mlp_hidden": [8], "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
            "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
        },
        "loss": {"energy": {"name": "gaussian_nll", "gaussian_nll_eps": 1e-6}},
        "optimizer": {"lr": 0.02},
        "scheduler": {"name": "none"},
        "ema_decay": None,
        "max_epochs": 30,
        "dtype": "float64",
        "output_dir": str(tmp_path / "run"),
    }
    result = Trainer(parse_config(values), progress=False).run()
    model = load_checkpoint(result.best_checkpoint)
    std = {
        symbol: float(torch.cat([evaluate(model, atoms)[keys.ENERGY_UNCERTAINTY] for atoms in noisy_frames(8, 0.0, symbol, 5)]).mean())
        for symbol in ("Cu", "Au")
    }
    print(f"\n[measured] learned std: Cu (label noise 0.02 eV/atom) {std['Cu']:.4f}, Au (0.2 eV/atom) {std['Au']:.4f}")
    assert std["Au"] > 3 * std["Cu"]
    assert 0.05 < std["Au"] < 0.6


@pytest.mark.parametrize("artifact_name", ["mean_var_aotinductor_float64", "mean_var_torchscript_float64_ase"])
def test_artifact_ase_and_cpp_give_the_eager_std(artifacts, artifact_name):
    path, dtype = artifacts[artifact_name]
    model = build_small("mean_var_nequip", dtype)
    artifact = Artifact(path)
    assert keys.NODE_ENERGY_UNCERTAINTY in artifact.metadata.outputs
    assert (keys.ENERGY_UNCERTAINTY in artifact.metadata.outputs) == (artifact.metadata.target == "ase")
    atoms = STRUCTURES["triclinic"]().repeat((2, 2, 1))
    graph = graph_from_atoms(atoms, model.r_max, model.type_names, dtype)
    graph[keys.NODE_ENERGY_MASK] = torch.arange(len(atoms)) % 3 != 0 if artifact.metadata.target == "lammps" else torch.ones(len(atoms), dtype=torch.bool)
    eager = model(graph)
    produced = artifact(graph)
    cpp = _runtime.Model(str(path)).evaluate(*contract_inputs(graph, torch.device("cpu"), artifact.metadata.inputs))
    for name in (keys.ENERGY, keys.FORCES, keys.ENERGY_UNCERTAINTY, keys.NODE_ENERGY_UNCERTAINTY):
        assert relative_error(produced[name], eager[name].detach()) <= 1e-10, name
    assert relative_error(cpp["energy_uncertainty"].reshape(1), eager[keys.ENERGY_UNCERTAINTY]) <= 1e-10
    assert relative_error(cpp["atomic_energy_uncertainty"], eager[keys.NODE_ENERGY_UNCERTAINTY]) <= 1e-10
    atoms.calc = MLIPCalculator(path)
    expected = float(model(graph_from_atoms(atoms, model.r_max, model.type_names, dtype))[keys.ENERGY_UNCERTAINTY][0])
    assert atoms.calc.get_property("energy_uncertainty", atoms) == pytest.approx(expected, rel=1e-10)


def test_calculator_refuses_energy_uncertainty_without_a_variance_head(small_checkpoint):
    atoms = STRUCTURES["triclinic"]()
    atoms.calc = MLIPCalculator(small_checkpoint)
    with pytest.raises(PropertyNotImplementedError, match="needs a mean-variance model"):
        atoms.calc.get_property("energy_uncertainty", atoms)


def test_mlip_eval_reports_nll_and_calibration(artifacts, tmp_path, capsys):
    from ase.io import read

    from mlipkit.cli import eval as eval_cli
    from conftest import emt_frames

    data = tmp_path / "cuau.xyz"
    write(data, emt_frames(6, 3), format="extxyz")
    checkpoint = artifacts.checkpoint("mean_var_nequip")
    assert eval_cli.main([str(checkpoint), str(data), "--output", str(tmp_path / "predicted.xyz")]) == 0
    printed = capsys.readouterr().out
    assert "energy  NLL" in printed and "within 1 std" in printed and "within 2 std" in printed
    frames = read(tmp_path / "predicted.xyz", ":")
    model = load_checkpoint(checkpoint)
    expected = float(evaluate(model, frames[2])[keys.ENERGY_UNCERTAINTY][0])
    assert frames[2].info["energy_uncertainty"] == pytest.approx(expected, rel=1e-10)
