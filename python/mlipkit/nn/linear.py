"""e3nn's linear blocks applied as one matrix product.

``Linear`` (e3nn's o3.Linear) and ``NodeAttributeLinear`` (e3nn's
FullyConnectedTensorProduct of features with scalar node attributes, the
self-connection of NequIP and MACE) keep e3nn's construction, weights,
normalisation and checkpoint layout; only the evaluation differs. e3nn
evaluates them irrep block by irrep block (dozens of slices, einsums and
concatenations, twice as many again in the backward pass), which is most of
the graph an exported model hands to the compiler. Here the weights are
scattered into the equivalent block matrix (weight-only work) and the features
go through one matmul: more multiply-adds on zeros, far fewer operations, and
the same numbers. The block matrix multiplies zeros between irreps and between
components (about as many times more work as the features have components),
which at the default sizes costs no more time than e3nn's many small
operations (measured on the default NequIP, eager and compiled) and halves
its compile time; past DENSE_MATRIX_LIMIT entries e3nn's own evaluation runs.
"""

from __future__ import annotations

import torch
from e3nn import o3

#: The largest block matrix (entries) built instead of e3nn's block-by-block evaluation.
DENSE_MATRIX_LIMIT = 2**21


def _block_matrix_entries(blocks, num_rows: int, num_columns: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat positions, weight indices and scales of the non-zeros of a block matrix.

    Each block (row, column, mul_in, mul_out, dim, weight_offset, channel_stride, scale)
    maps input channel u, component i to output channel w, component i with
    weight weights[weight_offset + u * channel_stride + w] * scale (e3nn's
    [mul][2l+1] layout).
    """
    positions, weight_indices, scales = [], [], []
    for row, column, mul_in, mul_out, dim, weight_offset, channel_stride, scale in blocks:
        u, w, i = torch.meshgrid(torch.arange(mul_in), torch.arange(mul_out), torch.arange(dim), indexing="ij")
        positions.append(((row + u * dim + i) * num_columns + column + w * dim + i).reshape(-1))
        weight_indices.append((weight_offset + u * channel_stride + w).reshape(-1))
        scales.append(torch.full((mul_in * mul_out * dim,), float(scale), dtype=torch.float64))
    if not positions:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0, dtype=torch.float64)
    return torch.cat(positions), torch.cat(weight_indices), torch.cat(scales)


class _BlockMatrix(torch.nn.Module):
    """The non-zeros of a block matrix as buffers, and the matrix built from a weight vector."""

    def __init__(self, blocks, num_rows: int, num_columns: int):
        super().__init__()
        self.shape = (num_rows, num_columns)
        positions, weight_indices, scales = _block_matrix_entries(blocks, num_rows, num_columns)
        self.register_buffer("positions", positions, persistent=False)
        self.register_buffer("weight_indices", weight_indices, persistent=False)
        self.register_buffer("scales", scales.to(torch.get_default_dtype()), persistent=False)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        values = weight.index_select(0, self.weight_indices) * self.scales
        matrix = weight.new_zeros(self.shape[0] * self.shape[1]).index_put((self.positions,), values)
        return matrix.view(self.shape)


class Linear(o3.Linear):
    """o3.Linear (internal weights, no biases) applied as features @ block matrix."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__(irreps_in, irreps_out)
        in_slices, out_slices = self.irreps_in.slices(), self.irreps_out.slices()
        blocks, offset = [], 0
        for instruction in self.instructions:
            mul_in, ir = self.irreps_in[instruction.i_in]
            mul_out = self.irreps_out[instruction.i_out].mul
            blocks.append((in_slices[instruction.i_in].start, out_slices[instruction.i_out].start, mul_in, mul_out,
                           ir.dim, offset, mul_out, instruction.path_weight))
            offset += mul_in * mul_out
        self.dense = self.irreps_in.dim * self.irreps_out.dim <= DENSE_MATRIX_LIMIT
        self.block_matrix = _BlockMatrix(blocks, self.irreps_in.dim, self.irreps_out.dim) if self.dense else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.block_matrix is None:
            return super().forward(features)
        if self.weight_numel == 0:
            return features.new_zeros(*features.shape[:-1], self.irreps_out.dim)
        return features @ self.block_matrix(self.weight)


class NodeAttributeLinear(o3.FullyConnectedTensorProduct):
    """o3.FullyConnectedTensorProduct(features, scalar node attributes): a linear map per attribute, mixed per node.

    With one-hot types the attributes pick each node's weights; the product is
    (attributes (x) features) @ the block matrix stacked over attributes.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_node_attrs: o3.Irreps, irreps_out: o3.Irreps):
        super().__init__(irreps_in, irreps_node_attrs, irreps_out)
        if any(ir != o3.Irrep("0e") for _, ir in self.irreps_in2):
            raise ValueError(f"node attributes must be even scalars, got {self.irreps_in2}")
        num_attrs = self.irreps_in2.dim
        in_slices, out_slices = self.irreps_in1.slices(), self.irreps_out.slices()
        blocks, offset = [], 0
        for instruction in self.instructions:
            mul_in, ir = self.irreps_in1[instruction.i_in1]
            mul_attrs = self.irreps_in2[instruction.i_in2].mul
            attr_start = self.irreps_in2.slices()[instruction.i_in2].start
            mul_out = self.irreps_out[instruction.i_out].mul
            # e3nn's weight [u, v, w] (its codegen divides this path by sqrt(2l+1)); attribute v's
            # block sits at rows v * dim_in of the stacked matrix
            scale = instruction.path_weight / ir.dim**0.5
            for v in range(mul_attrs):
                row = (attr_start + v) * self.irreps_in1.dim + in_slices[instruction.i_in1].start
                blocks.append((row, out_slices[instruction.i_out].start, mul_in, mul_out, ir.dim,
                               offset + v * mul_out, mul_attrs * mul_out, scale))
            offset += mul_in * mul_attrs * mul_out
        self.dense = num_attrs * self.irreps_in1.dim * self.irreps_out.dim <= DENSE_MATRIX_LIMIT
        self.block_matrix = (
            _BlockMatrix(blocks, num_attrs * self.irreps_in1.dim, self.irreps_out.dim) if self.dense else None
        )

    def forward(self, features: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        if self.block_matrix is None:
            return super().forward(features, node_attrs)
        mixed = (node_attrs.unsqueeze(2) * features.unsqueeze(1)).flatten(1)
        return mixed @ self.block_matrix(self.weight)
