"""GemNet-OC beside fairchem-core 1.10.0, and what the shared registry tests do not cover.

The fixtures are written by tools/fairchem_reference.py in the reference
environment (``bash tools/peer_envs.sh fairchem``): parameter counts of
several configurations (tests/data/fairchem_gemnet_oc_counts.json) and, for
three configurations with every interaction on, fairchem's random weights and
scale factors with its energies and forces on two CuO cells
(tests/data/fairchem_gemnet_oc_parity.pt), and a model whose neighbour caps
bind unevenly on a Cu slab with CO (tests/data/fairchem_gemnet_oc_caps.pt).
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk

from conftest import SMALL_MODEL_OPTIONS, build_small, evaluate, relative_error
from mlipkit.data import batch_graphs, graph_from_atoms, keys
from mlipkit.models import build_model, load_checkpoint, save_checkpoint
from mlipkit.models.gemnet_oc.model import (
    GemNetOC,
    GemNetOCConfig,
    load_fairchem_state_dict,
    load_scale_factors,
    scale_factors,
)

DATA = Path(__file__).parent / "data"
COUNTS = json.loads((DATA / "fairchem_gemnet_oc_counts.json").read_text())
PARITY = torch.load(DATA / "fairchem_gemnet_oc_parity.pt", weights_only=False)
CAPS = torch.load(DATA / "fairchem_gemnet_oc_caps.pt", weights_only=False)


@pytest.mark.parametrize("name", sorted(COUNTS["configurations"]))
def test_parameter_counts_equal_fairchems(name):
    """fairchem counts its scale factors as (frozen) parameters; mlipkit keeps them as buffers."""
    reference = COUNTS["configurations"][name]
    config = GemNetOCConfig(type_names=["H"], **reference["options"])
    with torch.device("meta"):
        core = GemNetOC(config)
    factors = len(scale_factors(core))
    assert factors == reference["scale_factors"]
    assert sum(p.numel() for p in core.parameters()) + factors == reference["parameters"]


def test_oc20_parameter_counts():
    counts = COUNTS["configurations"]
    assert counts["oc20_direct_forces"]["parameters"] == 38_864_438
    assert counts["oc20_conservative"]["parameters"] == 28_599_345


def parity_atoms(structure: dict) -> Atoms:
    return Atoms(numbers=structure["numbers"].numpy(), positions=structure["positions"].numpy(), cell=structure["cell"].numpy(), pbc=True)


@pytest.mark.parametrize(
    "name, dtype", [(name, torch.float32) for name in sorted(PARITY["configurations"])] + [("spherical_harmonics", torch.float64)]
)
def test_equals_fairchem_with_its_weights(name, dtype):
    """Energies (their difference: mlipkit subtracts isolated-atom energies) and forces to float32 precision."""
    reference = PARITY["configurations"][name]
    model = build_model("gemnet_oc", dtype=dtype, type_names=["O", "Cu"], **reference["options"])
    load_fairchem_state_dict(model.core, reference["state_dict"])
    energies, worst = [], 0.0
    for structure, forces in zip(PARITY["structures"], reference["forces"]):
        assert torch.isfinite(forces).all()  # max(worst, nan) would keep worst
        out = model(graph_from_atoms(parity_atoms(structure), model.r_max, model.type_names, dtype))
        energies.append(float(out[keys.ENERGY].detach()))
        worst = max(worst, relative_error(out[keys.FORCES], forces))
    fairchem_energies = reference["energies"]
    assert worst <= 1e-5
    assert abs((energies[0] - energies[1]) - (fairchem_energies[0] - fairchem_energies[1])) <= 1e-5 * abs(fairchem_energies[0])
    # the energies differ by the same isolated-atom constant
    assert abs((fairchem_energies[0] - energies[0]) - (fairchem_energies[1] - energies[1])) <= 1e-5 * abs(fairchem_energies[0])


def test_lower_index_caps_equal_fairchem_where_caps_bind_unevenly():
    """fairchem keeps the capped pair a < b when a is within b's cap; on a slab with CO an adsorbate's nearest
    neighbours are not the surface atoms' nearest, so only that rule gives fairchem's graph and forces."""
    options = {key: value for key, value in CAPS["options"].items() if key not in ("otf_graph", "use_pbc", "regress_forces")}
    worst, energies = {}, {}
    for rule in ("lower_index", "either_direction"):
        model = build_model("gemnet_oc", dtype=torch.float32, type_names=["C", "O", "Cu"], cap_symmetrization=rule, **options)
        load_fairchem_state_dict(model.core, CAPS["state_dict"])
        assert model.depends_on_atom_order == (rule == "lower_index")
        worst[rule], energies[rule] = 0.0, []
        for structure in CAPS["structures"]:
            assert torch.isfinite(structure["forces"]).all()
            out = model(graph_from_atoms(parity_atoms(structure), model.r_max, model.type_names, torch.float32))
            energies[rule].append(float(out[keys.ENERGY].detach()))
            worst[rule] = max(worst[rule], relative_error(out[keys.FORCES], structure["forces"]))
    assert worst["lower_index"] <= 1e-5 and worst["either_direction"] >= 1e-2
    fairchem = [structure["energy"] for structure in CAPS["structures"]]
    mlipkit = energies["lower_index"]
    assert abs((mlipkit[0] - mlipkit[1]) - (fairchem[0] - fairchem[1])) <= 1e-5 * abs(fairchem[0])


def test_lower_index_caps_are_refused_for_lammps_until_symmetric(tmp_path):
    from mlipkit.compile import CompileError, ModifierError, apply_modifiers, compile_model

    model = build_small("gemnet_oc", num_blocks=1, max_neighbors=6, cap_symmetrization="lower_index")
    with pytest.raises(CompileError, match="LAMMPS renumbers atoms"):
        compile_model(model, tmp_path / "capped.pt", mode="torchscript")
    apply_modifiers(model, ["symmetric_neighbour_caps"])
    assert not model.depends_on_atom_order and model.config.cap_symmetrization == "either_direction"
    with pytest.raises(ModifierError, match="already keeps a pair"):
        apply_modifiers(model, ["symmetric_neighbour_caps"])


def test_fairchem_state_dict_must_fit():
    reference = PARITY["configurations"]["spherical_harmonics"]
    model = build_model("gemnet_oc", type_names=["O", "Cu"], **dict(reference["options"], quad_interaction=False))
    with pytest.raises(ValueError, match="unknown .*quad_interaction"):
        load_fairchem_state_dict(model.core, reference["state_dict"])


def collinear_structures() -> dict[str, Atoms]:
    """Every triplet angle 0 or pi, and quadruplets with collinear and planar atoms."""
    chain = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [5.0, 0, 0], [7.5, 0, 0]], cell=[10.0, 20.0, 20.0], pbc=True)
    # a 3.6 A cubic cell under a 4 A cutoff: every atom sees two of its own images on a line
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True)
    small_cell = bulk("Cu", "fcc", a=3.6, cubic=True)
    small_cell.symbols[1] = "O"
    small_cell.rattle(0.05, seed=2)
    return {"chain": chain, "crystal": crystal, "small_cell": small_cell}


@pytest.mark.parametrize("sbf", ["spherical_harmonics", "legendre_outer", "gaussian_outer"])
@pytest.mark.parametrize("structure", sorted(collinear_structures()))
def test_collinear_geometries_give_finite_energies_and_forces(structure, sbf):
    """fairchem's spherical-harmonics forces are NaN here (sqrt(1 - cos^2) at cos = +-1)."""
    model = build_small("gemnet_oc", sbf=sbf, cbf="spherical_harmonics")
    atoms = collinear_structures()[structure]
    out = evaluate(model, atoms)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS):
        assert bool(torch.isfinite(out[name]).all()), name


