"""Equivariant convolution and the gated interaction layer (NequIP's ConvNetLayer)."""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from e3nn import o3
from torch import nn

from mlipkit import ops
from mlipkit.nn.activations import activation
from mlipkit.nn.fused_convolution import FusedConvolution
from mlipkit.nn.gate import Gate
from mlipkit.nn.linear import Linear, NodeAttributeLinear
from mlipkit.nn.mlp import mlp_with_activation_op, radial_mlp
from mlipkit.nn.scatter import sum_into_segments


def reachable_irreps(irreps_in: o3.Irreps, irreps_edge: o3.Irreps, candidates: o3.Irreps) -> o3.Irreps:
    """The entries of ``candidates`` that some path of irreps_in (x) irreps_edge produces."""
    products = {ir_out for _, ir_in in irreps_in for _, ir_edge in irreps_edge for ir_out in ir_in * ir_edge}
    return o3.Irreps([(mul, ir) for mul, ir in candidates if ir in products])


class Convolution(nn.Module):
    """Message passing: node features (x) edge spherical harmonics, weighted per edge by a radial MLP.

    Messages m_e = TP(h_sender, Y(r_e); w(|r_e|)) are summed at receivers
    (receiver-sorted segment sum) and divided by avg_num_neighbours to the
    power ``normalization_exponent`` (NequIP: 1/2, MACE: 1).
    ``tensor_product_kernel`` "fused" does gather, tensor product and sum in
    one C++ op on CPU tensors; "e3nn" (and any other device) runs e3nn's
    tensor product and a separate scatter, the reference path. In eval mode
    the fused op also runs the radial MLP inside, so the per-edge weights are
    never stored; in training mode they are made once and kept, since force
    training's loss gradient needs them several times (recomputing them cost
    more time than the memory saved), by the MLP with the activation op.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_node_attrs: o3.Irreps,
        irreps_out: o3.Irreps,
        num_radial: int,
        radial_hidden: Sequence[int],
        radial_activation: str,
        radial_variance_scale: float,
        avg_num_neighbours: float | None,
        self_connection: bool,
        deterministic_scatter: bool,
        tensor_product_kernel: str = "fused",
        normalization_exponent: float = 0.5,
    ):
        super().__init__()
        self.linear_in = Linear(irreps_in, irreps_in)
        mid, instructions = [], []
        wanted = {ir for _, ir in irreps_out}
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_edge) in enumerate(irreps_edge):
                for ir_out in ir_in * ir_edge:
                    if ir_out in wanted:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid, permutation, _ = o3.Irreps(mid).sort()
        instructions = [(i, j, permutation[k], mode, train) for i, j, k, mode, train in instructions]
        self.tensor_product = o3.TensorProduct(
            irreps_in, irreps_edge, irreps_mid, instructions, shared_weights=False, internal_weights=False
        )
        self.radial = radial_mlp(
            num_radial, radial_hidden, self.tensor_product.weight_numel, radial_activation, radial_variance_scale
        )
        self.radial_activation = radial_activation
        self.linear_out = Linear(irreps_mid.simplify(), irreps_out)
        self.self_connection = (
            NodeAttributeLinear(irreps_in, irreps_node_attrs, irreps_out) if self_connection else None
        )
        self.fused = FusedConvolution(self.tensor_product)
        self.message_scale = avg_num_neighbours**-normalization_exponent if avg_num_neighbours else 1.0
        self.deterministic_scatter = deterministic_scatter
        self.tensor_product_kernel = tensor_product_kernel

    def forward(
        self,
        node_features: torch.Tensor,
        node_attrs: torch.Tensor,
        edge_sh: torch.Tensor,
        edge_radial: torch.Tensor,
        edge_index: torch.Tensor,
    ) -> torch.Tensor:
        x = self.linear_in(node_features)
        if self.tensor_product_kernel == "fused" and ops.has_kernels(x.device):
            if self.training:
                edge_weights = mlp_with_activation_op(self.radial, edge_radial, self.radial_activation)
                aggregated = self.fused(x, edge_sh, edge_weights, edge_index)
            else:
                aggregated = self.fused.with_radial_mlp(
                    x, edge_sh, edge_radial, self.radial, self.radial_activation, edge_index
                )
        else:
            edge_weights = self.radial(edge_radial)
            messages = self.tensor_product(x.index_select(0, edge_index[0]), edge_sh, edge_weights)
            aggregated = sum_into_segments(messages, edge_index[1], x.shape[0], self.deterministic_scatter)
        out = self.linear_out(aggregated * self.message_scale)
        if self.self_connection is not None:
            out = out + self.self_connection(node_features, node_attrs)
        return out


class GatedInteraction(nn.Module):
    """Convolution followed by a gate nonlinearity; residual when shapes allow.

    Output irreps are the hidden irreps the convolution can reach from its input.
    Scalars pass through the activation of their parity; each l > 0 block is
    multiplied by an activated scalar gate.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_hidden: o3.Irreps,
        irreps_edge: o3.Irreps,
        irreps_node_attrs: o3.Irreps,
        nonlinearities: Mapping[str, str],
        resnet: bool,
        **convolution_options,
    ):
        super().__init__()
        parity_activation = {1: activation(nonlinearities["e"]), -1: activation(nonlinearities["o"])}
        reachable = reachable_irreps(irreps_in, irreps_edge, irreps_hidden)
        scalars = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l == 0])
        gated = o3.Irreps([(mul, ir) for mul, ir in reachable if ir.l > 0])
        gate_ir = o3.Irrep("0e") if reachable_irreps(irreps_in, irreps_edge, o3.Irreps("1x0e")) else o3.Irrep("0o")
        gates = o3.Irreps([(mul, gate_ir) for mul, _ in gated])
        self.gate = Gate(
            scalars,
            [parity_activation[ir.p] for _, ir in scalars],
            gates,
            [parity_activation[gate_ir.p]] * len(gates),
            gated,
        )
        self.convolution = Convolution(
            irreps_in, irreps_edge, irreps_node_attrs, self.gate.irreps_in, **convolution_options
        )
        self.irreps_out = self.gate.irreps_out
        columns = residual_columns(irreps_in, self.irreps_out)
        self.resnet = resnet and columns is not None
        # None where the residual is the whole input (no copy on the hot path)
        subset = self.resnet and self.irreps_out != irreps_in
        self.register_buffer("residual_columns", columns if subset else None, persistent=False)

    def forward(self, node_features, node_attrs, edge_sh, edge_radial, edge_index):
        out = self.gate(self.convolution(node_features, node_attrs, edge_sh, edge_radial, edge_index))
        if not self.resnet:
            return out
        kept = node_features if self.residual_columns is None else node_features.index_select(1, self.residual_columns)
        return kept + out


def residual_columns(irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> torch.Tensor | None:
    """Input columns a residual adds to each output column, when every output irrep is an input one of equal size.

    A layer that keeps only some irreps (NequIP's scalar last layer) keeps the
    residual of those, so dropping the other paths changes nothing it computes.
    """
    blocks = {ir: (mul, block) for (mul, ir), block in zip(irreps_in, irreps_in.slices())}
    columns = []
    for mul, ir in irreps_out:
        if ir not in blocks or blocks[ir][0] != mul:
            return None
        columns.append(torch.arange(blocks[ir][1].start, blocks[ir][1].stop))
    return torch.cat(columns) if columns else None
