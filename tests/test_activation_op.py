"""mlipkit::activation_derivative (scale * f^(order)(x) * factor in one pass) against torch's activations and
autograd's derivatives of them, and the radial MLP that force training runs with it against e3nn's."""

import pytest
import torch
from torch.library import opcheck

from mlipkit import ops
from mlipkit.nn.activations import ACTIVATIONS as ACTIVATION_FUNCTIONS
from mlipkit.nn.activations import activation as activation_function
from mlipkit.nn.activations import scaled_activation
from mlipkit.nn.mlp import mlp_with_activation_op, radial_mlp
from test_convolution_kernel import relative

ACTIVATIONS = sorted(ACTIVATION_FUNCTIONS)


def grid(dtype):
    """Both tails, zero, softplus's threshold on both sides, and a length that leaves a scalar tail per lane width."""
    special = torch.tensor([0.0, 1e-3, -0.5, 19.5, 20.0, 20.5, 40.0, -40.0, 700.0, -700.0], dtype=torch.float64)
    return torch.cat([torch.linspace(-30, 30, 1001, dtype=torch.float64), special]).to(dtype)


def autograd_derivatives(activation, x, orders):
    """f, f', f'', ... of the torch activation by repeated autograd (the ground truth the op must equal)."""
    x = x.clone().requires_grad_(True)
    value = activation_function(activation)(x)
    derivatives = [value.detach()]
    for _ in range(orders):
        value = torch.autograd.grad(value.sum(), x, create_graph=True)[0]
        derivatives.append(value.detach())
    return derivatives


def close(a, b):
    """Largest error relative to 1 + |b| (derivatives near zero are judged in absolute terms)."""
    return float(((a - b).abs() / (1 + b.abs())).max())


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_order_equals_autograd(activation):
    x = grid(torch.float64)
    factor = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for order, expected in enumerate(autograd_derivatives(activation, x, 3)):
        assert close(ops.activation_derivative(x, activation, order), expected) <= 1e-13, order
        assert close(ops.activation_derivative(x, activation, order, 0.7, factor), 0.7 * expected * factor) <= 1e-13


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_float32_equals_float64(activation):
    x = grid(torch.float64)[:1001].reshape(7, 143)
    for order in range(3):
        single = ops.activation_derivative(x.float(), activation, order, 1.3)
        assert close(single.double(), ops.activation_derivative(x, activation, order, 1.3)) <= 1e-5


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck_and_gradgradcheck(activation):
    generator = torch.Generator().manual_seed(1)
    x = (3 * torch.randn(6, 5, dtype=torch.float64, generator=generator)).requires_grad_(True)
    factor = torch.randn(6, 5, dtype=torch.float64, generator=generator).requires_grad_(True)
    for order in (0, 1):
        function = lambda x, factor: ops.activation_derivative(x, activation, order, 0.6, factor)  # noqa: E731
        assert torch.autograd.gradcheck(function, (x, factor))
        assert torch.autograd.gradgradcheck(function, (x, factor))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_scaled_activation_equals_torch_through_two_derivatives(activation):
    """What GemNet-OC's layers call: scale * f(x) in one op on the CPU, torch's function times scale elsewhere."""
    x = grid(torch.float64)
    derivatives = autograd_derivatives(activation, x, 2)
    x = x.clone().requires_grad_(True)
    value = scaled_activation(x, activation, 0.7)
    first = torch.autograd.grad(value.sum(), x, create_graph=True)[0]
    second = torch.autograd.grad(first.sum(), x)[0]
    for got, expected in zip((value, first, second), derivatives):
        assert close(got.detach(), 0.7 * expected) <= 1e-12
    assert scaled_activation(x.detach().to("meta"), activation, 0.7).shape == x.shape


def test_opcheck():
    x = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    factor = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    opcheck(torch.ops.mlipkit.activation_derivative, (x, "softplus", 2, 0.3, factor))
    opcheck(torch.ops.mlipkit.activation_derivative, (torch.randn(7, 5), "tanh", 0, 1.0, None))


def test_layouts_and_empty_tensors():
    x = torch.randn(40, 9, dtype=torch.float64)
    expected = ops.activation_derivative(x.t().contiguous(), "silu", 1)
    assert torch.equal(ops.activation_derivative(x.t(), "silu", 1), expected)
    assert ops.activation_derivative(torch.zeros(0, 64), "gelu", 2, 1.0, torch.zeros(0, 64)).shape == (0, 64)


def test_bad_inputs_are_rejected():
    x = torch.randn(4, 3)
    with pytest.raises(RuntimeError, match="unknown activation 'mish'"):
        ops.activation_derivative(x, "mish")
    with pytest.raises(RuntimeError, match=r"order must be in \[0, 8\], got 9"):
        ops.activation_derivative(x, "silu", 9)
    with pytest.raises(RuntimeError, match=r"factor must have x's shape \[4, 3\], got \[3, 4\]"):
        ops.activation_derivative(x, "silu", 1, 1.0, torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="factor must be Float like x, got Double"):
        ops.activation_derivative(x, "silu", 1, 1.0, x.double())
    with pytest.raises(RuntimeError, match="x must be float32 or float64, got Long"):
        ops.activation_derivative(torch.ones(3, dtype=torch.long), "relu")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_radial_mlp_with_the_op_equals_e3nn_through_force_training(activation):
    """Outputs, input derivatives with create_graph (forces), then the loss's gradient to the inputs and weights."""
    mlp = radial_mlp(8, [16, 16], 24, activation).double()
    radial = torch.randn(30, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def force_training(evaluate):
        inputs = radial.clone().requires_grad_(True)
        out = evaluate(inputs)
        (first,) = torch.autograd.grad(out.pow(2).sum(), inputs, create_graph=True)
        loss = (first * first.detach().cos()).sum()
        return (out, first, *torch.autograd.grad(loss, (inputs, *mlp.parameters())))

    fused = force_training(lambda inputs: mlp_with_activation_op(mlp, inputs, activation))
    reference = force_training(mlp)
    for a, b in zip(fused, reference):
        assert relative(a, b) <= 1e-12


def test_bitwise_independent_of_thread_count():
    """Chunks start on whole vectors, so no element's value depends on where a thread's share begins."""
    x = torch.randn(100_003, generator=torch.Generator().manual_seed(3))
    factor = torch.randn(100_003, generator=torch.Generator().manual_seed(4))
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            results.append(ops.activation_derivative(x, "silu", 2, 0.9, factor))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(result, results[0]) for result in results[1:])
