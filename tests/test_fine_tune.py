"""Fine-tuning in mlip-train: pre-trained weights in, the backbone frozen bitwise, stages, resume mid-stage."""

import pytest
import torch
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from conftest import emt_frames
from mlipkit.models.checkpoint import read_checkpoint
from mlipkit.train import ConfigError, Trainer, parse_config

MODEL = {"r_max": 4.0, "num_layers": 2, "max_ell": 1, "num_features": 4, "radial_mlp_hidden": [8], "avg_num_neighbors": 12.0}


def run_config(data, output_dir, model, **overrides):
    values = {
        "data": {"train": str(data), "batch_size": 4, "validation_fraction": 0.25, "test_fraction": 0.0},
        "model": model,
        "loss": {"energy": {"weight": 1.0}, "forces": {"weight": 10.0}},
        "ema_decay": None,
        "dtype": "float64",
        "output_dir": str(output_dir),
        **overrides,
    }
    if "transfer_learning" not in overrides:
        values.setdefault("max_epochs", 2)
    return parse_config(values)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A NequIP trained for two epochs on CuAu EMT frames, and a second small data set of the same elements."""
    root = tmp_path_factory.mktemp("fine_tune")
    write(root / "pretrain.xyz", emt_frames(16, 0), format="extxyz")
    write(root / "fine_tune.xyz", emt_frames(12, 7), format="extxyz")
    config = run_config(root / "pretrain.xyz", root / "pretrained", {"name": "nequip", **MODEL, "per_type_energy_shifts": 0.3})
    return Trainer(config, progress=False).run().best_checkpoint, root / "fine_tune.xyz"


def last_weights(output_dir):
    return read_checkpoint(output_dir / "last.ckpt")["extra"]["training_state"]["model"]


@pytest.mark.parametrize("variant", ["ssf_nequip", "adapter_nequip"])
def test_frozen_backbone_stays_bitwise_unchanged(pretrained, tmp_path, variant):
    checkpoint, data = pretrained
    options = {"ratio_adapter_down": 2} if variant == "adapter_nequip" else {}
    config = run_config(data, tmp_path, {"name": variant, **options}, fine_tune={"checkpoint": str(checkpoint)})
    trainer = Trainer(config, progress=False)
    trainer.run()
    before = read_checkpoint(checkpoint)["state_dict"]
    after = last_weights(tmp_path)
    fine_tuned = ("core.layer_adapters.", "core.readout.")
    frozen = [name for name in before if not name.startswith(fine_tuned) and after[name].is_floating_point()]
    assert len(frozen) > 10
    for name in frozen:
        assert torch.equal(after[name], before[name]), name
    changed = [name for name in after if name.startswith(fine_tuned) and (name not in before or not torch.equal(after[name], before[name]))]
    assert any(name.startswith("core.layer_adapters.") for name in changed)
    assert any(name.startswith("core.readout.") for name in changed)
    # the options came from the checkpoint
    assert trainer.model.config.num_features == 4 and trainer.model.type_names == ["Cu", "Au"]


STAGES = {
    "pre_trained_model_path": None,
    "stages": [{"epochs": 2, "freeze": "backbone", "lr": 0.01}, {"max_epochs": 2, "freeze_modules": "none", "lr": 0.002}],
}


def staged_config(pretrained, output_dir):
    checkpoint, data = pretrained
    return run_config(data, output_dir, {"name": "ssf_nequip"}, transfer_learning=dict(STAGES, pre_trained_model_path=str(checkpoint)))


def test_stages_and_resume_in_the_middle_of_one(pretrained, tmp_path, monkeypatch):
    straight = Trainer(staged_config(pretrained, tmp_path / "straight"), progress=False)
    straight.run()
    assert straight.config.max_epochs == 4 and straight.epoch == 4
    assert straight.optimizer.param_groups[0]["lr"] == 0.002
    before = read_checkpoint(pretrained[0])["state_dict"]
    final = last_weights(tmp_path / "straight")
    assert not torch.equal(final["core.layers.0.convolution.linear_in.weight"], before["core.layers.0.convolution.linear_in.weight"])

    original = Trainer.train_epoch

    def crash_in_epoch_4(self):
        if self.epoch == 4:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", crash_in_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        Trainer(staged_config(pretrained, tmp_path / "split"), progress=False).run()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    Trainer(staged_config(pretrained, tmp_path / "split"), progress=False).run(resume=True)
    resumed = last_weights(tmp_path / "split")
    for name in final:
        assert torch.equal(final[name], resumed[name]), name


def test_fine_tuning_errors(pretrained, tmp_path):
    checkpoint, data = pretrained
    fine_tune = {"checkpoint": str(checkpoint)}
    with pytest.raises(ConfigError, match=r"freeze: 'core.nothing' names no parameter of this model; its modules are \["):
        Trainer(run_config(data, tmp_path, {"name": "ssf_nequip"}, fine_tune={**fine_tune, "freeze": ["core.nothing"]}), progress=False).build()
    with pytest.raises(ConfigError, match=r"weight .core.embedding.linear.weight. has shape \(8,\) in .* and \(16,\) in this model"):
        Trainer(run_config(data, tmp_path, {"name": "ssf_nequip", "num_features": 8}, fine_tune=fine_tune), progress=False).build()
    with pytest.raises(ConfigError, match="max_epochs=9 but the fine_tune stages add up to 4 epochs"):
        run_config(data, tmp_path, {"name": "ssf_nequip"}, max_epochs=9, fine_tune=dict(STAGES, pre_trained_model_path=str(checkpoint)))
    silver = bulk("Ag", "fcc", a=4.1, cubic=True)
    silver.calc = EMT()
    silver.calc = SinglePointCalculator(silver, energy=silver.get_potential_energy(), forces=silver.get_forces())
    write(tmp_path / "silver.xyz", emt_frames(4, 1) + [silver] * 4, format="extxyz")
    with pytest.raises(ConfigError, match=r"elements \['Ag'\] are not among the pre-trained model's types \['Cu', 'Au'\]"):
        Trainer(run_config(tmp_path / "silver.xyz", tmp_path, {"name": "ssf_nequip"}, fine_tune=fine_tune), progress=False).build()
    with pytest.raises(ConfigError, match="leaves no parameter to train"):
        Trainer(run_config(data, tmp_path, {"name": "nequip"}, fine_tune={**fine_tune, "freeze": ["core"]}), progress=False).build()


def test_model_section_overrides_checkpoint_options_in_any_spelling(pretrained, tmp_path):
    checkpoint, data = pretrained
    model = {"name": "ssf_nequip", "avg_num_neighbors": 20.0, "scaling_mean": 0.5}
    trainer = Trainer(run_config(data, tmp_path, model, fine_tune={"checkpoint": str(checkpoint)}), progress=False)
    trainer.build()
    assert trainer.model.config.avg_num_neighbours == 20.0
    # shifts given anew are not overwritten by the checkpoint's
    assert trainer.model.scale_shift.shifts.tolist() == [0.5, 0.5]
