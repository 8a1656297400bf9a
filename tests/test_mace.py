"""MACE: parameter counts against mace-torch, the generalised Clebsch-Gordan coefficients, options."""

import itertools

import pytest
import torch
from e3nn import o3
from pydantic import ValidationError

import mlipkit
from conftest import assert_invariant_and_conservative, build_small, mace_torch_weights_in_mlipkit_layout, relative_error
from mlipkit.data import graph_from_atoms, keys
from mlipkit.models import MACEConfig
from mlipkit.nn.symmetric_contraction import SymmetricContraction, coupling_basis

BASE = dict(type_names=["Cu", "Au"], r_max=5.0)

#: Parameter counts of mace-torch 0.3.16's ScaleShiftMACE at the same hyperparameters, measured with
#: tools/mace_torch_reference.py (r_max 5, defaults otherwise; mace-torch counts zeroed coupling
#: placeholders of unreachable outputs as parameters, so its trainable count is the one compared).
MACE_TORCH_PARAMETERS = [
    (1, {"use_reduced_cg": False}, 509456),
    (1, {}, 500240),
    (2, {"use_reduced_cg": False}, 556944),
    (2, {"use_reduced_cg": False, "interaction_first": "RealAgnosticInteractionBlock"}, 655248),
    (3, {"hidden_irreps": "32x0e + 32x1o + 32x2e", "max_ell": 2, "correlation": 2, "num_interactions": 3, "use_reduced_cg": False}, 136368),
    (3, {"hidden_irreps": "32x0e + 32x1o + 32x2e", "max_ell": 2, "correlation": 2, "num_interactions": 3}, 135792),
    (2, {"hidden_irreps": "16x0e + 16x0o + 16x1o + 16x1e", "max_ell": 2}, 49440),
    (2, {"hidden_irreps": "8x0e + 8x1o", "correlation": 4}, 28184),
    (2, {"hidden_irreps": "8x0e + 8x1o", "correlation": 4, "use_reduced_cg": False}, 37704),
    (1, {"hidden_irreps": "16x0e", "max_ell": 1, "correlation": 1, "num_interactions": 1, "mlp_irreps": "8x0e",
         "radial_mlp_hidden": [32], "num_bessel": 6}, 2544),
]


@pytest.mark.parametrize("num_types, options, expected", MACE_TORCH_PARAMETERS, ids=lambda v: str(v) if isinstance(v, int) else None)
def test_parameter_count_matches_mace_torch(num_types, options, expected):
    model = mlipkit.build_model("mace", type_names=["H", "C", "O"][:num_types], r_max=5.0, **options)
    assert sum(p.numel() for p in model.parameters()) == expected


V = o3.Irreps("0e + 1o + 2e + 3o")
#: Couplings of V = 0e+1o+2e+3o to 0e, 1o, 2e for nu = 1..4: the original paths as mace-torch builds
#: them, and the dimension of the symmetric equivariant maps Sym^nu(V) -> L (as cuequivariance counts them).
ORIGINAL_COUNTS = {"0e": [1, 4, 23], "1o": [1, 6, 51], "2e": [1, 7, 65]}
REDUCED_COUNTS = {"0e": [1, 4, 8, 23], "1o": [1, 3, 12, 31], "2e": [1, 5, 14, 46]}


def wigner_d(ir: o3.Irrep, rotation: torch.Tensor) -> torch.Tensor:
    """D_ir of inversion x rotation from the spherical harmonics themselves, Y(R x) = D Y(x).

    (e3nn 0.6's D_from_matrix is accurate to about 1e-7 only, even in float64.)
    """
    points = torch.randn(4 * ir.dim, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(ir.l))
    values = o3.spherical_harmonics(ir.l, points, normalize=True)
    rotated = o3.spherical_harmonics(ir.l, points @ rotation.T, normalize=True)
    return ir.p * torch.linalg.lstsq(values, rotated).solution.T


