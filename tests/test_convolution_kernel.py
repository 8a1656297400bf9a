"""The fused tensor-product convolution op against e3nn and against its written-out reference."""

import os
import subprocess
import sys

import pytest
import torch
from e3nn import o3

import mlipkit
from conftest import results_per_instruction_set
from mlipkit import ops
from mlipkit.nn.interaction import Convolution
from mlipkit.nn.scatter import sum_into_segments


def convolutions_of(model):
    return [module for module in model.modules() if isinstance(module, Convolution)]


#: Models whose convolutions cover every irreps combination the registry builds:
#: both parities, l up to 3, odd channel counts, uneven multiplicities.
KERNEL_MODELS = {
    "nequip_parity_l2": ("nequip", dict(num_layers=3, max_ell=2, num_features=3)),
    "nequip_so3_l3": ("nequip", dict(num_layers=2, max_ell=3, num_features=1, parity=False)),
    "nequip_uneven": ("nequip", dict(num_layers=2, max_ell=1, target_irreps="17x0e + 3x1o + 2x1e + 1x0o")),
    "mace_l3": ("mace", dict(num_interactions=2, max_ell=3, hidden_irreps="3x0e + 3x1o")),
    "mace_odd": ("mace", dict(num_interactions=2, max_ell=2, hidden_irreps="1x0e + 1x0o + 1x1o + 1x1e + 1x2e")),
}


def build(name, dtype=torch.float64):
    registry_name, options = KERNEL_MODELS[name]
    return mlipkit.build_model(registry_name, dtype=dtype, type_names=["Cu", "Au"], r_max=4.0, seed=0, **options)


def random_graph(num_nodes, num_edges, seed, isolated=()):
    """Edges sorted by receiver (repeats and self-edges allowed); nodes in ``isolated`` have no edges."""
    generator = torch.Generator().manual_seed(seed)
    allowed = torch.tensor([n for n in range(num_nodes) if n not in isolated])
    pick = lambda: allowed[torch.randint(0, len(allowed), (num_edges,), generator=generator)]  # noqa: E731
    sender, receiver = pick(), pick()
    order = torch.argsort(receiver, stable=True)
    return torch.stack([sender[order], receiver[order]])


def operands(convolution, num_nodes, edge_index, dtype, seed):
    generator = torch.Generator().manual_seed(seed)
    tp = convolution.tensor_product
    num_edges = edge_index.shape[1]
    x = torch.randn(num_nodes, tp.irreps_in1.dim, generator=generator, dtype=dtype)
    sh = torch.randn(num_edges, tp.irreps_in2.dim, generator=generator, dtype=dtype)
    w = torch.randn(num_edges, tp.weight_numel, generator=generator, dtype=dtype)
    return x, sh, w


def e3nn_convolution(convolution, x, sh, w, edge_index):
    messages = convolution.tensor_product(x.index_select(0, edge_index[0]), sh, w)
    return sum_into_segments(messages, edge_index[1], x.shape[0])


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


@pytest.mark.parametrize("name", sorted(KERNEL_MODELS))
def test_fused_equals_e3nn_with_derivatives(name):
    """Values and first derivatives (w.r.t. features, harmonics, weights) equal e3nn's to 1e-12."""
    worst = 0.0
    for layer, convolution in enumerate(convolutions_of(build(name))):
        edge_index = random_graph(9, 40, seed=layer, isolated=(4,))
        x, sh, w = (t.requires_grad_(True) for t in operands(convolution, 9, edge_index, torch.float64, layer))
        cotangent = torch.randn(9, convolution.tensor_product.irreps_out.dim, dtype=torch.float64)
        results = []
        for function in (convolution.fused, lambda *a: e3nn_convolution(convolution, *a)):
            out = function(x, sh, w, edge_index)
            results.append((out, *torch.autograd.grad(out, (x, sh, w), cotangent)))
        for fused, reference in zip(*results):
            worst = max(worst, relative(fused, reference))
            assert relative(fused, reference) <= 1e-12
        assert torch.equal(results[0][0][4], torch.zeros_like(results[0][0][4]))  # the node without edges
    print(f"{name}: largest relative difference {worst:.1e}")


