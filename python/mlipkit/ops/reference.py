"""Pure-PyTorch versions of the custom ops: the reference they are tested against."""

from __future__ import annotations

import torch


def segment_sum_reference(src: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    out = src.new_zeros((num_segments,) + tuple(src.shape[1:]))
    return out.index_add(0, index, src)


def segment_gather_reference(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return values.index_select(0, index)


def tensor_product_convolution_reference(
    node_features: torch.Tensor,
    edge_sh: torch.Tensor,
    edge_weights: torch.Tensor,
    edge_index: torch.Tensor,
    couplings: torch.Tensor,
    paths: list[int],
    num_out_features: int,
) -> torch.Tensor:
    """The fused convolution written out path by path with einsum and index_add."""
    sender, receiver = edge_index[0], edge_index[1]
    x = node_features.index_select(0, sender)
    num_edges = x.shape[0]
    messages = x.new_zeros((num_edges, num_out_features))
    offset = 0
    for start in range(0, len(paths), 8):
        l1, l2, l3, mul, in_column, sh_column, out_column, weight_column = paths[start : start + 8]
        d1, d2, d3 = 2 * l1 + 1, 2 * l2 + 1, 2 * l3 + 1
        block = couplings[offset : offset + d1 * d2 * d3].view(d1, d2, d3)
        offset += d1 * d2 * d3
        x_path = x[:, in_column : in_column + d1 * mul].reshape(num_edges, d1, mul)
        y_path = edge_sh[:, sh_column : sh_column + d2]
        w_path = edge_weights[:, weight_column : weight_column + mul]
        message = torch.einsum("ijk,eiu,ej,eu->eku", block, x_path, y_path, w_path).reshape(num_edges, d3 * mul)
        columns = torch.arange(out_column, out_column + d3 * mul, device=x.device)
        messages = messages.index_add(1, columns, message)
    out = node_features.new_zeros((node_features.shape[0], num_out_features))
    return out.index_add(0, receiver, messages)


def radial_convolution_reference(
    node_features: torch.Tensor,
    edge_sh: torch.Tensor,
    edge_radial: torch.Tensor,
    mlp_weights: torch.Tensor,
    mlp_widths: list[int],
    activation: str,
    activation_scale: float,
    edge_index: torch.Tensor,
    couplings: torch.Tensor,
    paths: list[int],
    num_out_features: int,
) -> torch.Tensor:
    """The radial MLP on every edge, then the convolution reference."""
    act = getattr(torch.nn.functional, {"swish": "silu"}.get(activation, activation))
    h, offset = edge_radial, 0
    for index, (rows, columns) in enumerate(zip(mlp_widths, mlp_widths[1:])):
        h = h @ mlp_weights[offset : offset + rows * columns].view(rows, columns)
        offset += rows * columns
        if index < len(mlp_widths) - 2:
            h = act(h) * activation_scale
    return tensor_product_convolution_reference(node_features, edge_sh, h, edge_index, couplings, paths, num_out_features)


def channelwise_polynomial_reference(
    features: torch.Tensor,
    node_weights: torch.Tensor,
    coefficients: torch.Tensor,
    terms: list[int],
    num_outputs: int,
) -> torch.Tensor:
    """The channelwise polynomial written out: every term's monomial gathered, weighted and summed by index_add."""
    table = torch.tensor(terms, dtype=torch.long, device=features.device).view(-1, 8)
    output, coefficient, multiplier, degree, factors = table[:, 0], table[:, 1], table[:, 2], table[:, 3], table[:, 4:]
    num_nodes, num_features, num_channels = features.shape
    # unused factor slots read an appended row of ones
    padded = torch.cat([features, features.new_ones(num_nodes, 1, num_channels)], dim=1)
    slots = torch.where(torch.arange(4, device=features.device) < degree[:, None], factors, num_features)
    monomials = padded[:, slots, :].prod(dim=2)
    scaled = coefficients[:, coefficient, :] * multiplier.to(features.dtype)[None, :, None]
    contributions = torch.einsum("ne,etc,ntc->ntc", node_weights, scaled, monomials)
    out = features.new_zeros(num_nodes, num_outputs, num_channels)
    return out.index_add(1, output, contributions)


def segment_outer_sum_reference(
    basis: torch.Tensor, features: torch.Tensor, source: torch.Tensor, target: torch.Tensor, num_targets: int
) -> torch.Tensor:
    """Every row's outer product written out, then summed into its target with index_add."""
    outer = basis.unsqueeze(2) * features.index_select(0, source).unsqueeze(1)
    return outer.new_zeros((num_targets,) + tuple(outer.shape[1:])).index_add(0, target, outer)
