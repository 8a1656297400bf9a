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


class EquivariantAffine(nn.Module):
    """Base of the per-irrep-copy affine maps (SSF, batch norm in eval mode): the column layout of ``irreps``.

    ``copy_of_column``: e3nn's [mul][2l+1] layout puts irrep copy k in the next
    2l+1 columns; ``scalar_columns``: the columns of the 0e copies, ``scalar_copies`` their copy numbers.
    """

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        self.irreps = o3.Irreps(irreps)
        copy_dims = [ir.dim for mul, ir in self.irreps for _ in range(mul)]
        scalar_columns = [
            column
            for (mul, ir), block in zip(self.irreps, self.irreps.slices())
            if ir == o3.Irrep("0e")
            for column in range(block.start, block.stop)
        ]
        self.num_copies = len(copy_dims)
        self.num_scalars = len(scalar_columns)
        copy_of_column = torch.arange(len(copy_dims)).repeat_interleave(torch.tensor(copy_dims, dtype=torch.long))
        self.register_buffer("copy_of_column", copy_of_column, persistent=False)
        self.register_buffer("scalar_columns", torch.tensor(scalar_columns, dtype=torch.long), persistent=False)
        self.register_buffer("scalar_copies", copy_of_column[scalar_columns], persistent=False)

    def affine(self, features: torch.Tensor, copy_scale: torch.Tensor, scalar_shift: torch.Tensor) -> torch.Tensor:
        scaled = features * copy_scale.index_select(0, self.copy_of_column)
        return scaled.index_add(1, self.scalar_columns, scalar_shift.expand(scaled.shape[0], -1))


class FeatureScaleShift(EquivariantAffine):
    def __init__(self, irreps: o3.Irreps):
        super().__init__(irreps)
        self.scale = nn.Parameter(torch.ones(self.num_copies))
        self.shift = nn.Parameter(torch.zeros(self.num_scalars))

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        return self.affine(layer_output, self.scale, self.shift)
