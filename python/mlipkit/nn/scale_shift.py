"""Per-type scale and shift of per-atom energies: E_i = scale[t_i] * E~_i + shift[t_i]."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class PerTypeScaleShift(nn.Module):
    def __init__(
        self,
        shifts: Sequence[float],
        scales: Sequence[float],
        shifts_trainable: bool = False,
        scales_trainable: bool = False,
    ):
        super().__init__()
        dtype = torch.get_default_dtype()
        shifts_tensor = torch.tensor(list(shifts), dtype=dtype)
        scales_tensor = torch.tensor(list(scales), dtype=dtype)
        if shifts_trainable:
            self.shifts = nn.Parameter(shifts_tensor)
        else:
            self.register_buffer("shifts", shifts_tensor)
        if scales_trainable:
            self.scales = nn.Parameter(scales_tensor)
        else:
            self.register_buffer("scales", scales_tensor)

    def forward(self, values: torch.Tensor, atom_types: torch.Tensor) -> torch.Tensor:
        return self.scales.index_select(0, atom_types) * values + self.shifts.index_select(0, atom_types)
