"""NequIP options in all three spellings, their validation, heads, ZBL and energy-only models."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase import units
from pydantic import ValidationError

import mlipkit
from conftest import assert_invariant_and_conservative, build_small, evaluate
from mlipkit.data import keys
from mlipkit.models import NequIPConfig

BASE = dict(type_names=["Cu", "Au"], r_max=4.0)


def test_default_options():
    config = NequIPConfig(**BASE)
    assert (config.num_layers, config.max_ell, config.parity, config.num_features) == (4, 2, True, 32)
    assert (config.mlp_irreps, config.num_bessel, config.bessel_basis_trainable, config.num_polynomial_cutoff) == (
        "16x0e", 8, True, 6)
    assert config.self_connection and config.resnet and config.do_derivatives
    assert str(config.hidden_irreps) == "32x0e+32x0o+32x1e+32x1o+32x2e+32x2o"


def test_scalar_last_layer():
    """By default the last layer computes only the 0e paths (as nequip's); a vector head keeps them all."""
    model = mlipkit.build_model("nequip", **BASE, seed=0)
    last = model.core.layers[-1].convolution.tensor_product
    assert model.config.scalar_last_layer and str(model.core.feature_irreps) == "32x0e"
    assert model.core.layers[-1].resnet  # the residual of the scalars stays: energies are those of the full layer
    assert [str(last.irreps_out[i.i_out].ir) for i in last.instructions] == ["0e"] * 3 and last.weight_numel == 96
    with_vectors = mlipkit.build_model("nequip", **BASE, seed=0, y_node_vector={})
    assert not with_vectors.config.scalar_last_layer and len(with_vectors.core.layers[-1].convolution.tensor_product.instructions) == 30
    assert str(mlipkit.build_model("nequip", **BASE, scalar_last_layer=False).core.feature_irreps) == str(
        NequIPConfig(**BASE).hidden_irreps)


def test_three_spellings_build_the_same_model():
    physicsml = NequIPConfig(**BASE, max_ell=1, num_bessel=6, resnet=False, avg_num_neighbours=12.0,
                             compute_forces=True, scaling_mean=-3.0, scaling_std=2.0)
    mlip = NequIPConfig(**BASE, l_max=1, num_rbf=6, use_residual_connection=False, avg_num_neighbors=12.0)
    nequip = NequIPConfig(**BASE, max_ell=1, num_bessel=6, resnet=False, avg_num_neighbours=12.0,
                          do_derivatives=True, per_type_energy_shifts=-3.0, per_type_energy_scales=2.0)
    assert physicsml == nequip
    assert mlip.model_dump(exclude={"per_type_energy_shifts", "per_type_energy_scales"}) == nequip.model_dump(
        exclude={"per_type_energy_shifts", "per_type_energy_scales"})
    assert physicsml.energy_shifts == [-3.0, -3.0] and physicsml.energy_scales == [2.0, 2.0]


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(max_ell=2, l_max=3), "'l_max' and 'max_ell' are two spellings"),
        (dict(num_layers=0), "num_layers"),
        (dict(mlp_irreps="16x1o"), "mlp_irreps must be even scalars"),
        (dict(target_irreps="8x1o"), "target_irreps must contain even scalars"),
        (dict(target_irreps="8xQ"), "not a valid irreps string"),
        (dict(radial_envelope="cosine"), "radial_envelope"),
        (dict(radial_mlp_activation="swoosh"), "radial_mlp_activation"),
        (dict(gate_nonlinearities={"e": "silu", "o": "silu"}), "must be an odd function"),
        (dict(num_species=3), "num_species=3 but there are 2 type names"),
        (dict(num_node_feats=1), "num_node_feats=1 is smaller than the one-hot width 2"),
        (dict(per_type_energy_shifts=[1.0]), "has 1 values for 2 type names"),
        (dict(per_type_energy_scales={"Cu": 1.0, "Ag": 2.0}), r"missing \['Au'\], unknown \['Ag'\]"),
        (dict(add_atomic_energies=False, per_type_energy_shifts=1.0), "add_atomic_energies=False"),
        (dict(pair_potential={"kind": "zbl", "units": "lj"}), "units"),
        (dict(units="si"), "units"),
        (dict(pair_potential={"kind": "zbl", "units": "real"}), "pair_potential.units is 'real' but the model's units are 'metal'"),
        (dict(pair_potential={"kind": "zbl", "chemical_species": ["Cu", "Xx"]}), "not element symbols"),
        (dict(avg_r_min=5.0), "avg_r_min=5.0 must be smaller than r_max=4.0"),
        (dict(scalar_last_layer=True, y_node_vector={}), "scalar_last_layer=True leaves no l=1 features"),
        (dict(num_featurs=8), "num_featurs"),
        (dict(y_node_scalars={"num_tasks": 0}), "num_tasks"),
        (dict(y_node_vector={"loss": {"name": "cross_entropy"}}), "loss.name"),
    ],
)
def test_invalid_options_are_named(options, message):
    with pytest.raises(ValidationError, match=message):
        mlipkit.build_model("nequip", **BASE, **options)


