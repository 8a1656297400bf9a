"""Physics tests every registered model must pass (parametrised over the registry)."""

import copy

import numpy as np
import pytest
import torch
from ase import Atoms
from e3nn import o3

from conftest import REFERENCE_KERNELS, SMALL_MODEL_OPTIONS, STRUCTURES, TYPE_NAMES, build_small, evaluate, evaluate_many, relative_error
from mlipkit.data import compute_edge_vectors, graph_from_atoms, keys
from mlipkit.models import REGISTRY, load_checkpoint, save_checkpoint

# measured errors are printed (pytest -s) so closing notes can quote them
def report(name, value):
    print(f"\n[measured] {name}: {value:.3e}")


def test_every_model_has_test_options():
    assert set(REGISTRY) == set(SMALL_MODEL_OPTIONS) == set(REFERENCE_KERNELS)


def transformed(atoms: Atoms, matrix: np.ndarray, translation=np.zeros(3)) -> Atoms:
    atoms = atoms.copy()
    atoms.positions = atoms.positions @ matrix.T + translation
    atoms.cell = atoms.cell.array @ matrix.T
    return atoms


ROTATION = o3.angles_to_matrix(*torch.tensor([0.7, -1.3, 2.1], dtype=torch.float64)).numpy()
MIRROR = np.diag([-1.0, 1.0, 1.0])


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
@pytest.mark.parametrize("operation", ["rotation", "reflection", "rotoreflection"])
def test_o3_equivariance(small_model, structure, operation):
    matrix = {"rotation": ROTATION, "reflection": MIRROR, "rotoreflection": ROTATION @ MIRROR}[operation]
    atoms = STRUCTURES[structure]()
    reference = evaluate(small_model, atoms)
    moved = evaluate(small_model, transformed(atoms, matrix, translation=np.array([0.3, -1.1, 2.0])))
    R = torch.from_numpy(matrix)
    energy_error = relative_error(moved[keys.ENERGY], reference[keys.ENERGY])
    force_error = relative_error(moved[keys.FORCES], reference[keys.FORCES] @ R.T)
    virial_error = relative_error(moved[keys.VIRIAL], R @ reference[keys.VIRIAL] @ R.T)
    report(f"{operation} {structure} energy/force/virial", max(energy_error, force_error, virial_error))
    assert energy_error <= 1e-10
    assert force_error <= 1e-10
    assert virial_error <= 1e-10
    assert relative_error(moved[keys.NODE_ENERGIES], reference[keys.NODE_ENERGIES]) <= 1e-10


def test_permutation_equivariance(small_model):
    atoms = STRUCTURES["molecule"]()
    permutation = np.random.default_rng(0).permutation(len(atoms))
    reference = evaluate(small_model, atoms)
    permuted = evaluate(small_model, atoms[permutation])
    assert relative_error(permuted[keys.ENERGY], reference[keys.ENERGY]) <= 1e-12
    assert relative_error(permuted[keys.FORCES], reference[keys.FORCES][permutation]) <= 1e-12
    assert relative_error(permuted[keys.NODE_ENERGIES], reference[keys.NODE_ENERGIES][permutation]) <= 1e-12


def energy_of(model, atoms):
    return float(evaluate(model, atoms)[keys.ENERGY].detach()[0])


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_forces_match_finite_differences(small_model, structure):
    atoms = STRUCTURES[structure]()
    forces = evaluate(small_model, atoms)[keys.FORCES].detach().numpy()
    h = 1e-4
    worst = 0.0
    for atom in range(min(len(atoms), 4)):
        for axis in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[atom, axis] += h
            minus.positions[atom, axis] -= h
            numerical = -(energy_of(small_model, plus) - energy_of(small_model, minus)) / (2 * h)
            worst = max(worst, abs(numerical - forces[atom, axis]))
    report(f"finite-difference force error {structure} (max |F|={np.abs(forces).max():.2f})", worst)
    assert worst <= 1e-6 * max(1.0, np.abs(forces).max())