@pytest.mark.parametrize("sbf", ["spherical_harmonics", "legendre_outer"])
@pytest.mark.parametrize("structure", ["cell", "chain", "small_cell"])
def test_segment_contraction_equals_the_padded_path(structure, sbf):
    """The triplet and quadruplet sums by mlipkit::segment_outer_sum (the outer-product quadruplet basis in two
    stages) equal the padded matrix products of the written-out basis: energies, forces, stress, and the weight
    gradient of a force-training loss (its double backward), 1e-12 relative (collinear and planar quadruplets
    included; the perfect crystal's forces are zero, so only noise)."""
    from conftest import cu_au_triclinic
    from mlipkit.compile import apply_modifiers

    atoms = cu_au_triclinic() if structure == "cell" else collinear_structures()[structure]
    results = {}
    for kernel in ("segment", "padded"):
        model = build_small("gemnet_oc", sbf=sbf).train()
        if kernel == "padded":
            apply_modifiers(model, ["set_kernels:{triplet_contraction: padded}"])
        assert model.config.triplet_contraction_kernel == kernel
        out = evaluate(model, atoms)
        loss = out[keys.ENERGY].sum() ** 2 + (out[keys.FORCES] ** 2).sum()
        gradients = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
        results[kernel] = [out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]] + [g for g in gradients if g is not None]
    for segment, padded in zip(results["segment"], results["padded"]):
        assert relative_error(segment, padded) <= 1e-12


