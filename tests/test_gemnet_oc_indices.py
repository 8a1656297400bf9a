"""GemNet-OC's index sets from one edge list, against brute-force enumerations."""

import numpy as np
import pytest
import torch
from ase.build import bulk, molecule

from mlipkit.data import compute_edge_vectors, graph_from_atoms, keys
from mlipkit.models.gemnet_oc.indices import reverse_edges, triplets


def graphs():
    small = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, cutoff 5 > cell: several images of each pair
    small.rattle(0.05, seed=1)
    water = molecule("H2O")
    return {"small_cell": graph_from_atoms(small, 5.0, ["Cu"], torch.float64), "molecule": graph_from_atoms(water, 2.0, ["H", "O"], torch.float64)}


@pytest.mark.parametrize("name", ["small_cell", "molecule"])
def test_triplets_are_every_pair_of_distinct_edges_into_one_atom(name):
    graph = graphs()[name]
    edge_index = graph[keys.EDGE_INDEX]
    num_nodes = graph[keys.ATOM_TYPES].shape[0]
    edge_in, edge_out = triplets(edge_index, num_nodes)
    receivers = edge_index[1].tolist()
    expected = [(i, o) for o in range(len(receivers)) for i in range(len(receivers)) if i != o and receivers[i] == receivers[o]]
    assert list(zip(edge_in.tolist(), edge_out.tolist())) == expected
    assert len(expected) > 0


@pytest.mark.parametrize("name", ["small_cell", "molecule"])
def test_reverse_edges(name):
    graph = graphs()[name]
    edge_index = graph[keys.EDGE_INDEX]
    vectors = compute_edge_vectors(graph)
    num_nodes = graph[keys.ATOM_TYPES].shape[0]
    reverse = reverse_edges(edge_index, vectors, num_nodes)
    assert torch.equal(reverse[reverse], torch.arange(edge_index.shape[1]))
    assert torch.equal(edge_index[0][reverse], edge_index[1]) and torch.equal(edge_index[1][reverse], edge_index[0])
    assert torch.allclose(vectors[reverse], -vectors, atol=1e-12)
    # vectors computed from different ghost images agree only to rounding: still matched
    jittered = vectors + 1e-9 * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(reverse_edges(edge_index, jittered, num_nodes), reverse)


def test_missing_reverse_edge_is_an_error():
    graph = graphs()["molecule"]
    edge_index = graph[keys.EDGE_INDEX][:, 1:]
    vectors = compute_edge_vectors(graph)[1:]
    with pytest.raises(ValueError, match="has 0 reverse edges with the opposite vector; GemNet-OC needs a full neighbour list"):
        reverse_edges(edge_index, vectors, 3)
