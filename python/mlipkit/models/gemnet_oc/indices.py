"""GemNet-OC's interaction index sets, built inside the model from (edge_index, edge_vectors).

The model sees one edge list (sorted by receiver, as every mlipkit graph is),
so an edge is identified by its position in that list: two edges are the same
physical edge exactly when they are the same entry, whatever periodic image
they join. Reverse edges are found geometrically (swapped endpoints, opposite
vector), since callers such as LAMMPS compute the two directions from
different ghost images and the vectors agree only to rounding.
"""

from __future__ import annotations

import torch

#: Two edges between the same atoms are each other's reverse when their vectors cancel to within this (Å);
#: distinct periodic images are a cell length apart, and atoms closer than this are refused elsewhere.
REVERSE_TOLERANCE = 1e-4


def receiver_pointers(receivers: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """[num_nodes + 1] offsets: the edges into node a are pointers[a] .. pointers[a + 1] - 1 (receivers sorted)."""
    counts = torch.bincount(receivers, minlength=num_nodes)
    return torch.cat([counts.new_zeros(1), counts.cumsum(0)])


def ragged_ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each i, the integers starts[i] .. starts[i] + counts[i] - 1, concatenated, and the i each belongs to."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first_of_owner = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return starts.index_select(0, owner) + torch.arange(owner.numel(), device=counts.device) - first_of_owner, owner


def triplets(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of distinct edges into the same atom, b->a and c->a, as (edge_in, edge_out).

    Grouped by edge_out in edge order, and within a group in edge order of
    edge_in; the two edges may join the same atoms through different images.
    """
    receivers = edge_index[1]
    pointers = receiver_pointers(receivers, num_nodes)
    degree = pointers[1:] - pointers[:-1]
    edge_in, edge_out = ragged_ranges(pointers.index_select(0, receivers), degree.index_select(0, receivers))
    distinct = edge_in != edge_out
    return edge_in[distinct], edge_out[distinct]


def reverse_edges(edge_index: torch.Tensor, edge_vectors: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """For each edge s->t the index of its reverse t->s with the opposite vector; raises if one is missing."""
    senders, receivers = edge_index[0], edge_index[1]
    pointers = receiver_pointers(receivers, num_nodes)
    degree = pointers[1:] - pointers[:-1]
    # candidates for edge e's reverse: the edges into e's sender
    candidate, edge = ragged_ranges(pointers.index_select(0, senders), degree.index_select(0, senders))
    mismatch = (edge_vectors.index_select(0, candidate) + edge_vectors.index_select(0, edge)).norm(dim=1)
    matches = (senders.index_select(0, candidate) == receivers.index_select(0, edge)) & (mismatch < REVERSE_TOLERANCE)
    matched_edge, matched_candidate = edge[matches], candidate[matches]
    count = torch.bincount(matched_edge, minlength=senders.numel())
    if bool((count != 1).any()):
        bad = int(torch.nonzero(count != 1)[0, 0])
        raise ValueError(
            f"edge {bad} ({int(senders[bad])} -> {int(receivers[bad])}) has {int(count[bad])} reverse edges with the "
            "opposite vector; GemNet-OC needs a full neighbour list in which every edge's reverse appears once"
        )
    reverse = torch.empty_like(senders)
    reverse[matched_edge] = matched_candidate
    return reverse
