"""Sums of edge or node rows into segments (nodes or graphs)."""

from __future__ import annotations

import torch

from mlipkit import ops


def sum_into_segments(
    src: torch.Tensor, sorted_index: torch.Tensor, num_segments: int, deterministic: bool = True
) -> torch.Tensor:
    """Sum rows sharing an index. ``sorted_index`` must be non-decreasing.

    ``deterministic`` uses the C++ segment-sum op (fixed summation order, any
    number of threads); otherwise native ``index_add`` (order unspecified on GPU).
    """
    if deterministic:
        return ops.segment_sum(src, sorted_index, num_segments)
    return ops.segment_sum_reference(src, sorted_index, num_segments)


def sum_into_nodes(src: torch.Tensor, index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Sum rows into nodes by an index in any order (e.g. edge senders)."""
    return ops.segment_sum_reference(src, index, num_nodes)


def graph_rows(values: torch.Tensor, graph_index: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Each element's row of a per-graph tensor (graph_index: the graph of each node, edge or k vector).

    A single graph (every artifact) broadcasts instead of gathering: the
    gather's derivative is a scatter into one row, which Inductor's CPU code
    generation fails to compile.
    """
    if num_graphs == 1:
        return values.expand(graph_index.shape[0], *values.shape[1:])
    return values.index_select(0, graph_index)