def test_grouped_outer_sum_equals_the_written_out_basis():
    """The two-stage sum of a factored basis whose first factor is shared by groups of rows equals the sum of
    the written-out basis (plain torch): values, and first and second derivatives by gradcheck and
    gradgradcheck, float64; groups without rows and outputs without groups included."""
    from mlipkit.models.gemnet_oc.layers import FactoredAngular, grouped_outer_sum

    generator = torch.Generator().manual_seed(0)
    group_out = torch.tensor([0, 0, 2, 2, 2, 4])  # outputs 1 and 3 have no groups
    group = torch.tensor([0, 0, 0, 2, 3, 3, 5, 5])  # groups 1 and 4 have no rows
    source = torch.tensor([3, 0, 3, 1, 2, 0, 0, 3])
    first, second, features = (torch.randn(*shape, dtype=torch.float64, generator=generator, requires_grad=True)
                               for shape in ((6, 3), (8, 2), (4, 5)))

    def grouped(first, second, features):
        return grouped_outer_sum(FactoredAngular(first, second, group, group_out), features, source, 5)

    def written_out(first, second, features):
        angular = FactoredAngular(first, second, group, group_out).written_out()
        rows = angular.unsqueeze(-1) * features.index_select(0, source).unsqueeze(1)
        return torch.zeros(5, 6, 5, dtype=torch.float64).index_add(0, group_out.index_select(0, group), rows)

    assert relative_error(grouped(first, second, features), written_out(first, second, features)) <= 1e-14
    assert torch.autograd.gradcheck(grouped, (first, second, features))
    assert torch.autograd.gradgradcheck(grouped, (first, second, features))


def test_perfect_crystal_forces_vanish():
    """Symmetry: every atom of a perfect fcc crystal is a centre of inversion, so its force is zero."""
    model = build_small("gemnet_oc")
    out = evaluate(model, bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1)))
    assert float(out[keys.FORCES].abs().max()) <= 1e-12


@pytest.mark.parametrize("strict", [True, False])
def test_neighbour_caps_do_not_depend_on_atom_order(strict):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[2, 5]] = "Au"
    atoms.rattle(0.02, seed=3)
    capped = dict(max_neighbors=5, max_neighbors_qint=3, max_neighbors_aeaint=4, max_neighbors_aint=6, enforce_max_neighbors_strictly=strict)
    model = build_small("gemnet_oc", **capped)
    uncapped = build_small("gemnet_oc")
    order = np.random.default_rng(0).permutation(len(atoms))
    a, b = evaluate(model, atoms), evaluate(model, atoms[order])
    assert relative_error(b[keys.ENERGY], a[keys.ENERGY]) <= 1e-12
    assert relative_error(b[keys.FORCES], a[keys.FORCES][order]) <= 1e-10
    assert abs(float(a[keys.ENERGY] - evaluate(uncapped, atoms)[keys.ENERGY])) > 1e-6, "the caps must change the model"
    # ties in a perfect crystal: the strict cap picks by geometry, the same for any atom order
    crystal = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    a, b = evaluate(model, crystal), evaluate(model, crystal[order])
    assert relative_error(b[keys.ENERGY], a[keys.ENERGY]) <= 1e-12


def test_direct_forces_are_not_gradients_and_give_no_stress():
    model = build_small("gemnet_oc", direct_forces=True)
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.rattle(0.05, seed=1)
    out = evaluate(model, atoms)
    assert out[keys.FORCES].shape == (len(atoms), 3)
    assert keys.STRESS not in out and keys.VIRIAL not in out and keys.EDGE_FORCES not in out
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))[0]
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.numpy().T
    rotated.cell = atoms.cell.array @ rotation.numpy().T
    assert relative_error(evaluate(model, rotated)[keys.FORCES], out[keys.FORCES] @ rotation.T) <= 1e-10
    assert float(out[keys.FORCES].sum(0).abs().max()) > 1e-6, "direct forces need not sum to zero"
    # coupled forces are pairwise: equal and opposite along each edge, so they sum to zero
    coupled = evaluate(build_small("gemnet_oc", direct_forces=True, forces_coupled=True), atoms)
    assert float(coupled[keys.FORCES].sum(0).abs().max()) <= 1e-12