def test_stress_matches_finite_strain(small_model):
    atoms = STRUCTURES["triclinic"]()
    stress = evaluate(small_model, atoms)[keys.STRESS][0].detach().numpy()
    volume = atoms.get_volume()
    h = 1e-5
    numerical = np.zeros((3, 3))
    for a in range(3):
        for b in range(3):
            strains = []
            for sign in (1, -1):
                strain = np.eye(3)
                strain[a, b] += sign * h / 2
                strain[b, a] += sign * h / 2
                strains.append(energy_of(small_model, transformed(atoms, strain)))
            numerical[a, b] = (strains[0] - strains[1]) / (2 * h) / volume
    worst = np.abs(numerical - stress).max()
    report(f"finite-strain stress error (max |stress|={np.abs(stress).max():.3f})", worst)
    assert worst <= 1e-7 * max(1.0, np.abs(stress).max())


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_edge_force_route_equals_autograd_through_positions(small_model, structure):
    atoms = STRUCTURES[structure]()
    graph = graph_from_atoms(atoms, small_model.r_max, small_model.type_names, torch.float64)
    positions = graph[keys.POSITIONS].requires_grad_(True)
    graph[keys.EDGE_VECTORS] = compute_edge_vectors(graph)
    outputs = small_model(graph)
    (gradient,) = torch.autograd.grad(outputs[keys.ENERGY].sum(), positions)
    assert relative_error(outputs[keys.FORCES], -gradient) <= 1e-12
    assert relative_error(outputs[keys.NODE_VIRIALS].sum(0), outputs[keys.VIRIAL][0]) <= 1e-12
    assert relative_error(outputs[keys.NODE_ENERGIES].sum(), outputs[keys.ENERGY][0]) <= 1e-12


def test_inference_under_no_grad_gives_the_same_outputs(small_model):
    """Calculators evaluate under torch.no_grad (no graph to the weights); forces, stress and virials must not
    turn into zeros there, and the forces must carry no graph."""
    atoms = STRUCTURES["triclinic"]()
    expected = evaluate(small_model, atoms)
    with torch.no_grad():
        outputs = evaluate(small_model, atoms)
    assert set(outputs) == set(expected)
    for name in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.NODE_VIRIALS):
        assert relative_error(outputs[name], expected[name].detach()) <= 1e-13, name
    assert float(outputs[keys.FORCES].abs().max()) > 1e-3
    assert not outputs[keys.FORCES].requires_grad


def saved_bytes(model, atoms: Atoms) -> int:
    """The distinct storages autograd keeps for the backward during one evaluation under torch.no_grad."""
    storages = {}

    def pack(tensor):
        storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.no_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        evaluate(model, atoms)
    return sum(storages.values())


def test_inference_keeps_nothing_for_weight_gradients(small_model):
    """Under torch.no_grad in eval mode nobody asks for weight gradients: autograd keeps what it keeps for the
    model with frozen weights, not each layer's input as well; the weights stay trainable parameters."""
    atoms = STRUCTURES["triclinic"]()
    frozen = copy.deepcopy(small_model).requires_grad_(False)
    assert saved_bytes(small_model, atoms) == saved_bytes(frozen, atoms) > 0
    assert all(isinstance(weight, torch.nn.Parameter) for weight in small_model.parameters())
    assert any(weight.requires_grad for weight in small_model.parameters())


@pytest.mark.parametrize("structure", ["triclinic", "slab"])
def test_supercell_energy_per_atom(small_model, structure):
    atoms = STRUCTURES[structure]()
    repeat = (2, 2, 2) if structure == "triclinic" else (2, 2, 1)
    supercell = atoms.repeat(repeat)
    small, large = evaluate(small_model, atoms), evaluate(small_model, supercell)
    n = int(np.prod(repeat))
    assert relative_error(large[keys.ENERGY] / len(supercell), small[keys.ENERGY] / len(atoms)) <= 1e-10
    assert relative_error(large[keys.FORCES][: len(atoms)], small[keys.FORCES]) <= 1e-10
    assert relative_error(large[keys.VIRIAL] / n, small[keys.VIRIAL]) <= 1e-10
    if structure == "triclinic":
        assert relative_error(large[keys.STRESS], small[keys.STRESS]) <= 1e-10