def test_invalid_model_and_type_names():
    with pytest.raises(ValueError, match=r"unknown model 'nequipp'; registered models: \['adapter_mace', 'adapter_nequip', 'gemnet_oc', 'mace', 'mean_var_mace', 'mean_var_nequip', 'nequip', 'ssf_mace', 'ssf_nequip'\]"):
        mlipkit.build_model("nequipp", **BASE)
    with pytest.raises(ValidationError, match="must be unique"):
        mlipkit.build_model("nequip", type_names=["Cu", "Cu"], r_max=4.0)
    with pytest.raises(ValidationError, match="r_max"):
        mlipkit.build_model("nequip", type_names=["Cu"], r_max=-1.0)


def test_vector_head_needs_vector_features():
    with pytest.raises(ValueError, match="needs 1o node features"):
        mlipkit.build_model("nequip", **BASE, max_ell=0, y_node_vector={"num_tasks": 1})


@pytest.mark.parametrize(
    "options",
    [
        dict(parity=False),
        dict(max_ell=0),
        dict(max_ell=3, num_layers=1),
        dict(target_irreps="8x0e + 4x1o + 2x2e"),
        dict(radial_envelope="soft", avg_r_min=1.5),
        dict(self_connection=False, resnet=False),
        dict(bessel_basis_trainable=False, num_polynomial_cutoff=3),
        dict(radial_mlp_hidden=[8, 8, 8], radial_mlp_activation="tanh", radial_mlp_variance_scale=0.5),
        dict(embed_activation="silu", gate_nonlinearities={"e": "gelu", "o": "tanh"}),
        dict(deterministic_scatter_ops=False),
        dict(per_type_energy_shifts_trainable=True, per_type_energy_scales_trainable=True),
    ],
    ids=lambda o: ",".join(o),
)
def test_option_variants_are_rotation_invariant_and_conservative(options):
    assert_invariant_and_conservative(build_small("nequip", **options))


def test_avg_r_min_normalises_radial_embedding():
    model = build_small("nequip", avg_r_min=1.5)
    radial = model.core.radial_embedding
    r = torch.linspace(1.5, 4.0, 1000, dtype=torch.float64)
    assert float(radial(r).detach().pow(2).mean()) == pytest.approx(1.0, rel=1e-6)


def test_soft_envelope_is_smooth_at_cutoff():
    model = build_small("nequip", radial_envelope="soft")
    envelope = model.core.radial_embedding.envelope
    r = torch.tensor([3.999, 4.0, 4.5], dtype=torch.float64, requires_grad=True)
    values = envelope(r)
    (gradient,) = torch.autograd.grad(values.sum(), r)
    values = values.detach()
    assert float(values[0]) < 1e-100 and float(values[1]) == 0.0 and torch.isfinite(gradient).all()
    assert float(envelope(torch.tensor([0.0], dtype=torch.float64))[0]) == 1.0


def zbl_reference(z1, z2, r, r_max, coulomb):
    a = 0.46850 / (z1**0.23 + z2**0.23)
    x = r / a
    phi = (0.18175 * np.exp(-3.19980 * x) + 0.50986 * np.exp(-0.94229 * x)
           + 0.28022 * np.exp(-0.40290 * x) + 0.02817 * np.exp(-0.20162 * x))
    u = r / r_max
    p = 6
    envelope = 1 - (p + 1) * (p + 2) / 2 * u**p + p * (p + 2) * u ** (p + 1) - p * (p + 1) / 2 * u ** (p + 2)
    return coulomb * z1 * z2 / r * phi * envelope


@pytest.mark.parametrize("units_name, coulomb", [("metal", 14.399645), ("real", 332.06371)])
@pytest.mark.parametrize("pair, numbers", [("CuAu", (29, 79)), ("HO", (1, 8))])
@pytest.mark.parametrize("distance", [0.6, 1.7, 3.2])
def test_zbl_dimer_matches_analytic(units_name, coulomb, pair, numbers, distance):
    plain = build_small("nequip")
    with_zbl = build_small("nequip", units=units_name, pair_potential={"kind": "zbl"})
    dimer = Atoms(pair, positions=[[0, 0, 0], [distance, 0, 0]])
    zbl_energy = float(evaluate(with_zbl, dimer)[keys.ENERGY][0] - evaluate(plain, dimer)[keys.ENERGY][0])
    assert zbl_energy == pytest.approx(zbl_reference(*numbers, distance, 4.0, coulomb), rel=2e-7)


def test_zbl_real_units_are_metal_times_kcal_per_mol():
    dimer = Atoms("CuAu", positions=[[0, 0, 0], [1.1, 0, 0]])
    energies = {}
    for units_name in ("metal", "real"):
        model = build_small("nequip", units=units_name, pair_potential={"kind": "zbl"}, per_type_energy_shifts=0.0)
        plain = build_small("nequip", per_type_energy_shifts=0.0)
        energies[units_name] = float(evaluate(model, dimer)[keys.ENERGY][0] - evaluate(plain, dimer)[keys.ENERGY][0])
    assert energies["real"] / energies["metal"] == pytest.approx(units.mol / units.kcal, rel=1e-12)


def test_zbl_chemical_species_map_types_to_elements():
    model = build_small("nequip", type_names=["A", "B", "C", "D", "E"],
                        pair_potential={"kind": "zbl", "chemical_species": ["H", "C", "O", "Cu", "Au"]})
    assert model.zbl.atomic_numbers.tolist() == [1, 6, 8, 29, 79]
    with pytest.raises(ValidationError, match="not element symbols"):
        build_small("nequip", type_names=["A", "B", "C", "D", "E"], pair_potential={"kind": "zbl"})