def test_scale_factors_fit_and_load(tmp_path):
    model = build_small("gemnet_oc")
    frames = [bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 1, 1)) for _ in range(3)]
    for seed, atoms in enumerate(frames):
        atoms.symbols[[seed, 4]] = "Au"
        atoms.rattle(0.1, seed=seed)
    graphs = [batch_graphs([graph_from_atoms(a, model.r_max, model.type_names, torch.float64) for a in frames])]
    values = model.core.fit_scale_factors(graphs)
    # in execution order: the first output block runs before the first interaction block
    assert list(values)[0] == "out_blocks.0.scale_sum" and set(values) == set(scale_factors(model.core))
    assert all(np.isfinite(v) and v > 0 for v in values.values())
    assert any(abs(v - 1.0) > 0.05 for v in values.values())
    # fitted: each factor's output now has its reference's variance; refitting changes nothing
    refitted = model.core.fit_scale_factors(graphs)
    assert max(abs(refitted[name] - values[name]) / values[name] for name in values) <= 1e-10
    path = tmp_path / "scales.json"
    path.write_text(json.dumps(values))
    loaded = build_small("gemnet_oc")
    loaded.core.load_scale_factors(path)
    atoms = frames[0]
    assert relative_error(evaluate(loaded, atoms)[keys.ENERGY], evaluate(model, atoms)[keys.ENERGY]) <= 1e-12
    with pytest.raises(ValueError, match="missing values"):
        load_scale_factors(model.core, {name: 1.0 for name in list(values)[1:]})
    with pytest.raises(FileNotFoundError, match="absent.json does not exist"):
        load_scale_factors(model.core, tmp_path / "absent.json")
    # a checkpoint holds the values: it loads without the scale file its config names
    configured = build_small("gemnet_oc", scale_file=str(path))
    configured.core.load_scale_factors(path)
    checkpoint = save_checkpoint(configured, tmp_path / "model.ckpt")
    path.unlink()
    restored = load_checkpoint(checkpoint)
    assert relative_error(evaluate(restored, atoms)[keys.ENERGY], evaluate(model, atoms)[keys.ENERGY]) <= 1e-12


def test_options_fairchem_spells():
    config = GemNetOCConfig(
        type_names=["Cu"], rbf={"name": "bernstein", "pregamma_initial": 0.5}, envelope={"name": "exponential"},
        cbf="gaussian", sbf={"name": "gaussian_outer", "trainable": True}, regress_forces=True, output_init="heorthogonal",
        otf_graph=True, use_pbc=True, qint_tags=[1, 2], quad_interaction=True, cutoff=5.0, cutoff_qint=4.0,
    )
    assert config.do_derivatives and config.output_init == "HeOrthogonal" and config.r_max == 5.0
    assert GemNetOCConfig(type_names=["Cu"], atom_interaction=True, cutoff=5.0, cutoff_aint=7.0).r_max == 7.0
    # a cutoff of an interaction that is off falls back to the main cutoff, as in fairchem
    assert GemNetOCConfig(type_names=["Cu"], cutoff=5.0, cutoff_aint=7.0).r_max == 5.0
    with pytest.raises(ValueError, match="extensive=False"):
        GemNetOCConfig(type_names=["Cu"], extensive=False)
    with pytest.raises(ValueError, match="num_elements"):
        GemNetOCConfig(type_names=["Cu"], num_elements=10)
    with pytest.raises(ValueError, match="below GemNet-OC's largest cutoff"):
        GemNetOCConfig(type_names=["Cu"], r_max=4.0)
    with pytest.raises(ValueError, match="vector"):
        GemNetOCConfig(type_names=["Cu"], y_node_vector={"num_tasks": 1})
    # type names need not be elements with one embedding row per type
    model = build_model("gemnet_oc", type_names=["A", "B"], num_elements=None, **SMALL_MODEL_OPTIONS["gemnet_oc"])
    assert model.core.atom_emb.embeddings.num_embeddings == 2