def test_batched_equals_one_by_one(small_model):
    structures = [make() for make in STRUCTURES.values()]
    batched = evaluate_many(small_model, structures)
    offset = 0
    for i, atoms in enumerate(structures):
        single = evaluate(small_model, atoms)
        assert relative_error(batched[keys.ENERGY][i], single[keys.ENERGY][0]) <= 1e-12
        assert relative_error(batched[keys.FORCES][offset : offset + len(atoms)], single[keys.FORCES]) <= 1e-12
        assert relative_error(batched[keys.VIRIAL][i], single[keys.VIRIAL][0]) <= 1e-12
        offset += len(atoms)
    assert torch.isnan(batched[keys.STRESS][1]).all(), "a molecule has no stress"


@pytest.mark.parametrize("symbol, shift", [("H", -1.0), ("Cu", -4.0), ("Au", -5.0)])
def test_isolated_atom_energy_is_its_shift(model_name, symbol, shift):
    model = build_small(model_name, per_type_energy_scales=[2.0, 3.0, 4.0, 5.0, 6.0])
    out = evaluate(model, Atoms(symbol, positions=[[0.0, 0.0, 0.0]]))
    assert abs(float(out[keys.ENERGY].detach()[0]) - shift) <= 1e-12
    assert float(out[keys.FORCES].abs().max()) == 0.0
    two_far_apart = evaluate(model, Atoms(symbol * 2, positions=[[0, 0, 0], [0, 0, 2 * model.r_max]]))
    assert abs(float(two_far_apart[keys.ENERGY].detach()[0]) - 2 * shift) <= 1e-12


def test_float32_agrees_with_float64(model_name):
    model64 = build_small(model_name)
    model32 = build_small(model_name, dtype=torch.float32)
    atoms = STRUCTURES["triclinic"]()
    out64, out32 = evaluate(model64, atoms), evaluate(model32, atoms, torch.float32)
    assert relative_error(out32[keys.ENERGY], out64[keys.ENERGY]) <= 1e-5
    assert relative_error(out32[keys.FORCES], out64[keys.FORCES]) <= 1e-4


def test_checkpoint_round_trip(model_name, tmp_path):
    model = build_small(model_name, seed=11)
    with torch.no_grad():  # move weights off their initial values
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    path = save_checkpoint(model, tmp_path / "model.ckpt")
    restored = load_checkpoint(path)
    assert next(restored.parameters()).dtype == torch.float64
    assert restored.config == model.config and restored.model_name == model_name
    atoms = STRUCTURES["triclinic"]()
    before, after = evaluate(model, atoms), evaluate(restored, atoms)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.NODE_ENERGIES):
        assert torch.equal(before[key], after[key]), key


def test_seed_makes_weights_reproducible(model_name):
    a, b = build_small(model_name, seed=3), build_small(model_name, seed=3)
    c = build_small(model_name, seed=4)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(x, y) for x, y in zip(a.parameters(), c.parameters()))


def test_force_loss_gradients_in_training_mode(model_name):
    model = build_small(model_name).train()
    atoms = STRUCTURES["triclinic"]()
    forces = evaluate(model, atoms)[keys.FORCES]
    assert forces.requires_grad, "training mode must keep the graph of the forces"
    forces.pow(2).sum().backward()
    without = {name for name, p in model.named_parameters() if p.requires_grad and p.grad is None}
    # the 0e shifts of NequIP's last layer (SSF shift, batch-norm biases) only offset its linear readout's energy
    last_layer = f"core.layer_adapters.{len(getattr(model.core, 'layers', ())) - 1}."
    constant_offsets = {
        name for name, _ in model.named_parameters() if name.startswith(last_layer) and name.endswith(("shift", "norm.bias"))
    } if model_name.endswith("nequip") else set()
    # forces come from the mean only (mean-variance models)
    constant_offsets |= {name for name, _ in model.named_parameters() if name.startswith("energy_uncertainty_readout.")}
    assert without <= constant_offsets, f"no force-loss gradient for {sorted(without - constant_offsets)}"
    assert sum(float(p.grad.abs().sum()) for p in model.parameters() if p.grad is not None) > 0
    eval_forces = evaluate(model.eval(), atoms)[keys.FORCES]
    assert not eval_forces.requires_grad
    # batch norm with batch statistics (adapter_batch_statistics) normalises by the batch in training mode
    if not any(getattr(module, "batch_statistics", False) for module in model.modules()):
        assert relative_error(eval_forces, forces.detach()) <= 1e-12


