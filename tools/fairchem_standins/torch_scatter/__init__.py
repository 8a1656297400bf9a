"""Pure-torch stand-ins for the torch_scatter functions fairchem-core 1.x imports (reference environment only).

Only what tools/fairchem_reference.py needs to build and run fairchem's
GemNetOC: scatter, segment_coo and segment_csr with sum, mean, max and min.
"""

from __future__ import annotations

import torch

_REDUCTIONS = {"sum": "sum", "add": "sum", "mean": "mean", "max": "amax", "min": "amin"}


def scatter(src: torch.Tensor, index: torch.Tensor, dim: int = -1, out=None, dim_size: int | None = None, reduce: str = "sum"):
    if out is not None:
        raise NotImplementedError("torch_scatter stand-in: out= is not supported")
    dim = dim % src.dim()
    if dim_size is None:
        dim_size = int(index.max()) + 1 if index.numel() else 0
    shape = list(src.shape)
    shape[dim] = dim_size
    if index.dim() == 1:
        view = [1] * src.dim()
        view[dim] = -1
        index = index.view(view).expand_as(src)
    result = torch.zeros(shape, dtype=src.dtype, device=src.device)
    if reduce not in _REDUCTIONS:
        raise NotImplementedError(f"torch_scatter stand-in: reduce='{reduce}'")
    return result.scatter_reduce(dim, index, src, _REDUCTIONS[reduce], include_self=False)


def segment_coo(src: torch.Tensor, index: torch.Tensor, out=None, dim_size: int | None = None, reduce: str = "sum"):
    """Sorted-index reduction along the index's last dimension (fairchem passes 1-d indices)."""
    return scatter(src, index, dim=index.dim() - 1, out=out, dim_size=dim_size, reduce=reduce)


def segment_csr(src: torch.Tensor, indptr: torch.Tensor, out=None, reduce: str = "sum"):
    counts = indptr[1:] - indptr[:-1]
    index = torch.repeat_interleave(torch.arange(counts.numel(), device=src.device), counts)
    return scatter(src, index, dim=indptr.dim() - 1, out=out, dim_size=counts.numel(), reduce=reduce)