def rotate_basis(basis: torch.Tensor, ir_out: o3.Irrep, order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U with D_V(g) on every input slot, D_L(g) applied to U's output index), g = inversion x rotation."""
    rotation = o3.angles_to_matrix(*torch.tensor([0.4, 1.1, -2.3], dtype=torch.float64))
    d_in = torch.block_diag(*(wigner_d(ir, rotation) for _, ir in V))
    d_out = wigner_d(ir_out, rotation)
    shaped = basis.reshape(basis.shape[0], ir_out.dim, *([V.dim] * order))
    rotated = shaped
    for slot in range(order):
        rotated = torch.movedim(torch.tensordot(rotated, d_in, dims=([2 + slot], [0])), -1, 2 + slot)
    return rotated, torch.einsum("nm,km...->kn...", d_out, shaped)


@pytest.mark.parametrize("reduced", [True, False], ids=["reduced", "original"])
@pytest.mark.parametrize("ir_out", ["0e", "1o", "2e"])
def test_coupling_basis_is_equivariant_with_the_expected_size(reduced, ir_out):
    counts = REDUCED_COUNTS if reduced else ORIGINAL_COUNTS
    ir = o3.Irrep(ir_out)
    for order, expected in enumerate(counts[ir_out], start=1):
        basis = coupling_basis(V, ir, order, reduced)
        assert basis.shape == (expected, ir.dim, V.dim**order)
        transformed, expected_transform = rotate_basis(basis, ir, order)
        assert (transformed - expected_transform).abs().max() <= 1e-12 * basis.abs().max(), (order, ir_out)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_reduced_basis_is_an_orthogonal_symmetric_basis_of_the_symmetrised_paths(order):
    ir = o3.Irrep("1o")
    reduced = coupling_basis(V, ir, order, True)
    flat = reduced.flatten(1)
    assert torch.allclose(flat @ flat.T, ir.dim * torch.eye(flat.shape[0], dtype=torch.float64), atol=1e-12)
    shaped = reduced.reshape(-1, ir.dim, *([V.dim] * order))
    for permutation in itertools.permutations(range(order)):
        assert torch.allclose(shaped.permute(0, 1, *(2 + p for p in permutation)), shaped, atol=1e-13)
    if order <= 3:
        original = coupling_basis(V, ir, order, False).reshape(-1, ir.dim, *([V.dim] * order))
        symmetrised = sum(original.permute(0, 1, *(2 + p for p in perm)) for perm in itertools.permutations(range(order)))
        together = torch.cat([symmetrised.flatten(1), flat])
        assert torch.linalg.matrix_rank(together, rtol=1e-9) == torch.linalg.matrix_rank(symmetrised.flatten(1), rtol=1e-9) == flat.shape[0]


@pytest.mark.parametrize("kernel", ["sparse", "dense"])
@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
@pytest.mark.parametrize("reduced", [True, False], ids=["reduced", "original"])
def test_symmetric_contraction_equals_the_direct_sum(correlation, reduced, kernel):
    """B_c = sum_nu sum_k w_nu,k,c(type) U_nu,k(A_c, ..., A_c), written out with einsum."""
    irreps_in, irreps_out = o3.Irreps("3x0e + 3x1o + 3x2e"), o3.Irreps("3x0e + 3x1o")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the model registry builds: couplings exact in float64
    try:
        contraction = SymmetricContraction(irreps_in, irreps_out, correlation, num_node_attrs=2, reduced=reduced, kernel=kernel)
    finally:
        torch.set_default_dtype(default_dtype)
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(5, irreps_in.dim, dtype=torch.float64, generator=generator)
    node_attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0, 1]), 2).double()
    produced = contraction(features, node_attrs)
    basis_features = torch.cat([block.reshape(5, 3, -1) for block in features.split([3, 9, 15], dim=1)], dim=2)
    expected = []
    for index, (_, ir) in enumerate(irreps_out):
        total = torch.zeros(5, 3, ir.dim, dtype=torch.float64)
        power = torch.ones(5, 3, 1, dtype=torch.float64)
        for order in range(1, correlation + 1):
            power = (power.unsqueeze(-1) * basis_features.unsqueeze(2)).flatten(2)  # A (x) ... (x) A
            basis = coupling_basis(irreps_in, ir, order, reduced)
            if basis.shape[0]:
                weights = torch.einsum("ne,ekc->nkc", node_attrs, getattr(contraction, f"weight_{index}_{order}"))
                total += torch.einsum("nkc,kmI,ncI->ncm", weights, basis, power)
        expected.append(total.reshape(5, -1))
    expected = torch.cat(expected, dim=1)
    assert relative_error(produced, expected) <= 1e-12


@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
@pytest.mark.parametrize("max_ell", [0, 1, 2, 3])
def test_every_correlation_and_max_ell_is_equivariant_and_conservative(correlation, max_ell):
    hidden = "4x0e + 4x1o" if max_ell else "4x0e"
    model = build_small("mace", max_ell=max_ell, correlation=correlation, hidden_irreps=hidden, radial_mlp_hidden=[8])
    assert_invariant_and_conservative(model)


@pytest.mark.parametrize(
    "options",
    [
        dict(interaction_first="RealAgnosticInteractionBlock"),
        dict(use_reduced_cg=False),
        dict(hidden_irreps="4x0e + 4x0o + 4x1o + 4x1e", max_ell=2),
        dict(num_interactions=3, correlation=[3, 2, 1]),
        dict(num_interactions=1),
        dict(keep_last_layer_irreps=True, gate=None),
        dict(bessel_basis_trainable=True, num_polynomial_cutoff=3, num_bessel=5, radial_mlp_activation="tanh"),
        dict(per_type_energy_shifts_trainable=True, per_type_energy_scales_trainable=True),
        dict(pair_potential={"kind": "zbl"}),
    ],
    ids=lambda o: ",".join(o),
)
def test_option_variants_are_rotation_invariant_and_conservative(options):
    assert_invariant_and_conservative(build_small("mace", **options))