def test_dtype_changes(model_name, tmp_path):
    model32 = build_small(model_name, dtype=torch.float32)
    path = save_checkpoint(model32, tmp_path / "model32.ckpt")
    atoms = STRUCTURES["molecule"]()
    out32 = evaluate(model32, atoms, torch.float32)
    cast_up = evaluate(build_small(model_name, dtype=torch.float32).to(torch.float64), atoms)
    assert cast_up[keys.ENERGY].dtype == torch.float64
    assert relative_error(cast_up[keys.ENERGY], out32[keys.ENERGY]) <= 1e-5
    exact = load_checkpoint(path, dtype=torch.float64)
    assert next(exact.parameters()).dtype == torch.float64
    rotated = transformed(atoms, ROTATION)
    a, b = evaluate(exact, atoms), evaluate(exact, rotated)
    assert relative_error(b[keys.FORCES], a[keys.FORCES] @ torch.from_numpy(ROTATION).T) <= 1e-10


def test_deterministic_scatter_flag_gives_same_numbers(model_name):
    """The scatter choice of the e3nn reference path (the fused kernel sums in its own fixed order)."""
    if "deterministic_scatter_ops" not in REGISTRY[model_name].config_class.model_fields:
        pytest.skip(f"{model_name} has no deterministic_scatter_ops option (its sums are always deterministic)")
    atoms = STRUCTURES["molecule"]()
    a = evaluate(build_small(model_name, tensor_product_kernel="e3nn", deterministic_scatter_ops=True), atoms)
    b = evaluate(build_small(model_name, tensor_product_kernel="e3nn", deterministic_scatter_ops=False), atoms)
    assert relative_error(a[keys.FORCES], b[keys.FORCES]) <= 1e-12


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_kernels_equal_reference_path(model_name, structure):
    atoms = STRUCTURES[structure]()
    fused = evaluate(build_small(model_name), atoms)
    reference = evaluate(build_small(model_name, **REFERENCE_KERNELS[model_name]), atoms)
    names = [keys.ENERGY, keys.NODE_ENERGIES, keys.FORCES, keys.NODE_VIRIALS]
    names += [keys.STRESS] if structure == "triclinic" else []
    worst = max(relative_error(fused[name], reference[name]) for name in names)
    report(f"{model_name} kernels vs reference path, {structure}", worst)
    assert worst <= 1e-10


def test_kernels_train_like_reference_path(model_name):
    """One float64 optimiser step on an energy + force loss (double backward) moves the weights the same way."""
    atoms = STRUCTURES["triclinic"]()
    weights = []
    for kernels in ({}, REFERENCE_KERNELS[model_name]):
        model = build_small(model_name, **kernels).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        out = evaluate(model, atoms)
        (out[keys.ENERGY].pow(2).sum() + out[keys.FORCES].pow(2).sum()).backward()
        optimizer.step()
        weights.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    initial = torch.cat([p.detach().reshape(-1) for p in build_small(model_name).parameters()])
    fused_step, reference_step = weights[0] - initial, weights[1] - initial
    assert float(reference_step.abs().max()) > 1e-6, "the step must move the weights"
    report(f"{model_name} kernels vs reference path, weight update of a training step", relative_error(fused_step, reference_step))
    assert relative_error(fused_step, reference_step) <= 1e-10


