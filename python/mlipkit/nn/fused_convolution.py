"""The fused convolution ops planned from an e3nn channelwise ("uvu") tensor product.

``FusedConvolution(tp)(x, edge_sh, edge_weights, edge_index)`` equals
``segment_sum(tp(x[sender], edge_sh, edge_weights), receiver)``: the same
instructions, weight layout and path normalisation, with the Clebsch-Gordan
blocks taken from e3nn's Wigner 3j symbols at construction. The kernel works
components-outer, channels-inner, so node features are permuted into that
layout on the way in and back on the way out (cheap: per node, not per edge).
``with_radial_mlp`` takes the radial MLP and its inputs instead of the edge
weights, which the kernel then makes tile by tile and never stores.
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from torch import nn

from mlipkit import ops
from mlipkit.nn.mlp import mlp_operands


def component_major_columns(irreps: o3.Irreps) -> torch.Tensor:
    """Column c of the [2l+1][mul] layout is column ``columns[c]`` of e3nn's [mul][2l+1] layout."""
    columns = []
    for (mul, ir), block in zip(irreps, irreps.slices()):
        columns.append(block.start + torch.arange(mul * ir.dim).view(mul, ir.dim).t().reshape(-1))
    return torch.cat(columns) if columns else torch.zeros(0, dtype=torch.long)


class FusedConvolution(nn.Module):
    def __init__(self, tensor_product: o3.TensorProduct):
        super().__init__()
        irreps_in, irreps_sh, irreps_out = tensor_product.irreps_in1, tensor_product.irreps_in2, tensor_product.irreps_out
        in_blocks, sh_blocks, out_blocks = irreps_in.slices(), irreps_sh.slices(), irreps_out.slices()
        paths, couplings, weight_column, flops = [], [], 0, 0
        for instruction in tensor_product.instructions:
            mul, ir_in = irreps_in[instruction.i_in1]
            sh_mul, ir_sh = irreps_sh[instruction.i_in2]
            _, ir_out = irreps_out[instruction.i_out]
            if instruction.connection_mode != "uvu" or not instruction.has_weight or sh_mul != 1:
                raise ValueError(
                    "the fused convolution takes weighted 'uvu' paths with one copy of each edge irrep, got "
                    f"{instruction.connection_mode} with {sh_mul}x{ir_sh}"
                )
            paths += [
                ir_in.l,
                ir_sh.l,
                ir_out.l,
                mul,
                in_blocks[instruction.i_in1].start,
                sh_blocks[instruction.i_in2].start,
                out_blocks[instruction.i_out].start,
                weight_column,
            ]
            wigner = o3.wigner_3j(ir_in.l, ir_sh.l, ir_out.l, dtype=torch.float64)
            couplings.append(instruction.path_weight * wigner.reshape(-1))
            weight_column += mul
            flops += mul * (2 * int(torch.count_nonzero(wigner)) + ir_out.dim)
        self.paths = paths
        self.num_out_features = irreps_out.dim
        #: the forward's multiplies and adds per edge: every Clebsch-Gordan non-zero, then the path weight
        self.flops_per_edge = flops
        self.register_buffer("couplings", torch.cat(couplings), persistent=False)
        self.register_buffer("in_columns", component_major_columns(irreps_in), persistent=False)
        self.register_buffer("out_columns", torch.argsort(component_major_columns(irreps_out)), persistent=False)

    def forward(
        self, node_features: torch.Tensor, edge_sh: torch.Tensor, edge_weights: torch.Tensor, edge_index: torch.Tensor
    ) -> torch.Tensor:
        x = node_features.index_select(1, self.in_columns)
        out = ops.tensor_product_convolution(
            x, edge_sh, edge_weights, edge_index, self.couplings, self.paths, self.num_out_features
        )
        return out.index_select(1, self.out_columns)

    def with_radial_mlp(
        self,
        node_features: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        mlp: FullyConnectedNet,
        activation: str,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        """``forward(node_features, edge_sh, mlp(edge_radial), edge_index)``, the MLP run inside the kernel."""
        mlp_weights, widths, scale = mlp_operands(mlp)
        x = node_features.index_select(1, self.in_columns)
        out = ops.radial_convolution(
            x, edge_sh, edge_radial, mlp_weights, widths, activation, scale,
            edge_index, self.couplings, self.paths, self.num_out_features,
        )
        return out.index_select(1, self.out_columns)
