"""Fine-tuning variants (PhysicsML's ssf_* and adapter_* models): identity at initialisation, base weights, parameter counts."""

import pytest
import torch
from e3nn import o3

import mlipkit
from conftest import R_MAX, SMALL_MODEL_OPTIONS, STRUCTURES, TYPE_NAMES, build_small, evaluate, relative_error
from mlipkit.compile import compile_model
from mlipkit.data import keys
from mlipkit.nn.adapter import EquivariantBatchNorm
from mlipkit.nn.feature_scale_shift import FeatureScaleShift

DEFAULT = dict(type_names=["Cu"], r_max=5.0)


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_identity(variant):
    """Adapters with zero weights s and batch norms that pass features through (running var 1 - eps)."""
    with torch.no_grad():
        for module in variant.modules():
            if isinstance(module, EquivariantBatchNorm):
                module.running_var.fill_(1.0 - module.eps)
        for name, parameter in variant.core.layer_adapters.named_parameters():
            if name.endswith(("s_before", "s_after")):
                parameter.zero_()


@pytest.mark.parametrize("variant", ["ssf", "adapter"])
@pytest.mark.parametrize("base", ["nequip", "mace"])
def test_variant_starts_as_the_base_model_and_takes_its_weights(variant, base):
    options = dict(SMALL_MODEL_OPTIONS[base], type_names=TYPE_NAMES, r_max=R_MAX, seed=3)
    pretrained = mlipkit.build_model(base, **options)
    name = f"{variant}_{base}"
    model = mlipkit.build_model(name, **{**options, **SMALL_MODEL_OPTIONS[name], "seed": 11}).eval()
    missing, unexpected = model.load_state_dict(pretrained.state_dict(), strict=False)
    assert not unexpected and all(name.startswith("core.layer_adapters.") for name in missing) and missing
    if variant == "adapter":
        make_identity(model)
    for structure in ("triclinic", "molecule"):
        a, b = evaluate(model, STRUCTURES[structure]()), evaluate(pretrained, STRUCTURES[structure]())
        for key in (keys.ENERGY, keys.FORCES, keys.NODE_VIRIALS):
            assert relative_error(a[key], b[key]) <= 1e-12
    if variant == "adapter":
        with torch.no_grad():
            model.core.layer_adapters[0].s_after.fill_(0.1)
        changed = evaluate(model, STRUCTURES["triclinic"]())[keys.FORCES]
        assert relative_error(changed, evaluate(pretrained, STRUCTURES["triclinic"]())[keys.FORCES]) > 1e-4


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


def test_adapter_parameter_counts():
    """PhysicsML's: per layer two bottlenecks (e3nn linears down to mul // 10 and up) with batch norms, a batch norm, two s."""
    extra = lambda name, **options: trainable(mlipkit.build_model(f"adapter_{name}", **DEFAULT, **options)) - trainable(  # noqa: E731
        mlipkit.build_model(name, **DEFAULT, **options)
    )
    assert extra("nequip", scalar_last_layer=False) == 9032
    assert extra("mace") == 18820
    # mlipkit's default scalar last layer: that layer's adapters are scalars only
    assert extra("nequip") == 7112


def test_adapter_ratio_larger_than_the_channels_is_refused():
    with pytest.raises(ValueError, match="ratio_adapter_down=16 leaves no channels"):
        mlipkit.build_model("adapter_nequip", **DEFAULT, num_features=8, ratio_adapter_down=16)


def test_batch_norm_in_eval_mode_is_e3nns_as_an_affine_map():
    irreps = o3.Irreps("3x0e + 2x0o + 2x1o + 1x2e")
    norm = EquivariantBatchNorm(irreps).double()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for tensor in (norm.weight, norm.bias, norm.running_mean):
            tensor.copy_(torch.randn(tensor.shape, generator=generator, dtype=torch.float64))
        norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator, dtype=torch.float64) + 0.5)
    features = torch.randn(7, irreps.dim, generator=generator, dtype=torch.float64)
    norm.eval()
    folded = norm(features)
    reference = super(EquivariantBatchNorm, norm).forward(features)
    assert relative_error(folded, reference) <= 1e-14
    # training mode is e3nn's: batch statistics, running statistics updated
    norm.train()
    before = norm.running_var.clone()
    assert relative_error(norm(features), folded) > 1e-3
    assert not torch.equal(norm.running_var, before)
    # without batch statistics (the adapters' default) training mode keeps the running ones
    frozen = EquivariantBatchNorm(irreps, batch_statistics=False).double()
    frozen.load_state_dict(norm.state_dict())
    frozen.train()
    before = frozen.running_var.clone()
    assert relative_error(frozen(features), frozen.eval()(features)) == 0.0
    assert torch.equal(frozen.running_var, before)
    # a new batch norm is the identity (to the float32 rounding of its statistics: built under torch's default dtype)
    assert relative_error(EquivariantBatchNorm(irreps).double().eval()(features), features) <= 1e-7


def test_adapter_batch_statistics_option():
    """PhysicsML's batch statistics in training mode: training-mode forces then differ from eval mode."""
    options = dict(SMALL_MODEL_OPTIONS["adapter_nequip"], type_names=TYPE_NAMES, r_max=R_MAX, seed=3)
    atoms = STRUCTURES["triclinic"]()
    for batch_statistics, differs in ((False, False), (True, True)):
        model = mlipkit.build_model("adapter_nequip", **options, adapter_batch_statistics=batch_statistics)
        train_forces = evaluate(model.train(), atoms)[keys.FORCES].detach()
        eval_forces = evaluate(model.eval(), atoms)[keys.FORCES]
        assert (relative_error(train_forces, eval_forces) > 1e-3) == differs


def test_physicsml_model_names():
    model = mlipkit.build_model("ssf_mace_model", **DEFAULT, hidden_irreps="4x0e + 4x1o", correlation=2)
    assert model.model_name == "ssf_mace"
    model = mlipkit.build_model("adapter_nequip_model", **DEFAULT, num_layers=1, num_features=4, ratio_adapter_down=2)
    assert model.model_name == "adapter_nequip"
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


@pytest.mark.parametrize("name", ["ssf_nequip", "ssf_mace", "adapter_nequip", "adapter_mace"])
def test_variant_exports_as_an_ordinary_model(name, tmp_path):
    """mlip-compile's own verification (artifact = eager on two other structures) passes, to float64 rounding."""
    report = compile_model(build_small(name), tmp_path / f"{name}.pt", mode="torchscript")
    assert report.metadata.model_name == name
    assert max(report.verification.values()) <= 1e-12