def test_extra_node_and_edge_features(model_name):
    if "num_edge_feats" not in REGISTRY[model_name].config_class.model_fields:
        pytest.skip(f"{model_name} reads atom types and geometry only")
    model = build_small(model_name, num_node_feats=len(TYPE_NAMES) + 2, num_edge_feats=3)
    graph = graph_from_atoms(STRUCTURES["molecule"](), model.r_max, model.type_names, torch.float64)
    with pytest.raises(ValueError, match="needs graph field 'node_attrs'"):
        model(graph)
    graph[keys.NODE_ATTRS] = torch.randn(graph[keys.ATOM_TYPES].shape[0], 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs graph field 'edge_attrs'"):
        model(graph)
    graph[keys.EDGE_ATTRS] = torch.randn(graph[keys.EDGE_INDEX].shape[1], 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"has shape \(\d+, 2\), expected \(\d+, 3\)"):
        model(graph)
    graph[keys.EDGE_ATTRS] = torch.randn(graph[keys.EDGE_INDEX].shape[1], 3, dtype=torch.float64)
    energy = model(graph)[keys.ENERGY]
    graph[keys.NODE_ATTRS] = graph[keys.NODE_ATTRS] + 1.0
    assert float((model(graph)[keys.ENERGY] - energy).abs().detach()) > 1e-6, "extra features must reach the energy"


def test_output_heads_shapes_and_equivariance(model_name):
    model = build_small(
        "nequip",
        y_graph_scalars={"num_tasks": 2, "loss": {"name": "huber", "weight": 0.5}},
        y_graph_vector={"num_tasks": 1},
        y_node_scalars={"num_tasks": 3},
        y_node_vector={"num_tasks": 2, "loss": {"name": "l1"}},
    )
    assert model.config.y_graph_scalars.loss.name == "huber"
    structures = [STRUCTURES["molecule"](), STRUCTURES["triclinic"]()]
    out = evaluate_many(model, structures)
    n = sum(len(a) for a in structures)
    assert out[keys.GRAPH_SCALARS].shape == (2, 2) and out[keys.GRAPH_VECTORS].shape == (2, 1, 3)
    assert out[keys.NODE_SCALARS].shape == (n, 3) and out[keys.NODE_VECTORS].shape == (n, 2, 3)
    atoms = structures[0]
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))[0]
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.numpy().T
    a, b = evaluate(model, atoms), evaluate(model, rotated)
    assert relative_error(b[keys.NODE_VECTORS], a[keys.NODE_VECTORS] @ rotation.T) <= 1e-10
    assert relative_error(b[keys.GRAPH_VECTORS], a[keys.GRAPH_VECTORS] @ rotation.T) <= 1e-10
    assert relative_error(b[keys.NODE_SCALARS], a[keys.NODE_SCALARS]) <= 1e-10
    assert float(a[keys.NODE_VECTORS].detach().abs().max()) > 0


def test_readout_heads_selected_per_graph(model_name):
    model = build_small(model_name, num_readout_heads=3)
    structures = [STRUCTURES["molecule"](), STRUCTURES["triclinic"]()]
    graphs = [graph_from_atoms(a, model.r_max, model.type_names, torch.float64) for a in structures]
    energies = []
    for head in range(3):
        for graph in graphs:
            graph[keys.HEAD] = torch.tensor([head])
        energies.append(torch.stack([model(g)[keys.ENERGY][0] for g in graphs]))
    assert float((energies[0] - energies[1]).abs().min()) > 1e-6, "heads must differ"
    from mlipkit.data import batch_graphs

    graphs[0][keys.HEAD] = torch.tensor([2])
    graphs[1][keys.HEAD] = torch.tensor([0])
    mixed = model(batch_graphs(graphs))[keys.ENERGY]
    assert relative_error(mixed, torch.stack([energies[2][0], energies[0][1]])) <= 1e-12
    graphs[0][keys.HEAD] = torch.tensor([3])
    with pytest.raises(ValueError, match="selects heads"):
        model(graphs[0])


def test_energy_only_model(model_name):
    model = build_small(model_name, do_derivatives=False)
    out = evaluate(model, STRUCTURES["triclinic"]())
    assert keys.FORCES not in out and keys.STRESS not in out
    full = build_small(model_name)
    assert relative_error(out[keys.ENERGY], evaluate(full, STRUCTURES["triclinic"]())[keys.ENERGY]) <= 1e-12
