"""The convolution op with the radial MLP inside (mlipkit::radial_convolution) against the MLP followed by the
written-out convolution, and the memory it saves."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from e3nn import o3

from mlipkit import ops
from mlipkit.nn.interaction import Convolution
from mlipkit.nn.mlp import mlp_operands
from test_convolution_kernel import (
    KERNEL_MODELS,
    SMALL_AND_EMPTY_GRAPHS,
    build,
    convolutions_of,
    e3nn_convolution,
    random_graph,
    relative,
)

ACTIVATIONS = ["silu", "swish", "tanh", "sigmoid", "softplus", "gelu", "relu"]


def standalone_convolution(channels, hidden, activation="silu", max_ell=2):
    """A NequIP-style convolution with ``channels`` of every irrep up to ``max_ell`` and a radial MLP of ``hidden``."""
    irreps = o3.Irreps([(channels, (l, p)) for l in range(max_ell + 1) for p in (1, -1)])
    return Convolution(
        irreps, o3.Irreps.spherical_harmonics(max_ell), o3.Irreps("2x0e"), irreps, num_radial=8,
        radial_hidden=hidden, radial_activation=activation, radial_variance_scale=1.0, avg_num_neighbours=None,
        self_connection=False, deterministic_scatter=True,
    ).double()


def radial_operands(convolution, num_nodes, edge_index, seed, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    num_edges = edge_index.shape[1]
    x = torch.randn(num_nodes, convolution.tensor_product.irreps_in1.dim, generator=generator, dtype=dtype)
    sh = torch.randn(num_edges, convolution.tensor_product.irreps_in2.dim, generator=generator, dtype=dtype)
    radial = torch.randn(num_edges, convolution.radial.hs[0], generator=generator, dtype=dtype)
    return x, sh, radial


def op_and_reference(convolution, edge_index, activation=None):
    """(x, sh, radial, mlp_weights) -> aggregated messages, through the fused op and through the reference."""
    _, widths, scale = mlp_operands(convolution.radial)
    fused = convolution.fused
    arguments = (widths, activation or convolution.radial_activation, scale)
    plan = (fused.couplings, fused.paths, fused.num_out_features)
    return (
        lambda x, sh, r, w: ops.radial_convolution(x, sh, r, w, *arguments, edge_index, *plan),
        lambda x, sh, r, w: ops.radial_convolution_reference(x, sh, r, w, *arguments, edge_index, *plan),
    )


def values_and_first_derivatives(function, inputs, cotangent):
    inputs = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = function(*inputs)
    return (out, *torch.autograd.grad(out, inputs, cotangent))


def assert_op_equals_reference(convolution, num_nodes, edge_index, seed, activation=None):
    x, sh, radial = radial_operands(convolution, num_nodes, edge_index, seed)
    mlp_weights = mlp_operands(convolution.radial)[0].detach()
    op, reference = op_and_reference(convolution, edge_index, activation)
    cotangent = torch.randn(num_nodes, convolution.fused.num_out_features, dtype=torch.float64)
    fused = values_and_first_derivatives(op, (x, sh, radial, mlp_weights), cotangent)
    expected = values_and_first_derivatives(reference, (x, sh, radial, mlp_weights), cotangent)
    for name, a, b in zip(("output", "node features", "harmonics", "radial", "MLP weights"), fused, expected):
        assert relative(a, b) <= 1e-12, name
    return fused


@pytest.mark.parametrize("name", sorted(KERNEL_MODELS))
def test_equals_mlp_then_convolution_for_every_path_set(name):
    for layer, convolution in enumerate(convolutions_of(build(name))):
        edge_index = random_graph(9, 300, seed=layer, isolated=(4,))
        fused = assert_op_equals_reference(convolution, 9, edge_index, layer)
        assert torch.equal(fused[0][4], torch.zeros_like(fused[0][4]))  # the node without edges


@pytest.mark.parametrize("channels", [1, 3, 17, 32, 128])
@pytest.mark.parametrize("hidden", [[8], [64, 64]])
def test_channel_counts_and_hidden_widths(channels, hidden):
    convolution = standalone_convolution(channels, hidden, max_ell=1 if channels == 128 else 2)
    assert_op_equals_reference(convolution, 7, random_graph(7, 150, seed=channels), seed=channels)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_with_gradcheck_and_gradgradcheck(activation):
    convolution = standalone_convolution(2, [5, 4], activation, max_ell=1)
    edge_index = random_graph(4, 10, seed=1, isolated=(2,))
    assert_op_equals_reference(convolution, 4, edge_index, seed=2)
    op, _ = op_and_reference(convolution, edge_index)
    x, sh, radial = radial_operands(convolution, 4, edge_index, seed=3)
    inputs = tuple(t.requires_grad_(True) for t in (x, sh, radial, mlp_operands(convolution.radial)[0].detach()))
    assert torch.autograd.gradcheck(op, inputs)
    assert torch.autograd.gradgradcheck(op, inputs)


def test_force_training_derivatives_match_the_reference():
    """Energy -> forces (create_graph) -> loss -> weight gradients, as training takes them, to the third order."""
    convolution = convolutions_of(build("mace_l3"))[-1]
    edge_index = random_graph(6, 40, seed=4)
    base = (*radial_operands(convolution, 6, edge_index, seed=4), mlp_operands(convolution.radial)[0].detach())

    def derivatives(function):
        x, sh, radial, weights = (t.clone().requires_grad_(True) for t in base)
        energy = function(x, sh, radial, weights).pow(2).sum()
        first = torch.autograd.grad(energy, (x, sh, radial), create_graph=True)
        loss = sum(g.pow(2).sum() for g in first)
        second = torch.autograd.grad(loss, (x, sh, radial, weights), create_graph=True)
        third = torch.autograd.grad(sum(g.sum() for g in second), (x, sh, radial, weights))
        return (*first, *second, *third)

    for a, b in zip(*(derivatives(function) for function in op_and_reference(convolution, edge_index))):
        assert relative(a, b) <= 1e-12


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_force_training_loss_gradient_matches_the_reference(activation):
    """Forces with create_graph (the MLP weights not asked for), then the loss's gradient without a graph (the
    plain op's fused double backward inside), against the reference and by finite differences."""
    convolution = standalone_convolution(3, [7, 5], activation, max_ell=2)
    edge_index = random_graph(6, 40, seed=7, isolated=(4,))
    base = (*radial_operands(convolution, 6, edge_index, seed=8), mlp_operands(convolution.radial)[0].detach())

    def forces_like(function):
        def first(x, sh, radial, weights):
            energy = function(x, sh, radial, weights).pow(2).sum()
            return torch.autograd.grad(energy, (x, sh, radial), create_graph=True)
        return first

    def loss_gradient(function):
        inputs = tuple(t.clone().requires_grad_(True) for t in base)
        first = forces_like(function)(*inputs)
        loss = sum((g * g.detach().sin()).sum() for g in first)
        return (*first, *torch.autograd.grad(loss, inputs))

    op, reference = op_and_reference(convolution, edge_index)
    for a, b in zip(loss_gradient(op), loss_gradient(reference)):
        assert relative(a, b) <= 1e-11
    inputs = tuple(t.clone().requires_grad_(True) for t in base)
    assert torch.autograd.gradcheck(forces_like(op), inputs)


