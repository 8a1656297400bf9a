"""Fine-tuning variants (PhysicsML's ssf_* models): identity at initialisation, base weights, parameter counts."""

import pytest
import torch
from e3nn import o3

import mlipkit
from conftest import R_MAX, SMALL_MODEL_OPTIONS, STRUCTURES, TYPE_NAMES, build_small, evaluate, relative_error
from mlipkit.compile import compile_model
from mlipkit.data import keys
from mlipkit.nn.feature_scale_shift import FeatureScaleShift

DEFAULT = dict(type_names=["Cu"], r_max=5.0)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("base", ["nequip", "mace"])
def test_ssf_starts_as_the_base_model_and_takes_its_weights(base):
    options = dict(SMALL_MODEL_OPTIONS[base], type_names=TYPE_NAMES, r_max=R_MAX, seed=3)
    pretrained = mlipkit.build_model(base, **options)
    variant = mlipkit.build_model(f"ssf_{base}", **dict(options, seed=11))
    missing, unexpected = variant.load_state_dict(pretrained.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("core.layer_adapters.") for name in missing) and missing
    for structure in ("triclinic", "molecule"):
        a, b = evaluate(variant, STRUCTURES[structure]()), evaluate(pretrained, STRUCTURES[structure]())
        for name in (keys.ENERGY, keys.FORCES, keys.NODE_VIRIALS):
            assert relative_error(a[name], b[name]) <= 1e-12


def test_ssf_parameter_counts():
    """PhysicsML's count: a scale per (channel, irrep) of every layer's output and a shift per 0e channel."""
    extra = lambda name, **options: trainable(mlipkit.build_model(f"ssf_{name}", **DEFAULT, **options)) - trainable(  # noqa: E731
        mlipkit.build_model(name, **DEFAULT, **options)
    )
    # MACE: 128x0e+128x1o then 128x0e: (256 + 128) + (128 + 128)
    assert extra("mace") == 640
    # NequIP with every path in the last layer (PhysicsML's): 32 x (3, 5, 6, 6) irreps + 4 x 32 shifts
    assert extra("nequip", scalar_last_layer=False) == 768
    # mlipkit's default scalar last layer keeps 32x0e there: 32 + 32 instead of 192 + 32
    assert extra("nequip") == 608


def test_physicsml_model_names():
    model = mlipkit.build_model("ssf_mace_model", **DEFAULT, hidden_irreps="4x0e + 4x1o", correlation=2)
    assert model.model_name == "ssf_mace"
    assert mlipkit.build_model("nequip_model", **DEFAULT, num_layers=1, num_features=4).model_name == "nequip"
    with pytest.raises(ValueError, match="unknown model 'ssf_allegro_model'"):
        mlipkit.build_model("ssf_allegro_model", **DEFAULT)


def test_feature_scale_shift_acts_per_irrep_copy_and_shifts_even_scalars_only():
    irreps = o3.Irreps("2x0e + 1x0o + 2x1o")
    ssf = FeatureScaleShift(irreps).double()
    with torch.no_grad():
        ssf.scale.copy_(torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64))
        ssf.shift.copy_(torch.tensor([0.5, -0.5], dtype=torch.float64))
    features = torch.ones(1, irreps.dim, dtype=torch.float64)
    expected = torch.tensor([[2.5, 2.5, 4.0, 5.0, 5.0, 5.0, 6.0, 6.0, 6.0]], dtype=torch.float64)
    assert torch.equal(ssf(features, features), expected)


@pytest.mark.parametrize("name", ["ssf_nequip", "ssf_mace"])
def test_ssf_exports_as_an_ordinary_model(name, tmp_path):
    """mlip-compile's own verification (artifact = eager on two other structures) passes, to float64 rounding."""
    report = compile_model(build_small(name), tmp_path / f"{name}.pt", mode="torchscript")
    assert report.metadata.model_name == name
    assert max(report.verification.values()) <= 1e-12
