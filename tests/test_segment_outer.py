"""mlipkit::segment_outer_sum (GemNet-OC's triplet and quadruplet contraction) against its written-out reference."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from conftest import results_per_instruction_set
from mlipkit.ops import segment_outer_sum, segment_outer_sum_reference


def problem(num_rows=40, num_sources=9, num_targets=7, num_basis=5, channels=6, dtype=torch.float64, seed=0):
    """Random rows with sorted targets (some targets without rows, some sources unused)."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.sort(torch.randint(0, num_targets - 1, (num_rows,), generator=generator)).values
    source = torch.randint(0, num_sources - 2, (num_rows,), generator=generator)
    basis = torch.randn(num_rows, num_basis, generator=generator, dtype=dtype)
    features = torch.randn(num_sources, channels, generator=generator, dtype=dtype)
    return basis, features, source, target, num_targets


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_equals_the_reference(dtype, tolerance):
    basis, features, source, target, num_targets = problem(dtype=dtype)
    out = segment_outer_sum(basis, features, source, target, num_targets)
    reference = segment_outer_sum_reference(basis, features, source, target, num_targets)
    assert out.shape == (num_targets, basis.shape[1], features.shape[1])
    assert (out - reference).abs().max() <= tolerance * reference.abs().max()
    assert out[-1].abs().max() == 0  # the last target has no rows


def test_derivatives_equal_the_reference_to_third_order():
    basis, features, source, target, num_targets = problem()
    inputs = [basis.requires_grad_(), features.requires_grad_()]
    weights = torch.randn(num_targets, basis.shape[1], features.shape[1], dtype=torch.float64)

    def derivatives(function):
        loss = (function(*inputs, source, target, num_targets) ** 2 * weights).sum()
        first = torch.autograd.grad(loss, inputs, create_graph=True)
        second = torch.autograd.grad(sum((g * g.detach().sin()).sum() for g in first), inputs, create_graph=True)
        third = torch.autograd.grad(sum((g ** 2).sum() for g in second), inputs)
        return [*first, *second, *third]

    for ours, theirs in zip(derivatives(segment_outer_sum), derivatives(segment_outer_sum_reference)):
        assert (ours - theirs).abs().max() <= 1e-12 * theirs.abs().max()


def test_gradcheck_gradgradcheck_and_opcheck():
    basis, features, source, target, num_targets = problem(num_rows=12, num_sources=5, num_targets=4, num_basis=3, channels=2)
    inputs = (basis.requires_grad_(), features.requires_grad_())
    function = lambda b, f: segment_outer_sum(b, f, source, target, num_targets)  # noqa: E731
    assert torch.autograd.gradcheck(function, inputs)
    assert torch.autograd.gradgradcheck(function, inputs)
    grad = torch.randn(num_targets, 3, 2, dtype=torch.float64)
    torch.library.opcheck(torch.ops.mlipkit.segment_outer_sum, (basis, features, source, target, num_targets))
    torch.library.opcheck(torch.ops.mlipkit.segment_outer_sum_basis_grad, (grad, features, source, target))
    torch.library.opcheck(torch.ops.mlipkit.segment_outer_sum_features_grad, (basis, grad, source, target, 5))


def test_empty_sets_and_no_targets():
    basis, features, source, target, _ = problem(num_rows=0)
    out = segment_outer_sum(basis.requires_grad_(), features.requires_grad_(), source, target, 3)
    assert out.shape == (3, 5, 6) and out.abs().max() == 0
    out.sum().backward()
    assert basis.grad.shape == (0, 5) and features.grad.abs().max() == 0
    assert segment_outer_sum(basis, features, source, target, 0).shape == (0, 5, 6)


def test_bitwise_the_same_on_one_and_two_threads():
    script = (
        "import torch, sys; sys.path.insert(0, 'tests'); from test_segment_outer import problem;"
        "from mlipkit.ops import segment_outer_sum;"
        "b, f, s, t, n = problem(num_rows=5000, num_sources=700, num_targets=600, num_basis=7, channels=32, dtype=torch.float32);"
        "b.requires_grad_(); f.requires_grad_(); out = segment_outer_sum(b, f, s, t, n); (out * out.detach()).sum().backward();"
        "print(hash(tuple(torch.cat([out.flatten(), b.grad.flatten(), f.grad.flatten()]).tolist())))"
    )
    results = {
        threads: subprocess.run([sys.executable, "-c", f"import torch; torch.set_num_threads({threads}); " + script],
                                capture_output=True, text=True, check=True).stdout
        for threads in (1, 2)
    }
    assert results[1] == results[2]


def test_every_instruction_set_gives_the_same_numbers():
    """The baseline (SSE2) kernels equal the ones this CPU picks (AVX2/AVX-512), values and both gradients, with
    basis widths that leave vector tails (7, 49) and channel counts of whole and partial vectors."""
    script = (
        "import torch, sys; sys.path.insert(0, {tests!r}); from test_segment_outer import problem; from mlipkit import ops\n"
        "results = [ops.kernel_isa()]\n"
        "for S, C in [(7, 64), (49, 32), (5, 37)]:\n"
        "    b, f, s, t, n = problem(num_rows=300, num_sources=40, num_targets=30, num_basis=S, channels=C)\n"
        "    b.requires_grad_(); f.requires_grad_(); out = ops.segment_outer_sum(b, f, s, t, n)\n"
        "    results += [out.detach(), *torch.autograd.grad((out ** 2).sum(), (b, f))]\n"
        "torch.save(results, sys.argv[1])\n"
    ).format(tests=os.path.dirname(__file__))
    results = results_per_instruction_set(script, "segment_outer")
    assert results["baseline"][0] == "baseline"
    for a, b in zip(results["baseline"][1:], results["native"][1:]):
        assert (a - b).abs().max() <= 1e-13 * b.abs().max()


@pytest.mark.parametrize("mutate, message", [
    (lambda b, f, s, t: (b, f, s, t.flip(0)), "not sorted"),
    (lambda b, f, s, t: (b, f, s + 100, t), r"source entry 0 = \d+ is outside \[0, 9\)"),
    (lambda b, f, s, t: (b, f.float(), s, t), "basis is Double but the other operands are Float"),
    (lambda b, f, s, t: (b, f, s[:-1], t), "source has 39 entries for 40 basis rows"),
    (lambda b, f, s, t: (b, f, s.int(), t), "source must be a 1-D int64 tensor"),
])
def test_bad_inputs_are_named(mutate, message):
    basis, features, source, target, num_targets = problem()
    with pytest.raises(RuntimeError, match=message):
        segment_outer_sum(*mutate(basis, features, source, target), num_targets)