def test_plain_double_backward_op_equals_six_calls():
    """tensor_product_convolution_double_backward = the three forward and three backward calls it replaces."""
    convolution = standalone_convolution(5, [4])
    edge_index = random_graph(7, 60, seed=9, isolated=(3,))
    fused = convolution.fused
    plan = (edge_index, fused.couplings, fused.paths)
    generator = torch.Generator().manual_seed(9)
    x, sh, _ = radial_operands(convolution, 7, edge_index, seed=9)
    w = torch.randn(60, convolution.tensor_product.weight_numel, generator=generator, dtype=torch.float64)
    g = torch.randn(7, fused.num_out_features, generator=generator, dtype=torch.float64)
    dx, dsh, dw = (torch.randn(t.shape, generator=generator, dtype=torch.float64) for t in (x, sh, w))
    forward = lambda a, b, c: ops.tensor_product_convolution(a, b, c, *plan, fused.num_out_features)
    backward = lambda a, b, c: torch.ops.mlipkit.tensor_product_convolution_backward(g, a, b, c, *plan)
    expected = (
        forward(dx, sh, w) + forward(x, dsh, w) + forward(x, sh, dw),
        backward(x, dsh, w)[0] + backward(x, sh, dw)[0],
        backward(dx, sh, w)[1] + backward(x, sh, dw)[1],
        backward(dx, sh, w)[2] + backward(x, dsh, w)[2],
    )
    arguments = (g, x, sh, w, dx, dsh, dw, *plan)
    result = torch.ops.mlipkit.tensor_product_convolution_double_backward(*arguments)
    assert len(result) == len(expected)
    for a, b in zip(result, expected):
        assert relative(a, b) <= 1e-12
    torch.library.opcheck(torch.ops.mlipkit.tensor_product_convolution_double_backward.default, arguments)


