import pytest
import torch

from mlipkit import ops


def sorted_case(dtype=torch.float64, rows=40, segments=9, width=(5,)):
    generator = torch.Generator().manual_seed(0)
    index = torch.sort(torch.randint(0, segments, (rows,), generator=generator)).values
    src = torch.randn((rows, *width), generator=generator, dtype=dtype)
    return src, index, segments


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [(), (5,), (3, 4)])
def test_segment_sum_matches_reference(dtype, width):
    src, index, segments = sorted_case(dtype, width=width)
    expected = ops.segment_sum_reference(src, index, segments)
    result = ops.segment_sum(src, index, segments)
    assert result.dtype == dtype and result.shape == expected.shape
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.allclose(result, expected, atol=tolerance, rtol=tolerance)


def test_segment_sum_empty_segments_are_zero():
    index = torch.tensor([1, 1, 4])
    result = ops.segment_sum(torch.ones(3, 2, dtype=torch.float64), index, 6)
    assert result[:, 0].tolist() == [0.0, 2.0, 0.0, 0.0, 1.0, 0.0]


def test_segment_gather_matches_reference():
    values = torch.randn(9, 3, dtype=torch.float64)
    _, index, _ = sorted_case()
    assert torch.equal(ops.segment_gather(values, index), ops.segment_gather_reference(values, index))


def test_segment_sum_bitwise_independent_of_thread_count():
    src, index, segments = sorted_case(torch.float32, rows=20000, segments=300, width=(16,))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.segment_sum(src, index, segments)
        torch.set_num_threads(max(2, threads))
        many = ops.segment_sum(src, index, segments)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)


def test_gradcheck_and_gradgradcheck():
    src, index, segments = sorted_case(width=(3,))
    src.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda s: ops.segment_sum(s, index, segments), (src,))
    assert torch.autograd.gradgradcheck(lambda s: ops.segment_sum(s, index, segments) ** 2, (src,))
    values = torch.randn(segments, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: ops.segment_gather(v, index), (values,))
    assert torch.autograd.gradgradcheck(lambda v: ops.segment_gather(v, index) ** 2, (values,))


def test_third_derivative_matches_reference():
    src, index, segments = sorted_case(width=(2,))

    def third(f):
        x = src.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x).pow(3).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
        (k,) = torch.autograd.grad(h.sum(), x)
        return k

    custom = third(lambda x: ops.segment_sum(x, index, segments))
    reference = third(lambda x: ops.segment_sum_reference(x, index, segments))
    assert torch.allclose(custom, reference, atol=1e-12)


def test_opcheck():
    src, index, segments = sorted_case(width=(3,))
    src.requires_grad_(True)
    torch.library.opcheck(torch.ops.mlipkit.segment_sum.default, (src, index, segments))
    values = torch.randn(segments, 3, dtype=torch.float64, requires_grad=True)
    torch.library.opcheck(torch.ops.mlipkit.segment_gather.default, (values, index))


@pytest.mark.parametrize(
    "index, rows, message",
    [
        (torch.tensor([0, 2, 1]), 3, "not sorted"),
        (torch.tensor([0, 1, 7]), 3, "outside"),
        (torch.tensor([0, 1]), 3, "rows but sorted_index has 2"),
        (torch.tensor([0, -1, 1]), 3, "outside"),
    ],
)
def test_segment_sum_rejects_bad_index(index, rows, message):
    with pytest.raises(RuntimeError, match=message):
        ops.segment_sum(torch.ones(rows, 2), index, 4)


def test_segment_sum_rejects_non_int64_index():
    with pytest.raises(RuntimeError, match="int64"):
        ops.segment_sum(torch.ones(3), torch.tensor([0, 1, 1], dtype=torch.int32), 2)


def test_segment_sum_without_rows_gives_zeros():
    result = ops.segment_sum(torch.empty(0, 4, 3, dtype=torch.float64), torch.empty(0, dtype=torch.int64), 5)
    assert result.shape == (5, 4, 3) and torch.equal(result, torch.zeros(5, 4, 3, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_halo_exchange_is_the_identity_without_a_registered_exchange(dtype):
    """What ASE and the C++ runtime on a whole system see (LAMMPS ranks register an exchange; tests/test_lammps.py)."""
    features = torch.randn(7, 5, dtype=dtype, requires_grad=True)
    exchanged = ops.halo_exchange(features)
    assert torch.equal(exchanged, features) and exchanged.data_ptr() != features.data_ptr()
    weights = torch.randn(7, 5, dtype=dtype)
    (gradient,) = torch.autograd.grad(exchanged, features, weights, create_graph=True)
    assert torch.equal(gradient, weights)
    for op in (torch.ops.mlipkit.halo_exchange.default, torch.ops.mlipkit.halo_exchange_reverse.default):
        torch.library.opcheck(op, (features.detach().requires_grad_(),))
    with pytest.raises(RuntimeError, match="expects node rows"):
        ops.halo_exchange(torch.zeros(3, dtype=dtype))
