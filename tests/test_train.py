"""mlip-train: config errors, statistics as hyperparameters, the loop, resume, determinism."""

import numpy as np
import pytest
import torch
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.neighborlist import neighbor_list

from conftest import emt_frames
from mlipkit.cli import train as train_cli
from mlipkit.models.checkpoint import read_checkpoint
from mlipkit.train import ConfigError, Trainer, load_config, parse_config

R_MAX = 4.0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "cuau.xyz"
    write(path, emt_frames(24, 0), format="extxyz")
    return path


def config_values(dataset, output_dir, **overrides):
    values = {
        "data": {"train": str(dataset), "batch_size": 4, "validation_fraction": 0.25, "test_fraction": 0.0},
        "model": {
            "name": "nequip", "r_max": R_MAX, "num_layers": 1, "max_ell": 1, "num_features": 4, "radial_mlp_hidden": [8],
            "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
            "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
            "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
        },
        "loss": {"energy": {"weight": 1.0}, "forces": {"weight": 10.0}, "stress": {"weight": 1.0}},
        "optimizer": {"lr": 0.01},
        "ema_decay": 0.5,
        "max_epochs": 3,
        "dtype": "float64",
        "output_dir": str(output_dir),
    }
    for key, value in overrides.items():
        section, _, name = key.partition("__")
        if name:
            values[section][name] = value
        else:
            values[section] = value
    return values


def test_statistics_become_hyperparameters(dataset, tmp_path):
    trainer = Trainer(parse_config(config_values(dataset, tmp_path)), progress=False)
    trainer.build()
    train = trainer.datasets.train
    energies = [c.energy / len(c.symbols) for c in train]
    forces = np.concatenate([c.forces for c in train])
    symbols = np.concatenate([c.symbols for c in train])
    neighbours = sum(len(neighbor_list("i", frame_atoms(c), R_MAX)) for c in train) / len(symbols)
    config = trainer.model.config
    assert config.avg_num_neighbours == pytest.approx(neighbours, rel=1e-12)
    assert config.per_type_energy_shifts == pytest.approx(np.mean(energies), rel=1e-12)
    assert trainer.model.type_names == ["Cu", "Au"]  # inferred, by atomic number
    expected_scales = [float(np.sqrt(np.mean(forces[symbols == element] ** 2))) for element in ("Cu", "Au")]
    assert [config.per_type_energy_scales[e] for e in ("Cu", "Au")] == pytest.approx(expected_scales, rel=1e-12)


