"""mlipkit's compact evaluations of e3nn's Linear, node-attribute tensor product and Gate equal e3nn's."""

import pytest
import torch
import torch.nn.functional as F
from e3nn import nn as e3nn_nn
from e3nn import o3

import mlipkit.nn.linear
from conftest import relative_error
from mlipkit.nn.gate import Gate
from mlipkit.nn.linear import Linear, NodeAttributeLinear

IRREPS = [
    ("32x0e + 32x1o + 32x2e", "96x0e + 32x1o + 32x2e"),
    ("3x0e + 2x0e + 4x1o + 1x1e", "5x0e + 2x1o + 3x1e + 2x2e"),  # unsimplified input: two paths into 0e
    ("2x1o", "3x0e"),  # no path at all
]


def values_and_gradients(module, inputs):
    inputs = [t.clone().requires_grad_(True) for t in inputs]
    out = module(*inputs)
    if not out.requires_grad:  # no path reaches the output: zeros independent of everything
        return [out]
    cotangent = torch.linspace(-1.0, 1.0, out.numel(), dtype=out.dtype).view_as(out)
    parameters = [p for p in module.parameters()]
    gradients = torch.autograd.grad(out, inputs + parameters, cotangent, allow_unused=True, materialize_grads=True)
    return [out, *gradients]


@pytest.fixture(autouse=True)
def float64_construction():
    """Modules built in float64, as the model registry builds them (constants exact)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(default)


@pytest.fixture(params=[True, False], ids=["block_matrix", "e3nn_fallback"])
def block_matrix(request, monkeypatch):
    if not request.param:
        monkeypatch.setattr(mlipkit.nn.linear, "DENSE_MATRIX_LIMIT", 0)
    return request.param


@pytest.mark.parametrize("irreps_in, irreps_out", IRREPS)
def test_linear_equals_e3nn(irreps_in, irreps_out, block_matrix):
    torch.manual_seed(0)
    ours = Linear(o3.Irreps(irreps_in), o3.Irreps(irreps_out))
    assert (ours.block_matrix is not None) == block_matrix
    reference = o3.Linear(o3.Irreps(irreps_in), o3.Irreps(irreps_out))
    reference.load_state_dict(ours.state_dict())
    features = torch.randn(7, ours.irreps_in.dim, dtype=torch.float64)
    for a, b in zip(values_and_gradients(ours, [features]), values_and_gradients(reference, [features])):
        assert relative_error(a, b) <= 1e-12 if b.abs().max() > 0 else torch.equal(a, b)


@pytest.mark.parametrize("num_attrs", [1, 3])
@pytest.mark.parametrize("irreps_in, irreps_out", IRREPS)
def test_node_attribute_linear_equals_e3nn(irreps_in, irreps_out, num_attrs, block_matrix):
    torch.manual_seed(0)
    attrs_irreps = o3.Irreps(f"{num_attrs}x0e")
    ours = NodeAttributeLinear(o3.Irreps(irreps_in), attrs_irreps, o3.Irreps(irreps_out))
    reference = o3.FullyConnectedTensorProduct(o3.Irreps(irreps_in), attrs_irreps, o3.Irreps(irreps_out))
    reference.load_state_dict(ours.state_dict())
    features = torch.randn(7, ours.irreps_in1.dim, dtype=torch.float64)
    node_attrs = torch.rand(7, num_attrs, dtype=torch.float64)
    node_attrs[:3] = F.one_hot(torch.arange(3) % num_attrs, num_attrs).double()  # one-hot types and mixed features
    inputs = [features, node_attrs]
    for a, b in zip(values_and_gradients(ours, inputs), values_and_gradients(reference, inputs)):
        assert relative_error(a, b) <= 1e-12 if b.abs().max() > 0 else torch.equal(a, b)


def test_node_attribute_linear_needs_scalar_attributes():
    with pytest.raises(ValueError, match="node attributes must be even scalars"):
        NodeAttributeLinear(o3.Irreps("2x1o"), o3.Irreps("1x1o"), o3.Irreps("2x0e"))


@pytest.mark.parametrize(
    "scalars, scalar_acts, gates, gate_acts, gated",
    [
        ("96x0e", [F.silu], "64x0e", [torch.sigmoid], "32x1o + 32x2e"),
        ("16x0e + 4x0o", [F.silu, torch.tanh], "3x0e + 2x0o", [torch.sigmoid, torch.tanh], "2x1o + 1x1e + 2x2e"),
        ("5x0e", [F.silu], "", [], ""),
    ],
)
def test_gate_equals_e3nn(scalars, scalar_acts, gates, gate_acts, gated):
    ours = Gate(scalars, scalar_acts, gates, gate_acts, gated)
    reference = e3nn_nn.Gate(scalars, scalar_acts, gates, gate_acts, gated)
    assert ours.irreps_in == reference.irreps_in and ours.irreps_out == reference.irreps_out
    features = torch.randn(6, ours.irreps_in.dim, dtype=torch.float64)
    for a, b in zip(values_and_gradients(ours, [features]), values_and_gradients(reference, [features])):
        assert relative_error(a, b) <= 1e-14
