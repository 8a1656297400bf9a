"""SSF: a learnable scale and shift of a layer's node features (Lian et al., NeurIPS 2022).

For parameter-efficient fine-tuning: a pre-trained network stays frozen and
only these (and the readout) train. The scale is one value per channel and
irrep, shared by the 2l+1 components of each copy so that the map stays
equivariant; the shift acts on the even scalars (0e) only, the one place a
constant is invariant. Both start at the identity, so fine-tuning starts from
exactly the pre-trained model.
"""

from __future__ import annotations

import torch
from e3nn import o3
from torch import nn


class FeatureScaleShift(nn.Module):
    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        irreps = o3.Irreps(irreps)
        copy_dims = [ir.dim for mul, ir in irreps for _ in range(mul)]
        scalar_columns = [
            column
            for (mul, ir), block in zip(irreps, irreps.slices())
            if ir == o3.Irrep("0e")
            for column in range(block.start, block.stop)
        ]
        self.scale = nn.Parameter(torch.ones(len(copy_dims)))
        self.shift = nn.Parameter(torch.zeros(len(scalar_columns)))
        # e3nn's [mul][2l+1] layout: irrep copy k fills the next 2l+1 columns
        copy_of_column = torch.arange(len(copy_dims)).repeat_interleave(torch.tensor(copy_dims, dtype=torch.long))
        self.register_buffer("copy_of_column", copy_of_column, persistent=False)
        self.register_buffer("scalar_columns", torch.tensor(scalar_columns, dtype=torch.long), persistent=False)

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        scaled = layer_output * self.scale.index_select(0, self.copy_of_column)
        return scaled.index_add(1, self.scalar_columns, self.shift.expand(scaled.shape[0], -1))