def fused_op_and_reference(convolution):
    fused = convolution.fused
    plan = (fused.couplings, fused.paths, fused.num_out_features)
    return (
        lambda x, sh, w, ei: ops.tensor_product_convolution(x, sh, w, ei, *plan),
        lambda x, sh, w, ei: ops.tensor_product_convolution_reference(x, sh, w, ei, *plan),
    )


@pytest.mark.parametrize("name", ["nequip_parity_l2", "mace_l3"])
def test_gradcheck_and_gradgradcheck(name):
    convolution = convolutions_of(build(name))[-1]
    op, _ = fused_op_and_reference(convolution)
    edge_index = random_graph(4, 9, seed=1, isolated=(2,))
    inputs = tuple(t.requires_grad_(True) for t in operands(convolution, 4, edge_index, torch.float64, 1))
    assert torch.autograd.gradcheck(lambda *a: op(*a, edge_index), inputs)
    assert torch.autograd.gradgradcheck(lambda *a: op(*a, edge_index), inputs)


def test_second_and_third_derivatives_match_reference():
    convolution = convolutions_of(build("nequip_parity_l2"))[-1]
    edge_index = random_graph(6, 20, seed=2)
    base = operands(convolution, 6, edge_index, torch.float64, 2)

    def derivatives(op):
        x, sh, w = (t.clone().requires_grad_(True) for t in base)
        energy = op(x, sh, w, edge_index).pow(2).sum()
        first = torch.autograd.grad(energy, (x, sh, w), create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), (x, sh, w), create_graph=True)
        third = torch.autograd.grad(sum(g.sum() for g in second), (x, sh, w))
        return (*first, *second, *third)

    fused, reference = (derivatives(op) for op in fused_op_and_reference(convolution))
    for a, b in zip(fused, reference):
        assert relative(a, b) <= 1e-12


