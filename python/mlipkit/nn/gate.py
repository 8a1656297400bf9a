"""e3nn's gate nonlinearity with a short evaluation.

Same construction, activations (normalised to unit second moment) and
numbers as ``e3nn.nn.Gate``; the forward pass picks scalars, gates and gated
features by column indices and multiplies every gated column by its gate in
one product, instead of e3nn's extract / per-block tensor product / concatenate
graph (see nn/linear.py for why the size of the graph matters).
"""

from __future__ import annotations

import torch
from e3nn import nn as e3nn_nn


class Gate(e3nn_nn.Gate):
    def __init__(self, irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated):
        super().__init__(irreps_scalars, act_scalars, irreps_gates, act_gates, irreps_gated)
        # which input column each extracted column copies: e3nn's own extraction applied to column numbers
        columns = self.sc(torch.arange(self.irreps_in.dim, dtype=torch.float64))
        scalars, gates, gated = (part.round().long() for part in columns)
        # gated irrep copy k (in order, [mul][2l+1] per block) takes gate k
        copy_dims = [ir.dim for mul, ir in self.irreps_gated for _ in range(mul)]
        gate_of_column = torch.arange(len(copy_dims)).repeat_interleave(torch.tensor(copy_dims, dtype=torch.long))
        self.register_buffer("scalar_columns", scalars, persistent=False)
        self.register_buffer("gate_columns", gates, persistent=False)
        self.register_buffer("gated_columns", gated, persistent=False)
        self.register_buffer("gate_of_column", gate_of_column, persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        scalars = self.act_scalars(features.index_select(-1, self.scalar_columns))
        if not self.gate_columns.numel():
            return scalars
        gates = self.act_gates(features.index_select(-1, self.gate_columns))
        gated = features.index_select(-1, self.gated_columns) * gates.index_select(-1, self.gate_of_column)
        return torch.cat([scalars, gated], dim=-1)
