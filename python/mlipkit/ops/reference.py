"""Pure-PyTorch versions of the custom ops: the reference they are tested against."""

from __future__ import annotations

import torch


def segment_sum_reference(src: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = src.new_zeros((num_segments,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)


def segment_gather_reference(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.index_select(0, index)
