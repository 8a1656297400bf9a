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


def group_pointers(sorted_groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """[num_groups + 1] offsets: the elements of group g are at pointers[g] .. pointers[g + 1] - 1 (values sorted).

    A binary search of the sorted values, not a count: its size is known before the data (bincount's is not) and
    an exported graph runs it natively (bincount goes through AOTInductor's proxy executor).
    """
    boundaries = torch.arange(num_groups + 1, dtype=sorted_groups.dtype, device=sorted_groups.device)
    return torch.searchsorted(sorted_groups, boundaries)


def ragged_ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each i, the integers starts[i] .. starts[i] + counts[i] - 1, concatenated, and the i each belongs to."""
    owner = torch.repeat_interleave(torch.arange(counts.numel(), device=counts.device), counts)
    first_of_owner = torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    return starts.index_select(0, owner) + torch.arange(owner.numel(), device=counts.device) - first_of_owner, owner


def group_members(sorted_groups: torch.Tensor, groups: torch.Tensor, num_groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each entry of ``groups``, the positions in ``sorted_groups`` holding that group, and the entry each serves.

    With ``sorted_groups`` the receivers of an edge list: the edges into each given atom.
    """
    pointers = group_pointers(sorted_groups, num_groups)
    starts = pointers.index_select(0, groups)
    return ragged_ranges(starts, pointers.index_select(0, groups + 1) - starts)


def inner_index(sorted_groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """Position of each element within its run of equal values: [0 0 0 1 1 3] -> [0 1 2 0 1 0]."""
    starts = group_pointers(sorted_groups, num_groups).index_select(0, sorted_groups)
    return torch.arange(sorted_groups.numel(), device=sorted_groups.device) - starts


def mixed_triplets(
    edge_index: torch.Tensor, in_edges: torch.Tensor, out_edges: torch.Tensor, num_nodes: int, excluded: torch.Tensor,
    to_out_sender: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i, o) of an in-edge into the atom an out-edge ends at (or, ``to_out_sender``, starts from).

    ``in_edges`` and ``out_edges`` list the two graphs' edges as positions in
    ``edge_index`` (ascending: subsets of one receiver-sorted list); ``i`` and
    ``o`` are positions in those lists. ``excluded[o]``: the edge (position in
    ``edge_index``) that out-edge ``o`` must not pair with (itself, or its
    reverse). Grouped by ``o``, in-edges in order within a group.
    """
    in_receivers = edge_index[1].index_select(0, in_edges)
    atom = edge_index[0 if to_out_sender else 1].index_select(0, out_edges)
    edge_in, edge_out = group_members(in_receivers, atom, num_nodes)
    keep = in_edges.index_select(0, edge_in) != excluded.index_select(0, edge_out)
    return edge_in[keep], edge_out[keep]


def triplets(edge_index: torch.Tensor, num_nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every pair of distinct edges into the same atom, b->a and c->a, as (edge_in, edge_out).

    Grouped by edge_out in edge order, and within a group in edge order of
    edge_in; the two edges may join the same atoms through different images.
    """
    edges = torch.arange(edge_index.shape[1], device=edge_index.device)
    return mixed_triplets(edge_index, edges, edges, num_nodes, excluded=edges)


def reverse_edges(edge_index: torch.Tensor, edge_vectors: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """For each edge s->t the index of its reverse t->s with the opposite vector, or -1 where there is none.

    Complete neighbour lists have every reverse; a graph cut from a larger
    system (a ghost shell) lacks the reverses of its outermost edges.
    """
    senders, receivers = edge_index[0], edge_index[1]
    # candidates for edge e's reverse: the edges into e's sender
    candidate, edge = group_members(receivers, senders, num_nodes)
    mismatch = (edge_vectors.index_select(0, candidate) + edge_vectors.index_select(0, edge)).norm(dim=1)
    matches = (senders.index_select(0, candidate) == receivers.index_select(0, edge)) & (mismatch < REVERSE_TOLERANCE)
    reverse = torch.full_like(senders, -1)
    return reverse.index_put((edge[matches],), candidate[matches])


def quadruplets(
    edge_index: torch.Tensor,
    edge_vectors: torch.Tensor,
    reverse: torch.Tensor,
    main_edges: torch.Tensor,
    qint_edges: torch.Tensor,
    num_nodes: int,
) -> dict[str, torch.Tensor]:
    """Quadruplets d->b->a<-c: main edges c->a and d->b joined by a quadruplet-graph edge b->a.

    ``main_edges`` and ``qint_edges`` are the two graphs as ascending positions
    in ``edge_index``; ``reverse`` maps each edge to its reverse. Returned, as
    positions in the graph they belong to: the input triplets d->b->a
    (``triplet_in_in`` main, ``triplet_in_out`` quadruplet graph), the output
    triplets c->a<-b (``triplet_out_in`` quadruplet graph, ``triplet_out_out``
    main) with b->a not the edge c->a itself, and per quadruplet its output
    edge c->a (``out``, main, ascending) and its triplets (``trip_in_to_quad``,
    ``trip_out_to_quad``). d->b is never the reverse of b->a, and d and c are
    never the same atom image (their positions relative to a differ by more
    than REVERSE_TOLERANCE).
    """
    triplet_in_in, triplet_in_out = mixed_triplets(
        edge_index, main_edges, qint_edges, num_nodes, excluded=reverse.index_select(0, qint_edges), to_out_sender=True
    )
    triplet_out_in, triplet_out_out = mixed_triplets(edge_index, qint_edges, main_edges, num_nodes, excluded=main_edges)
    # input triplets are grouped by their quadruplet-graph edge b->a: join those of each output triplet's b->a
    trip_in_to_quad, trip_out_to_quad = group_members(triplet_in_out, triplet_out_in, qint_edges.numel())
    out = triplet_out_out.index_select(0, trip_out_to_quad)
    # r_c - r_d = v(d->b) + v(b->a) - v(c->a)
    vector = lambda graph, positions: edge_vectors.index_select(0, graph.index_select(0, positions))  # noqa: E731
    separation = (
        vector(main_edges, triplet_in_in.index_select(0, trip_in_to_quad))
        + vector(qint_edges, triplet_out_in.index_select(0, trip_out_to_quad))
        - vector(main_edges, out)
    ).norm(dim=1)
    distinct = separation > REVERSE_TOLERANCE
    out = out[distinct]
    return {
        "triplet_in_in": triplet_in_in,
        "triplet_in_out": triplet_in_out,
        "triplet_out_in": triplet_out_in,
        "triplet_out_out": triplet_out_out,
        "out": out,
        "trip_in_to_quad": trip_in_to_quad[distinct],
        "trip_out_to_quad": trip_out_to_quad[distinct],
    }


#: fairchem's tolerance when caps keep degenerate neighbours (enforce_max_neighbors_strictly false), Å
DEGENERACY_TOLERANCE = 0.01


def nearest_neighbours(
    candidates: torch.Tensor, edge_vectors: torch.Tensor, lengths: torch.Tensor, receivers: torch.Tensor,
    num_nodes: int, cap: int, strict: bool,
) -> torch.Tensor:
    """The ``candidates`` (ascending edge positions) among each receiver's ``cap`` nearest, ascending.

    Ties in length are broken by the edge vector's components, so the choice
    depends on geometry only, not on atom order. ``strict=False`` keeps every
    edge no longer than the (cap+1)-th nearest plus DEGENERACY_TOLERANCE, as
    fairchem does.
    """
    vectors, candidate_lengths = edge_vectors.index_select(0, candidates), lengths.index_select(0, candidates)
    order = torch.arange(candidates.numel(), device=candidates.device)
    for key in (vectors[:, 2], vectors[:, 1], vectors[:, 0], candidate_lengths, receivers.index_select(0, candidates)):
        order = order.index_select(0, torch.sort(key.index_select(0, order), stable=True).indices)
    sorted_receivers = receivers.index_select(0, candidates.index_select(0, order))
    rank = torch.empty_like(order)
    rank[order] = inner_index(sorted_receivers, num_nodes)
    if strict:
        keep = rank < cap
    else:
        at_cap = rank.index_select(0, order) == cap
        threshold = torch.full((num_nodes,), float("inf"), dtype=lengths.dtype, device=lengths.device)
        threshold = threshold.index_put((sorted_receivers[at_cap],), candidate_lengths.index_select(0, order)[at_cap])
        keep = candidate_lengths <= threshold.index_select(0, receivers.index_select(0, candidates)) + DEGENERACY_TOLERANCE
    return candidates[keep]


def lower_index_half(edges: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
    """The ``edges`` whose sender's index is at most the receiver's: fairchem's half of a capped graph.

    fairchem keeps the pair a < b when a is within b's cap and adds the reverse, whatever b's own cap holds.
    An atom's edges to its own images stay both: they lie in the same atom's list at the same length, so a
    cap keeps both directions or neither (ties at the cap aside).
    """
    return edges.index_select(0, torch.nonzero(senders.index_select(0, edges) <= receivers.index_select(0, edges)).squeeze(1))


def with_reverse_edges(edges: torch.Tensor, reverse: torch.Tensor, num_edges: int) -> torch.Tensor:
    """``edges`` (ascending positions) together with their reverse edges, ascending: a symmetric graph."""
    selected = torch.zeros(num_edges, dtype=torch.bool, device=edges.device)
    selected[edges] = True
    selected[reverse.index_select(0, edges)] = True
    return torch.nonzero(selected).squeeze(1)


def positions_in(subset: torch.Tensor, num_edges: int) -> torch.Tensor:
    """For every edge of the full list, its position in ``subset`` (ascending positions); -1 if absent."""
    lookup = torch.full((num_edges,), -1, dtype=subset.dtype, device=subset.device)
    return lookup.index_put((subset,), torch.arange(subset.numel(), device=subset.device))