def frame_atoms(configuration):
    from ase import Atoms

    return Atoms(configuration.symbols, positions=configuration.positions, cell=configuration.cell, pbc=configuration.pbc)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss": {"hessian": {"weight": 1.0}}}, "unknown output(s) ['hessian']"),
        ({"loss": {"charges": {"weight": 1.0}}}, "loss.charges: the model predicts no charges; set model.predict_partial_charges"),
        ({"loss": {"energy": {"name": "gaussian_nll"}}}, "gaussian_nll needs a predicted variance of that output; only the energy of mean-variance models"),
        ({"optimiser": {"lr": 0.1}}, "optimiser: Extra inputs are not permitted"),
        ({"optimizer": {"lr": -1.0}}, "optimizer.lr: Input should be greater than 0"),
        ({"data__validation_fraction": 0.6, "data__test_fraction": 0.5}, "must leave some training data"),
        ({"device": "gpu0"}, "device: 'gpu0' is not a device"),
    ],
)
def test_config_errors_name_key_and_value(dataset, tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        parse_config(config_values(dataset, tmp_path, **overrides))
    assert message in str(error.value)


@pytest.mark.parametrize(
    "model_option, message",
    [
        ({"avg_num_neighbors": "${training_data_stats:neighbours}"}, "unknown statistic 'neighbours'; known statistics: ["),
        ({"avg_num_neighbors": "${num_neighbors_mean}"}, "is not a statistics reference"),
        ({"type_names": ["Cu"]}, "give type names once, under data.type_names"),
    ],
)
def test_model_option_errors(dataset, tmp_path, model_option, message):
    values = config_values(dataset, tmp_path)
    values["model"].update(model_option)
    with pytest.raises(ConfigError, match=message.replace("$", r"\$").replace("{", r"\{").replace("[", r"\[")):
        Trainer(parse_config(values), progress=False).build()


def test_energy_only_data_has_no_force_statistics(tmp_path):
    path = tmp_path / "energies.xyz"
    write(path, emt_frames(8, 1, with_forces=False), format="extxyz")
    values = config_values(path, tmp_path / "run", loss={"energy": {"weight": 1.0}})
    with pytest.raises(ConfigError, match="does not define 'per_type_forces_rms'"):
        Trainer(parse_config(values), progress=False).build()
    values["model"]["per_type_energy_scales"] = "${training_data_stats:per_atom_energy_std}"
    trainer = Trainer(parse_config(values), progress=False)
    trainer.build()
    assert trainer.model.config.per_type_energy_scales == pytest.approx(trainer.statistics.per_atom_energy_std)


def validation_losses(output_dir) -> tuple[list[str], list[float]]:
    rows = (output_dir / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    return header, [float(row.split(",")[header.index("validation_loss")]) for row in rows[1:]]


def test_training_reduces_the_loss_and_writes_its_files(dataset, tmp_path):
    result = Trainer(parse_config(config_values(dataset, tmp_path, max_epochs=6)), progress=False).run()
    header, losses = validation_losses(tmp_path)
    assert len(losses) == 6 and losses[-1] < losses[0] and min(losses) < 0.5 * losses[0], losses
    for column in ("train_forces_mae", "validation_energy_rmse", "validation_stress_mae", "lr", "time_s"):
        assert column in header
    for name in ("best.ckpt", "last.ckpt", "config.yaml", "learning_curve.png", "parity_forces.png", "parity_energy.png"):
        assert (tmp_path / name).is_file(), name
    extra = read_checkpoint(result.best_checkpoint)["extra"]
    assert extra["resolved_model_options"]["avg_num_neighbors"] == pytest.approx(read_checkpoint(result.best_checkpoint)["config"]["avg_num_neighbours"])
    assert "num_neighbors_mean" in extra["statistics"]


def test_mace_trains_with_only_the_model_section_changed(dataset, tmp_path):
    values = config_values(dataset, tmp_path, max_epochs=6)
    values["model"] = {
        "name": "mace", "r_max": R_MAX, "num_interactions": 2, "max_ell": 1, "hidden_irreps": "4x0e + 4x1o",
        "correlation": 2, "radial_MLP": [8], "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
        "scaling_mean": "${training_data_stats:per_atom_energy_mean}",
        "scaling_std": "${training_data_stats:per_type_forces_rms}",
    }
    result = Trainer(parse_config(values), progress=False).run()
    _, losses = validation_losses(tmp_path)
    assert len(losses) == 6 and losses[-1] < losses[0] and min(losses) < 0.5 * losses[0], losses
    contents = read_checkpoint(result.best_checkpoint)
    assert contents["model_name"] == "mace" and contents["config"]["hidden_irreps"] == "4x0e + 4x1o"


def test_gemnet_oc_fits_its_scale_factors_and_trains(dataset, tmp_path):
    """No r_max (the largest cutoff), scale factors fitted before the first epoch, logged and checkpointed."""
    values = config_values(dataset, tmp_path, max_epochs=6)
    values["model"] = {
        "name": "gemnet_oc", "cutoff": R_MAX, "num_blocks": 1, "num_spherical": 3, "num_radial": 6, "emb_size_atom": 8,
        "emb_size_edge": 8, "emb_size_trip_in": 4, "emb_size_trip_out": 4, "emb_size_rbf": 4, "emb_size_cbf": 4,
        "num_before_skip": 1, "num_after_skip": 1, "num_concat": 1, "num_atom": 1, "num_output_afteratom": 1,
        "scaling_mean": "${training_data_stats:per_atom_energy_mean}",
        "scaling_std": "${training_data_stats:per_type_forces_rms}",
    }
    messages = []
    result = Trainer(parse_config(values), log=messages.append, progress=False).run()
    _, losses = validation_losses(tmp_path)
    assert len(losses) == 6 and losses[-1] < losses[0] and min(losses) < 0.5 * losses[0], losses
    fitted = [message for message in messages if message.startswith("scale factors fitted on 18 structures")]
    assert fitted and "out_blocks.0.scale_sum" in fitted[0]
    contents = read_checkpoint(result.best_checkpoint)
    assert contents["config"]["r_max"] == R_MAX
    factors = {name: value for name, value in contents["state_dict"].items() if name.endswith("scale_factor")}
    assert factors and any(abs(float(value) - 1.0) > 0.01 for value in factors.values())
    # a scale file replaces the fit; a missing one is a config error naming it
    values["model"]["scale_file"] = str(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match="model.scale_file: scale_file .*absent.json does not exist"):
        Trainer(parse_config(values), log=messages.append, progress=False).run()


def final_weights(path):
    return read_checkpoint(path)["extra"]["training_state"]["model"]


def test_resume_continues_with_identical_state(dataset, tmp_path):
    straight = tmp_path / "straight"
    Trainer(parse_config(config_values(dataset, straight, max_epochs=3)), progress=False).run()
    split = tmp_path / "split"
    Trainer(parse_config(config_values(dataset, split, max_epochs=2)), progress=False).run()
    Trainer(parse_config(config_values(dataset, split, max_epochs=3)), progress=False).run(resume=True)
    expected, resumed = final_weights(straight / "last.ckpt"), final_weights(split / "last.ckpt")
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name
    assert (split / "metrics.csv").read_text() .count("\n") == 4


def test_float64_training_is_deterministic(dataset, tmp_path):
    for run in ("a", "b"):
        Trainer(parse_config(config_values(dataset, tmp_path / run, max_epochs=1)), progress=False).run()
    first, second = final_weights(tmp_path / "a" / "last.ckpt"), final_weights(tmp_path / "b" / "last.ckpt")
    assert all(torch.equal(first[name], second[name]) for name in first)


def test_cli_trains_from_a_yaml_file(dataset, tmp_path, capsys):
    values = config_values(dataset, tmp_path / "run", max_epochs=1)
    values["data"]["train"] = dataset.name  # relative to the config file
    config_path = dataset.parent / "config.yaml"
    config_path.write_text(yaml.safe_dump(values))
    assert load_config(config_path).data.train == dataset.resolve()
    assert train_cli.main([str(config_path), "--no-progress"]) == 0
    assert "best checkpoint" in capsys.readouterr().out
    assert train_cli.main([str(tmp_path / "absent.yaml")]) == 1
    assert "config file not found" in capsys.readouterr().err


def test_mlip_eval_reports_errors_and_writes_predictions(dataset, tmp_path, capsys):
    from ase.io import read

    from mlipkit.calculators import MLIPCalculator
    from mlipkit.cli import eval as eval_cli

    result = Trainer(parse_config(config_values(dataset, tmp_path, max_epochs=1)), progress=False).run()
    predictions = tmp_path / "predictions.xyz"
    assert eval_cli.main([str(result.best_checkpoint), str(dataset), "--output", str(predictions)]) == 0
    printed = capsys.readouterr().out
    assert "energy  MAE" in printed and "forces  MAE" in printed and "stress  MAE" in printed
    frames = read(predictions, ":")
    assert len(frames) == 24
    atoms = frames[3].copy()
    atoms.calc = MLIPCalculator(result.best_checkpoint)
    assert atoms.get_potential_energy() == pytest.approx(frames[3].get_potential_energy(), rel=1e-10)
    assert np.allclose(atoms.get_forces(), frames[3].get_forces(), atol=1e-10)
    assert eval_cli.main([str(result.best_checkpoint), str(tmp_path / "absent.xyz")]) == 1
    assert "dataset file not found" in capsys.readouterr().err


def test_torchrun_two_processes_agree_with_one(dataset, tmp_path):
    """DistributedDataParallel (gloo): each rank takes half of every batch; the result is the one-process result."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    runs = {}
    for processes in (1, 2):
        output_dir = tmp_path / f"run{processes}"
        config_path = tmp_path / f"config{processes}.yaml"
        config_path.write_text(yaml.safe_dump(config_values(dataset, output_dir, max_epochs=2)))
        command = [str(Path(sys.executable).parent / "torchrun"), "--standalone", f"--nproc_per_node={processes}",
                   "-m", "mlipkit.cli.train", str(config_path), "--no-progress"]
        run = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        runs[processes] = final_weights(output_dir / "last.ckpt")
    for name, expected in runs[1].items():
        if expected.is_floating_point():
            assert torch.allclose(runs[2][name], expected, rtol=1e-9, atol=1e-12), name
    metrics = (tmp_path / "run2" / "metrics.csv").read_text().splitlines()
    assert len(metrics) == 3


def test_extra_output_heads_are_fitted_from_their_labels(tmp_path):
    """A graph-scalar head (here: volume per atom) trains from info['graph_scalars'] with the head's own loss."""
    frames = emt_frames(12, 2)
    for atoms in frames:
        atoms.info["graph_scalars"] = [atoms.get_volume() / len(atoms)]
    path = tmp_path / "heads.xyz"
    write(path, frames, format="extxyz")
    values = config_values(path, tmp_path / "run", max_epochs=2)
    values["model"]["y_graph_scalars"] = {"num_tasks": 1, "loss": {"weight": 0.5, "name": "l1"}}
    trainer = Trainer(parse_config(values), progress=False)
    trainer.run()
    assert trainer.losses["graph_scalars"].name == "l1" and trainer.losses["graph_scalars"].weight == 0.5
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "train_graph_scalars_mae" in header and "validation_graph_scalars_rmse" in header

    del values["model"]["y_graph_scalars"]
    values["loss"]["graph_scalars"] = {"weight": 1.0}
    with pytest.raises(ConfigError, match="the model has no y_graph_scalars head to fit"):
        parse_config(values)


PHYSICSML_NEQUIP = {
    "num_node_feats": 2, "num_edge_feats": 0, "num_layers": 2, "max_ell": 1, "parity": True, "num_features": 4,
    "mlp_irreps": "4x0e", "num_bessel": 8, "bessel_basis_trainable": True, "num_polynomial_cutoff": 6,
    "self_connection": True, "resnet": True, "avg_num_neighbours": 10.0, "scaling_mean": 0.0, "scaling_std": 1.0,
    "compute_forces": True,
}
PHYSICSML_MACE = {
    "num_node_feats": 2, "num_bessel": 8, "num_polynomial_cutoff": 6, "max_ell": 2, "num_interactions": 2,
    "hidden_irreps": "4x0e + 4x1o", "mlp_irreps": "5x0e", "avg_num_neighbours": 10.0, "correlation": 2,
    "compute_forces": True,
}
PHYSICSML_LOSSES = {
    "y_graph_scalars_loss_config": {"name": "MSELoss", "weight": 1.0},
    "y_node_vector_loss_config": {"name": "HuberLoss", "weight": 5.0, "config": {"delta": 0.1}},
}


@pytest.mark.parametrize("name, options", [
    ("nequip_model", PHYSICSML_NEQUIP), ("ssf_nequip_model", PHYSICSML_NEQUIP),
    ("adapter_nequip_model", dict(PHYSICSML_NEQUIP, ratio_adapter_down=2, initial_s=0.01)),
    ("mace_model", PHYSICSML_MACE), ("ssf_mace_model", PHYSICSML_MACE), ("adapter_mace_model", dict(PHYSICSML_MACE, ratio_adapter_down=2)),
])
def test_physicsml_model_configs_build_with_their_flat_loss_keys(dataset, tmp_path, name, options):
    """A model config as PhysicsML's documentation writes it, plus the cutoff (PhysicsML's datamodule cut_off)."""
    values = config_values(dataset, tmp_path)
    values["model"] = {"name": name, "r_max": R_MAX, **options, **PHYSICSML_LOSSES}
    del values["loss"]
    trainer = Trainer(parse_config(values), progress=False)
    trainer.build()
    assert set(trainer.losses) == {"energy", "forces"}
    assert trainer.losses["energy"].name == "mse" and trainer.losses["energy"].weight == 1.0
    assert trainer.losses["forces"].name == "huber" and trainer.losses["forces"].huber_delta == 0.1
    assert trainer.losses["forces"].weight == 5.0


def test_physicsml_mean_var_config(dataset, tmp_path):
    values = config_values(dataset, tmp_path)
    values["model"] = {"name": "mean_var_nequip_model", "r_max": R_MAX, **PHYSICSML_NEQUIP, "y_node_vector_loss_config": {"name": "MSELoss"}}
    del values["loss"]
    config = parse_config(values)
    assert config.loss["energy"].name == "gaussian_nll" and config.loss["forces"].name == "mse"
    values["model"]["y_graph_scalars_loss_config"] = {"name": "MSELoss"}
    with pytest.raises(ConfigError, match="fits its energy with gaussian_nll, as PhysicsML's mean_var models do"):
        parse_config(values)


@pytest.mark.parametrize("model_keys, message", [
    ({"y_graph_scalars_loss_config": {"name": "MSELoss"}}, "model.y_graph_scalars_loss_config and loss.energy are two spellings"),
    ({"y_graph_scalars_loss_config": {"name": "CrossEntropyLoss"}}, "unknown loss 'CrossEntropyLoss'"),
    ({"y_edge_scalars_loss_config": {"name": "MSELoss"}}, "have no y_edge_scalars output"),
])
def test_physicsml_loss_key_errors(dataset, tmp_path, model_keys, message):
    values = config_values(dataset, tmp_path)
    values["model"].update(model_keys)
    with pytest.raises(ConfigError, match=message):
        parse_config(values)


def test_flat_loss_key_for_a_head_without_forces(dataset, tmp_path):
    """compute_forces false: the node vectors are a head of their own, fitted with the given loss."""
    values = config_values(dataset, tmp_path)
    values["model"].update(compute_forces=False, y_node_vector_loss_config={"name": "L1Loss", "weight": 2.0})
    config = parse_config(values)
    assert config.model.y_node_vector == {"loss": {"name": "l1", "weight": 2.0}}
    with pytest.raises(ValueError, match="loss configs are training options"):
        import mlipkit

        mlipkit.build_model("nequip", type_names=["Cu"], r_max=4.0, y_graph_scalars_loss_config={"name": "MSELoss"})


def strained_cu_frames(count: int, seed: int):
    """EMT Cu cells at strains of -3 to +3 %, rattled: their per-atom energies change with volume, which the
    forces do not tell, so a loss that learns only from forces misses them."""
    rng = np.random.default_rng(seed)
    frames = []
    for index in range(count):
        atoms = bulk("Cu", "fcc", a=3.6 * (1 + 0.015 * (index % 5 - 2)), cubic=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        results = dict(energy=atoms.get_potential_energy(), forces=atoms.get_forces(), stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


#: held-out energy MAE (meV/atom) of the default loss after 40 epochs, measured 2026-12-04 (float64; the mean
#: misses by 14.2, and the same runs fitting only energy and forces by 16.1 and 13.8)
ENERGY_MAE_BOUNDS = {"nequip": 2.58, "mace": 1.16}


@pytest.mark.parametrize("name", sorted(ENERGY_MAE_BOUNDS))
def test_default_training_learns_energies_beyond_the_mean(name, tmp_path):
    """A regression guard for energy learning: the default loss (energy, forces and, the data having it, stress)
    must fit held-out per-atom energies far better than their mean does, within a stored bound."""
    path = tmp_path / "strained_cu.xyz"
    write(path, strained_cu_frames(100, 3), format="extxyz")
    model = {"nequip": {"num_layers": 2, "max_ell": 1, "num_features": 8, "radial_mlp_hidden": [16]},
             "mace": {"num_interactions": 2, "hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "correlation": 2,
                      "radial_mlp_hidden": [16]}}[name]
    values = config_values(path, tmp_path / "run", max_epochs=40)
    values["data"].update(validation_fraction=0.2, test_fraction=0.2)
    values["model"] = {"name": name, "r_max": R_MAX, **model, "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                       "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                       "per_type_energy_scales": "${training_data_stats:forces_rms}"}
    values["ema_decay"] = 0.99
    del values["loss"]
    messages = []
    trainer = Trainer(parse_config(values), log=messages.append, progress=False)
    result = trainer.run()
    assert any("default loss fits stress too" in message for message in messages)
    test = trainer.datasets.test
    per_atom = np.array([c.energy / len(c.symbols) for c in trainer.datasets.train])
    mean_mae = np.mean([abs(c.energy / len(c.symbols) - per_atom.mean()) for c in test])
    energy_mae = result.test_metrics["test_energy_mae"]
    assert energy_mae < 0.5 * mean_mae
    assert 1000 * energy_mae < 1.5 * ENERGY_MAE_BOUNDS[name]


def test_mace_run_train_spelling_of_gradient_clipping(dataset, tmp_path):
    values = config_values(dataset, tmp_path)
    values["clip_grad"] = 10.0
    assert parse_config(values).gradient_clip == 10.0