def test_opcheck():
    convolution = convolutions_of(build("nequip_uneven"))[-1]
    fused = convolution.fused
    edge_index = random_graph(5, 12, seed=3)
    x, sh, w = (t.requires_grad_(True) for t in operands(convolution, 5, edge_index, torch.float64, 3))
    plan = (fused.couplings, fused.paths, fused.num_out_features)
    torch.library.opcheck(torch.ops.mlipkit.tensor_product_convolution.default, (x, sh, w, edge_index, *plan))
    grad_out = torch.randn(5, fused.num_out_features, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.mlipkit.tensor_product_convolution_backward.default,
        (grad_out, x, sh, w, edge_index, fused.couplings, fused.paths),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_independent_of_thread_count(dtype):
    convolution = convolutions_of(build("nequip_parity_l2", dtype))[-1]
    edge_index = random_graph(64, 900, seed=4)
    x, sh, w = (t.requires_grad_(True) for t in operands(convolution, 64, edge_index, dtype, 4))
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            out = convolution.fused(x, sh, w, edge_index)
            results.append((out, *torch.autograd.grad(out.pow(2).sum(), (x, sh, w))))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


#: name: (number of nodes, edge_index)
SMALL_AND_EMPTY_GRAPHS = {
    "one atom, no edges": (1, torch.zeros(2, 0, dtype=torch.long)),
    "one atom, a self-edge": (1, torch.zeros(2, 1, dtype=torch.long)),
    "atoms, no edges": (5, torch.zeros(2, 0, dtype=torch.long)),
    "no atoms": (0, torch.zeros(2, 0, dtype=torch.long)),
}


def test_small_and_empty_graphs():
    convolution = convolutions_of(build("nequip_parity_l2"))[-1]
    reference = lambda *a: e3nn_convolution(convolution, *a)  # noqa: E731
    for name, (num_nodes, edge_index) in SMALL_AND_EMPTY_GRAPHS.items():
        x, sh, w = (t.requires_grad_(True) for t in operands(convolution, num_nodes, edge_index, torch.float64, 5))
        out = convolution.fused(x, sh, w, edge_index)
        expected = reference(x, sh, w, edge_index)
        assert out.shape == expected.shape, name
        assert torch.allclose(out, expected, atol=1e-12, rtol=0), name
        if num_nodes:
            grads = torch.autograd.grad(out.sum(), (x, sh, w), allow_unused=True)
            assert grads[1].shape == sh.shape and grads[2].shape == w.shape, name


def test_bad_inputs_are_rejected():
    convolution = convolutions_of(build("nequip_parity_l2"))[-2]  # reads every input column (the last layer: 0e paths)
    fused = convolution.fused
    edge_index = random_graph(6, 10, seed=6)
    x, sh, w = operands(convolution, 6, edge_index, torch.float64, 6)
    x = x.index_select(1, fused.in_columns)
    plan = (fused.couplings, fused.paths, fused.num_out_features)
    call = ops.tensor_product_convolution
    with pytest.raises(RuntimeError, match="not sorted"):
        call(x, sh, w, edge_index.flip(1), *plan)
    with pytest.raises(RuntimeError, match="outside"):
        call(x, sh, w, edge_index.clamp(max=5) + torch.tensor([[6], [0]]), *plan)
    with pytest.raises(RuntimeError, match="int64"):
        call(x, sh, w, edge_index.int(), *plan)
    with pytest.raises(RuntimeError, match="one dtype"):
        call(x, sh.float(), w, edge_index, *plan)
    with pytest.raises(RuntimeError, match="edge_sh has"):
        call(x, sh[:-1], w, edge_index, *plan)
    with pytest.raises(RuntimeError, match="node features have"):
        call(x[:, :-1], sh, w, edge_index, *plan)
    with pytest.raises(RuntimeError, match="weight columns"):
        call(x, sh, w[:, :-1], edge_index, *plan)
    with pytest.raises(RuntimeError, match="8 integers per path"):
        call(x, sh, w, edge_index, fused.couplings, fused.paths[:-1], fused.num_out_features)
    with pytest.raises(RuntimeError, match="couplings has"):
        call(x, sh, w, edge_index, fused.couplings[:-1], fused.paths, fused.num_out_features)
    bad_path = list(fused.paths)
    bad_path[2] = bad_path[0] + bad_path[1] + 1
    with pytest.raises(RuntimeError, match="not allowed"):
        call(x, sh, w, edge_index, fused.couplings, bad_path, fused.num_out_features)


def test_every_instruction_set_gives_the_same_numbers():
    """The baseline (SSE2) build of the kernels equals the one this CPU picks (AVX2/AVX-512)."""
    script = (
        "import torch, sys; sys.path.insert(0, {tests!r}); import test_convolution_kernel as t; from mlipkit import ops\n"
        "c = t.convolutions_of(t.build('mace_l3'))[-1]; ei = t.random_graph(7, 60, seed=7)\n"
        "x, sh, w = (v.requires_grad_(True) for v in t.operands(c, 7, ei, torch.float64, 7))\n"
        "out = c.fused(x, sh, w, ei); grads = torch.autograd.grad(out.pow(2).sum(), (x, sh, w))\n"
        "torch.save([ops.kernel_isa(), out.detach(), *grads], sys.argv[1])\n"
    ).format(tests=os.path.dirname(__file__))
    results = results_per_instruction_set(script, "convolution")
    assert results["baseline"][0] == "baseline"
    for a, b in zip(results["baseline"][1:], results["native"][1:]):
        assert relative(a, b) <= 1e-13


def test_unknown_instruction_set_is_refused():
    env = dict(os.environ, MLIPKIT_CPU_ISA="sse9")
    result = subprocess.run(
        [sys.executable, "-c", "from mlipkit import ops; ops.kernel_isa()"], env=env, capture_output=True, text=True
    )
    assert result.returncode != 0 and "MLIPKIT_CPU_ISA=sse9 is not one of baseline, avx2, avx512" in result.stderr


def test_plan_reads_e3nn_layout():
    """The module form permutes e3nn's [mul][2l+1] layout to the kernel's and back."""
    irreps = o3.Irreps("2x0e + 3x1o + 2x2e")
    from mlipkit.nn.fused_convolution import component_major_columns

    columns = component_major_columns(irreps)
    assert sorted(columns.tolist()) == list(range(irreps.dim))
    # 3x1o starts at column 2: kernel column 2 + m*3 + u holds e3nn column 2 + u*3 + m
    assert columns[2 : 2 + 9].tolist() == [2, 5, 8, 3, 6, 9, 4, 7, 10]
