"""The channelwise polynomial op and MACE's sparse symmetric contraction against their references."""

import os
import random

import pytest
import torch
from e3nn import o3

from conftest import relative_error, results_per_instruction_set
from mlipkit import ops
from mlipkit.nn.symmetric_contraction import SymmetricContraction


def random_terms(num_terms, num_features, num_outputs, num_coefficients, seed):
    """Terms of every degree 1..4 with repeated factors and multipliers > 1."""
    rng = random.Random(seed)
    terms = []
    for _ in range(num_terms):
        degree = rng.randint(1, 4)
        factors = sorted(rng.randrange(num_features) for _ in range(degree))
        terms += [rng.randrange(num_outputs), rng.randrange(num_coefficients), rng.randint(1, 3), degree]
        terms += factors + [-1] * (4 - degree)
    return terms


def random_operands(num_nodes, num_features, num_sets, num_coefficients, channels, dtype, seed):
    """Features, node weights (some one-hot rows, some mixed, some zero) and coefficients."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(num_nodes, num_features, channels, dtype=dtype, generator=generator)
    node_weights = torch.rand(num_nodes, num_sets, dtype=dtype, generator=generator)
    node_weights[::3] = torch.nn.functional.one_hot(torch.arange(0, num_nodes, 3) % num_sets, num_sets).to(dtype)
    node_weights[1::4] = 0.0
    coefficients = torch.randn(num_sets, num_coefficients, channels, dtype=dtype, generator=generator)
    return features, node_weights, coefficients


PROBLEM = dict(num_nodes=9, num_features=6, num_sets=3, num_coefficients=11)


def problem(channels, dtype=torch.float64, seed=0, num_outputs=5, num_terms=40):
    terms = random_terms(num_terms, PROBLEM["num_features"], num_outputs, PROBLEM["num_coefficients"], seed)
    tensors = random_operands(*PROBLEM.values(), channels, dtype, seed)
    return tensors, terms, num_outputs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels", [1, 3, 8, 37])
def test_op_equals_reference_with_two_derivatives(channels, dtype):
    """Values, first and second derivatives by every operand (channel counts below, at and past a vector)."""
    tensors, terms, num_outputs = problem(channels, dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    results = []
    for function in (ops.channelwise_polynomial, ops.channelwise_polynomial_reference):
        inputs = [t.clone().requires_grad_(True) for t in tensors]
        out = function(*inputs, terms, num_outputs)
        first = torch.autograd.grad(out.pow(2).sum(), inputs, create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), inputs)
        results.append((out, *first, *second))
    for produced, expected in zip(*results):
        assert relative_error(produced, expected) <= tolerance


def test_gradcheck_gradgradcheck_and_third_derivatives():
    (features, node_weights, coefficients), terms, num_outputs = problem(3, seed=1, num_terms=15)
    inputs = tuple(t.requires_grad_(True) for t in (features[:5], node_weights[:5], coefficients))

    def function(*a):
        return ops.channelwise_polynomial(*a, terms, num_outputs)

    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)

    def derivatives(op):
        x = [t.detach().clone().requires_grad_(True) for t in inputs]
        first = torch.autograd.grad(op(*x, terms, num_outputs).pow(2).sum(), x, create_graph=True)
        second = torch.autograd.grad(sum(g.pow(2).sum() for g in first), x, create_graph=True)
        return torch.autograd.grad(sum(g.sum() for g in second), x)

    for produced, expected in zip(derivatives(ops.channelwise_polynomial), derivatives(ops.channelwise_polynomial_reference)):
        assert relative_error(produced, expected) <= 1e-12


def test_opcheck():
    (features, node_weights, coefficients), terms, num_outputs = problem(5, seed=2)
    inputs = [t.requires_grad_(True) for t in (features, node_weights, coefficients)]
    torch.library.opcheck(torch.ops.mlipkit.channelwise_polynomial.default, (*inputs, terms, num_outputs))
    grad_out = torch.randn(features.shape[0], num_outputs, 5, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(
        torch.ops.mlipkit.channelwise_polynomial_coefficient_grad.default,
        (inputs[0], inputs[1], grad_out, terms, coefficients.shape[1]),
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bitwise_independent_of_thread_count(dtype):
    (features, node_weights, coefficients), terms, num_outputs = problem(45, dtype, seed=3, num_terms=400)
    features, node_weights = features.repeat(20, 1, 1), node_weights.repeat(20, 1)
    inputs = [t.requires_grad_(True) for t in (features, node_weights, coefficients)]
    threads = torch.get_num_threads()
    results = []
    try:
        for count in (1, max(2, threads)):
            torch.set_num_threads(count)
            out = ops.channelwise_polynomial(*inputs, terms, num_outputs)
            results.append((out, *torch.autograd.grad(out.pow(2).sum(), inputs)))
    finally:
        torch.set_num_threads(threads)
    for one, many in zip(*results):
        assert torch.equal(one, many)


def test_empty_problems():
    (features, node_weights, coefficients), terms, num_outputs = problem(4)
    out = ops.channelwise_polynomial(features[:0], node_weights[:0], coefficients, terms, num_outputs)
    assert out.shape == (0, num_outputs, 4)
    x = features.requires_grad_(True)
    out = ops.channelwise_polynomial(x, node_weights, coefficients, [], num_outputs)
    assert torch.equal(out, torch.zeros_like(out))
    assert torch.equal(torch.autograd.grad(out.sum(), x)[0], torch.zeros_like(x))


def test_bad_inputs_are_rejected():
    (x, w, k), terms, num_outputs = problem(4)
    call = ops.channelwise_polynomial
    with pytest.raises(RuntimeError, match="8 integers per term"):
        call(x, w, k, terms[:-1], num_outputs)
    with pytest.raises(RuntimeError, match="writes output row 5 but there are 5"):
        call(x, w, k, [5, 0, 1, 1, 0, -1, -1, -1], num_outputs)
    with pytest.raises(RuntimeError, match="reads coefficient row 11 but there are 11"):
        call(x, w, k, [0, 11, 1, 1, 0, -1, -1, -1], num_outputs)
    with pytest.raises(RuntimeError, match="reads feature row 6 but there are 6"):
        call(x, w, k, [0, 0, 1, 2, 1, 6, -1, -1], num_outputs)
    with pytest.raises(RuntimeError, match="degree 5; it must lie in 1..4"):
        call(x, w, k, [0, 0, 1, 5, 0, 0, 0, 0], num_outputs)
    with pytest.raises(RuntimeError, match="names feature row 2 in unused slot 1"):
        call(x, w, k, [0, 0, 1, 1, 0, 2, -1, -1], num_outputs)
    with pytest.raises(RuntimeError, match="multiplier 0"):
        call(x, w, k, [0, 0, 0, 1, 0, -1, -1, -1], num_outputs)
    with pytest.raises(RuntimeError, match="one dtype"):
        call(x, w.float(), k, terms, num_outputs)
    with pytest.raises(RuntimeError, match="coefficients has 3 sets but node_weights has 2 columns"):
        call(x, w[:, :2], k, terms, num_outputs)
    with pytest.raises(RuntimeError, match="channels last"):
        call(x, w, k[..., :3], terms, num_outputs)
    with pytest.raises(RuntimeError, match=r"node_weights must be \[N, E\]"):
        call(x, w[:-1], k, terms, num_outputs)


def test_every_instruction_set_gives_the_same_numbers():
    """The baseline (SSE2) build of the kernels equals the one this CPU picks (AVX2/AVX-512)."""
    script = (
        "import torch, sys; sys.path.insert(0, {tests!r}); import test_polynomial_kernel as t; from mlipkit import ops\n"
        "tensors, terms, num_outputs = t.problem(21, seed=4)\n"
        "inputs = [v.requires_grad_(True) for v in tensors]\n"
        "out = ops.channelwise_polynomial(*inputs, terms, num_outputs)\n"
        "grads = torch.autograd.grad(out.pow(2).sum(), inputs)\n"
        "torch.save([ops.kernel_isa(), out.detach(), *grads], sys.argv[1])\n"
    ).format(tests=os.path.dirname(__file__))
    results = results_per_instruction_set(script, "polynomial")
    assert results["baseline"][0] == "baseline"
    for a, b in zip(results["baseline"][1:], results["native"][1:]):
        assert relative_error(a, b) <= 1e-13


def build_contraction(max_ell, correlation, reduced, channels=3, num_node_attrs=3):
    """A symmetric contraction as a model layer builds it (its ``kernel`` switches sparse and dense)."""
    irreps_in = o3.Irreps([(channels, (l, (-1) ** l)) for l in range(max_ell + 1)])
    irreps_out = o3.Irreps(f"{channels}x0e + {channels}x1o") if max_ell else o3.Irreps(f"{channels}x0e")
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # as the model registry builds: couplings exact in float64
    try:
        torch.manual_seed(0)
        sparse = SymmetricContraction(irreps_in, irreps_out, correlation, num_node_attrs, reduced, kernel="sparse")
    finally:
        torch.set_default_dtype(default_dtype)
    return sparse, irreps_in


@pytest.mark.parametrize("reduced", [True, False], ids=["reduced", "original"])
@pytest.mark.parametrize("correlation", [1, 2, 3, 4])
@pytest.mark.parametrize("max_ell", [0, 1, 2, 3])
def test_sparse_contraction_equals_dense(max_ell, correlation, reduced):
    """Values and first derivatives by features, weights and node attributes (one-hot and mixed) to 1e-12."""
    contraction, irreps_in = build_contraction(max_ell, correlation, reduced)
    generator = torch.Generator().manual_seed(correlation)
    features = torch.randn(7, irreps_in.dim, dtype=torch.float64, generator=generator, requires_grad=True)
    node_attrs = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1, 0, 2, 0]), 3).double()
    node_attrs[5:] = torch.rand(2, 3, dtype=torch.float64, generator=generator)  # extra node features mix the sets
    node_attrs.requires_grad_(True)
    inputs = [features, node_attrs, *contraction.parameters()]
    cotangent = torch.randn(7, contraction.irreps_out.dim, dtype=torch.float64, generator=generator)
    results = []
    for kernel in ("sparse", "dense"):
        contraction.kernel = kernel
        out = contraction(features, node_attrs)
        results.append((out, *torch.autograd.grad(out, inputs, cotangent)))
    for produced, expected in zip(*results):
        assert relative_error(produced, expected) <= 1e-12


@pytest.mark.parametrize("correlation", [3, 4])
def test_sparse_contraction_gradcheck_and_gradgradcheck(correlation):
    """By the features and by the highest-order weights of the vector output (the others enter alike)."""
    contraction, irreps_in = build_contraction(2, correlation, reduced=True, channels=1, num_node_attrs=2)
    features = torch.randn(3, irreps_in.dim, dtype=torch.float64, requires_grad=True)
    node_attrs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.8]], dtype=torch.float64)
    names = [f"weight_1_{correlation}"]

    def function(x, *weights):
        return torch.func.functional_call(contraction, dict(zip(names, weights)), (x, node_attrs))

    weights = [contraction.get_parameter(name).detach().clone().requires_grad_(True) for name in names]
    assert torch.autograd.gradcheck(function, (features, *weights))
    assert torch.autograd.gradgradcheck(function, (features, *weights))


def test_sparse_contraction_is_small():
    """The default MACE's first layer (V = 0e+1o+2e+3o, correlation 3, outputs 0e+1o): 94 + 316 monomial terms."""
    contraction, _ = build_contraction(3, 3, reduced=True, channels=1, num_node_attrs=1)
    assert contraction.num_monomial_terms == 94 + 316
