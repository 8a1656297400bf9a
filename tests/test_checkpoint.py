import pytest
import torch

from conftest import build_small
from mlipkit.models import load_checkpoint, read_checkpoint, save_checkpoint


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "nothing.ckpt")


def test_not_a_checkpoint(tmp_path):
    text = tmp_path / "text.ckpt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not an mlipkit checkpoint"):
        load_checkpoint(text)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="no 'mlipkit-checkpoint' header"):
        load_checkpoint(other)
    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(ValueError, match="is not an mlipkit checkpoint: it is a TorchScript archive"):
        load_checkpoint(scripted)


def test_truncated_checkpoint(tmp_path):
    path = save_checkpoint(build_small("nequip"), tmp_path / "m.ckpt")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="is not an mlipkit checkpoint: not a PyTorch archive"):
        load_checkpoint(path)


class _Pickled:
    pass


def test_unreadable_files_never_suggest_unsafe_loading(tmp_path):
    """Random bytes, a damaged archive and one holding arbitrary objects: mlipkit's words, not torch's advice."""
    random_bytes = tmp_path / "random.ckpt"
    random_bytes.write_bytes(bytes(range(256)) * 8)
    damaged = save_checkpoint(build_small("nequip"), tmp_path / "damaged.ckpt")
    data = bytearray(damaged.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)  # the zip directory survives, a stored record does not
    damaged.write_bytes(bytes(data))
    objects = tmp_path / "objects.ckpt"
    torch.save({"format": "mlipkit-checkpoint", "payload": _Pickled()}, objects)
    expected = {
        random_bytes: "not a PyTorch archive",
        damaged: "the archive is damaged|not a PyTorch archive",
        objects: "Python objects other than tensors and plain data",
    }
    for path, message in expected.items():
        with pytest.raises(ValueError, match=message) as raised:
            load_checkpoint(path)
        text = str(raised.value)
        assert "weights_only" not in text and "arbitrary code" not in text
        # torch's own error (and its advice) is not chained into the traceback either
        assert raised.value.__cause__ is None
        assert raised.value.__context__ is None or raised.value.__suppress_context__


def test_incompatible_version(tmp_path):
    path = save_checkpoint(build_small("nequip"), tmp_path / "m.ckpt")
    contents = read_checkpoint(path)
    contents["format_version"] = 99
    contents["mlipkit_version"] = "9.0.0"
    torch.save(contents, path)
    with pytest.raises(ValueError, match="format version 99 \\(written by mlipkit 9.0.0\\)"):
        load_checkpoint(path)


def test_mismatched_weights(tmp_path):
    path = save_checkpoint(build_small("nequip"), tmp_path / "m.ckpt")
    contents = read_checkpoint(path)
    contents["config"]["num_layers"] = 3
    torch.save(contents, path)
    with pytest.raises(ValueError, match="weights do not match"):
        load_checkpoint(path)


def test_checkpoint_from_before_scalar_last_layer(tmp_path):
    """Checkpoints without the option were written by models whose last layer kept every irrep."""
    model = build_small("nequip", scalar_last_layer=False)
    contents = read_checkpoint(save_checkpoint(model, tmp_path / "m.ckpt"))
    del contents["config"]["scalar_last_layer"]
    torch.save(contents, tmp_path / "old.ckpt")
    loaded = load_checkpoint(tmp_path / "old.ckpt")
    assert loaded.config.scalar_last_layer is False
    assert build_small("nequip").config.scalar_last_layer is True
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_checkpoint_contents(tmp_path):
    model = build_small("nequip")
    contents = read_checkpoint(save_checkpoint(model, tmp_path / "m.ckpt"))
    assert contents["model_name"] == "nequip" and contents["type_names"] == model.type_names
    assert contents["r_max"] == model.r_max and contents["dtype"] == "float64"
    assert contents["mlipkit_version"]