def test_default_options():
    config = MACEConfig(**BASE)
    assert (config.num_interactions, config.max_ell, config.correlation, config.hidden_irreps) == (2, 3, 3, "128x0e + 128x1o")
    assert (config.num_bessel, config.num_polynomial_cutoff, config.mlp_irreps, config.radial_mlp_hidden) == (8, 5, "16x0e", [64, 64, 64])
    assert config.avg_num_neighbours is None and config.do_derivatives and config.use_reduced_cg
    assert not config.bessel_basis_trainable and config.gate == "silu"


def test_mace_torch_and_physicsml_spellings_build_the_same_model():
    canonical = MACEConfig(**BASE, num_interactions=3, num_bessel=6, num_polynomial_cutoff=4, radial_mlp_hidden=[32],
                           mlp_irreps="8x0e", hidden_irreps="16x0e + 16x1o + 16x2e", avg_num_neighbours=9.0,
                           per_type_energy_shifts=-3.0, per_type_energy_scales=2.0, do_derivatives=True)
    mace_torch = MACEConfig(**BASE, num_layers=3, num_radial_basis=6, num_cutoff_basis=4, radial_MLP=[32],
                            MLP_irreps="8x0e", num_channels=16, max_L=2, avg_num_neighbors=9.0,
                            scaling_mean=-3.0, scaling_std=2.0, compute_forces=True)
    exclude = {"num_channels", "max_L", "hidden_irreps"}
    assert mace_torch.model_dump(exclude=exclude) == canonical.model_dump(exclude=exclude)
    assert o3.Irreps(mace_torch.hidden_irreps) == o3.Irreps(canonical.hidden_irreps)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(hidden_irreps="16x0e + 8x1o"), "one multiplicity"),
        (dict(hidden_irreps="16x1o"), "must contain even scalars"),
        (dict(hidden_irreps="16x0e + 16x0e"), "lists an irrep twice"),
        (dict(hidden_irreps="banana"), "not a valid irreps string"),
        (dict(correlation=5), "correlation orders must lie in 1..4"),
        (dict(correlation=0), "correlation orders must lie in 1..4"),
        (dict(correlation=[3, 2, 1]), "3 orders for num_interactions=2"),
        (dict(num_channels=16), "give both"),
        (dict(num_channels=16, max_L=1, hidden_irreps="8x0e"), "contradicts num_channels/max_L"),
        (dict(mlp_irreps="16x1o"), "mlp_irreps must be even scalars"),
        (dict(interaction_first="Dense"), "interaction_first"),
        (dict(max_ell=7), "max_ell"),
        (dict(num_bessel=8, num_radial_basis=6), "two spellings of one option"),
        (dict(radial_MLP=[64, 0]), "widths must be positive"),
        (dict(symmetric_contraction_kernel="cuequivariance"), "symmetric_contraction_kernel"),
    ],
)
def test_invalid_options_are_named(options, message):
    with pytest.raises(ValidationError, match=message):
        MACEConfig(**BASE, **options)


def test_coupling_basis_is_the_same_on_every_build():
    """Checkpoints store weights only; the couplings they multiply must come out identical each time."""
    first, second = (mlipkit.build_model("mace", **BASE, hidden_irreps="4x0e + 4x1o", seed=s) for s in (0, 1))
    couplings = {name: value for name, value in first.named_buffers() if "coupling" in name}
    assert couplings and all(torch.equal(value, dict(second.named_buffers())[name]) for name, value in couplings.items())
    assert not any("coupling" in name for name in first.state_dict())


def test_equals_mace_torch_with_its_weights():
    """mace-torch 0.3.16's weights (tools/mace_torch_reference.py --fixture) give its forces and energies here."""
    from pathlib import Path

    from ase import Atoms
    from ase.data import chemical_symbols

    reference = torch.load(Path(__file__).parent / "data" / "mace_torch_reference.pt", weights_only=True)
    type_names = [chemical_symbols[z] for z in reference["elements"]]
    model = mlipkit.build_model("mace", type_names=type_names, r_max=reference["r_max"],
                                avg_num_neighbours=reference["avg_num_neighbours"], **reference["options"])
    model.load_state_dict(mace_torch_weights_in_mlipkit_layout(model, reference), strict=False)
    atoms = Atoms(numbers=reference["numbers"].numpy(), positions=reference["positions"].numpy(),
                  cell=reference["cell"].numpy(), pbc=True)
    out = model(graph_from_atoms(atoms, model.r_max, model.type_names, torch.float64))
    assert relative_error(out[keys.FORCES], reference["forces"]) <= 1e-12
    # mlipkit measures each atom's energy from its isolated-atom value (here: shift 0), mace-torch does not
    isolated = dict(zip(reference["elements"], reference["isolated_atom_energies"]))
    expected = reference["energy"] - sum(isolated[z] for z in atoms.numbers)
    assert float(out[keys.ENERGY].detach()[0]) == pytest.approx(expected, rel=1e-12, abs=1e-12)