def test_opcheck():
    convolution = standalone_convolution(3, [6])
    edge_index = random_graph(5, 12, seed=5)
    x, sh, radial = (t.requires_grad_(True) for t in radial_operands(convolution, 5, edge_index, seed=5))
    weights, widths, scale = mlp_operands(convolution.radial)
    weights = weights.detach().requires_grad_(True)
    fused = convolution.fused
    arguments = (weights, widths, "silu", scale, edge_index, fused.couplings, fused.paths)
    torch.library.opcheck(torch.ops.mlipkit.radial_convolution.default, (x, sh, radial, *arguments, fused.num_out_features))
    grad_out = torch.randn(5, fused.num_out_features, dtype=torch.float64)
    for weight_gradients in (True, False):
        torch.library.opcheck(
            torch.ops.mlipkit.radial_convolution_backward.default,
            (grad_out, x.detach(), sh.detach(), radial.detach(), weights.detach(), *arguments[1:], weight_gradients),
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_many_tiles_bitwise_independent_of_thread_count(dtype):
    """More edges than one tile holds, a receiver and a sender with hundreds of edges, more tiles than partial sums."""
    convolution = standalone_convolution(4, [16]).to(dtype)
    edge_index = random_graph(300, 12000, seed=6)
    crowded = torch.stack([torch.full((400,), 7), torch.full((400,), 11)])
    edge_index = torch.cat([edge_index, crowded], dim=1)
    edge_index = edge_index[:, torch.argsort(edge_index[1], stable=True)]
    x, sh, radial = (t.requires_grad_(True) for t in radial_operands(convolution, 300, edge_index, 6, dtype))
    weights = mlp_operands(convolution.radial)[0].detach().requires_grad_(True)
    op, reference = op_and_reference(convolution, edge_index)
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            out = op(x, sh, radial, weights)
            results.append((out, *torch.autograd.grad(out.pow(2).sum(), (x, sh, radial, weights))))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)
    if dtype == torch.float64:
        expected = reference(x, sh, radial, weights)
        expected = (expected, *torch.autograd.grad(expected.pow(2).sum(), (x, sh, radial, weights)))
        for a, b in zip(results[0], expected):
            assert relative(a, b) <= 1e-12


def test_small_and_empty_graphs():
    convolution = standalone_convolution(2, [4])
    for name, (num_nodes, edge_index) in SMALL_AND_EMPTY_GRAPHS.items():
        x, sh, radial = (t.requires_grad_(True) for t in radial_operands(convolution, num_nodes, edge_index, 7))
        weights = mlp_operands(convolution.radial)[0].detach().requires_grad_(True)
        op, reference = op_and_reference(convolution, edge_index)
        out, expected = op(x, sh, radial, weights), reference(x, sh, radial, weights)
        assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-12, rtol=0), name
        grads = torch.autograd.grad(out.sum(), (x, sh, radial, weights))
        expected_grads = torch.autograd.grad(expected.sum(), (x, sh, radial, weights), allow_unused=True, materialize_grads=True)
        for g, e in zip(grads, expected_grads):
            assert g.shape == e.shape and torch.allclose(g, e, atol=1e-12, rtol=0), name


def test_module_equals_e3nn_with_its_mlp():
    """Convolution's fused path (radial MLP inside) = e3nn's tensor product fed by the e3nn MLP."""
    convolution = convolutions_of(build("nequip_parity_l2"))[1]
    edge_index = random_graph(8, 120, seed=8)
    x, sh, radial = radial_operands(convolution, 8, edge_index, seed=8)
    fused = convolution.fused.with_radial_mlp(x, sh, radial, convolution.radial, convolution.radial_activation, edge_index)
    expected = e3nn_convolution(convolution, x, sh, convolution.radial(radial), edge_index)
    assert relative(fused, expected) <= 1e-12


def test_bad_inputs_are_rejected():
    convolution = standalone_convolution(2, [4])
    edge_index = random_graph(6, 10, seed=9)
    x, sh, radial = radial_operands(convolution, 6, edge_index, seed=9)
    weights, widths, scale = mlp_operands(convolution.radial)
    fused = convolution.fused
    x = x.index_select(1, fused.in_columns)
    plan = (edge_index, fused.couplings, fused.paths, fused.num_out_features)
    call = ops.radial_convolution
    with pytest.raises(RuntimeError, match="unknown activation 'mish'"):
        call(x, sh, radial, weights, widths, "mish", scale, *plan)
    with pytest.raises(RuntimeError, match="need .* weights but mlp_weights has"):
        call(x, sh, radial, weights[:-1], widths, "silu", scale, *plan)
    with pytest.raises(RuntimeError, match="takes 8 radial features but edge_radial has 7"):
        call(x, sh, radial[:, :-1], weights, widths, "silu", scale, *plan)
    with pytest.raises(RuntimeError, match="one dtype"):
        call(x, sh, radial.float(), weights, widths, "silu", scale, *plan)
    with pytest.raises(RuntimeError, match="and edge_radial 9"):
        call(x, sh, radial[:-1], weights, widths, "silu", scale, *plan)
    with pytest.raises(RuntimeError, match="weight columns"):
        call(x, sh, radial, weights[: -widths[-2]], [*widths[:-1], widths[-1] - 1], "silu", scale, *plan)
    with pytest.raises(RuntimeError, match="not sorted"):
        call(x, sh, radial, weights, widths, "silu", scale, edge_index.flip(1), *plan[1:])


MEMORY_SCRIPT = textwrap.dedent(
    """
    import threading, time, torch
    import mlipkit
    from ase.build import bulk
    from mlipkit.calculators import MLIPCalculator

    def anonymous_kb():  # the process's own memory; file pages of libraries come and go with the machine's load
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("RssAnon:"))

    torch.set_num_threads(1)
    model = mlipkit.build_model("nequip", dtype=torch.float32, type_names=["Cu"], r_max=5.0, seed=0,
                                num_layers=4, max_ell=2, num_features=32)
    calc = MLIPCalculator(model)
    warm = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    warm.calc = calc
    warm.get_forces()
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(6)
    atoms.rattle(0.05, seed=1)
    atoms.calc = calc
    before, peak, done = anonymous_kb(), [0], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], anonymous_kb())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    atoms.get_forces()
    done.set()
    watcher.join()
    print((peak[0] - before) / len(atoms))
    """
)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the process's memory from /proc")
def test_energy_and_forces_memory_per_atom():
    """The default NequIP's energy+forces call on 864 Cu atoms (float32, eager) peaks at about 100 KB per atom of
    anonymous memory above the process's before the call (2026-12-04; ~550 KB with the per-edge weights stored):
    fail if it doubles."""
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    kilobytes_per_atom = float(result.stdout.split()[-1])
    assert 0 < kilobytes_per_atom < 230, kilobytes_per_atom
