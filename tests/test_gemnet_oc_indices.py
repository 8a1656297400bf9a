"""GemNet-OC's index sets from one edge list, against brute-force enumerations."""

import pytest
import torch
from ase.build import bulk, molecule

from mlipkit.data import compute_edge_vectors, graph_from_atoms, keys
from mlipkit.models.gemnet_oc.indices import inner_index, quadruplets, reverse_edges, triplets


def graphs():
    small = bulk("Cu", "fcc", a=3.6, cubic=True)  # 4 atoms, cutoff 5 > cell: several images of each pair
    small.rattle(0.05, seed=1)
    ethanol = molecule("CH3CH2OH")
    return {"small_cell": graph_from_atoms(small, 5.0, ["Cu"], torch.float64), "molecule": graph_from_atoms(ethanol, 2.5, ["H", "C", "O"], torch.float64)}


def graph_parts(name):
    """Edge index, edge vectors and number of nodes of one of the test graphs."""
    graph = graphs()[name]
    return graph[keys.EDGE_INDEX], compute_edge_vectors(graph), graph[keys.ATOM_TYPES].shape[0]


@pytest.mark.parametrize("name", ["small_cell", "molecule"])
def test_triplets_are_every_pair_of_distinct_edges_into_one_atom(name):
    edge_index, _, num_nodes = graph_parts(name)
    edge_in, edge_out = triplets(edge_index, num_nodes)
    receivers = edge_index[1].tolist()
    expected = [(i, o) for o in range(len(receivers)) for i in range(len(receivers)) if i != o and receivers[i] == receivers[o]]
    assert list(zip(edge_in.tolist(), edge_out.tolist())) == expected
    assert len(expected) > 0


@pytest.mark.parametrize("name", ["small_cell", "molecule"])
def test_reverse_edges(name):
    edge_index, vectors, num_nodes = graph_parts(name)
    reverse = reverse_edges(edge_index, vectors, num_nodes)
    assert torch.equal(reverse[reverse], torch.arange(edge_index.shape[1]))
    assert torch.equal(edge_index[0][reverse], edge_index[1]) and torch.equal(edge_index[1][reverse], edge_index[0])
    assert torch.allclose(vectors[reverse], -vectors, atol=1e-12)
    # vectors computed from different ghost images agree only to rounding: still matched
    jittered = vectors + 1e-9 * torch.randn(vectors.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(reverse_edges(edge_index, jittered, num_nodes), reverse)


def test_missing_reverse_edges_are_marked_and_refused_for_whole_systems():
    """A ghost shell's rim lacks reverse edges (-1); a graph of a whole system must not."""
    edge_index, vectors, num_nodes = graph_parts("molecule")
    reverse = reverse_edges(edge_index[:, 1:], vectors[1:], num_nodes)
    full = reverse_edges(edge_index, vectors, num_nodes)
    assert int((reverse < 0).sum()) == 1 and int(full[0]) - 1 == int(torch.nonzero(reverse < 0)[0, 0])
    from mlipkit.models.gemnet_oc.model import check_complete

    with pytest.raises(ValueError, match="no reverse edge with the opposite vector; GemNet-OC needs a full neighbour list"):
        check_complete(edge_index[:, 1:], reverse)


def test_inner_index():
    assert inner_index(torch.tensor([0, 0, 0, 1, 1, 4, 5, 5]), 7).tolist() == [0, 1, 2, 0, 1, 0, 0, 1]
    assert inner_index(torch.tensor([], dtype=torch.long), 3).tolist() == []


@pytest.mark.parametrize("name", ["small_cell", "molecule"])
def test_quadruplets_against_brute_force(name):
    """Main graph and quadruplet graph: two shorter cutoffs, both masks of one list."""
    edge_index, vectors, num_nodes = graph_parts(name)
    lengths = vectors.norm(dim=1)
    main_edges = torch.nonzero(lengths < lengths.max() * 0.95).squeeze(1)
    qint_edges = torch.nonzero(lengths < lengths.max() * 0.8).squeeze(1)
    reverse = reverse_edges(edge_index, vectors, num_nodes)
    quads = quadruplets(edge_index, vectors, reverse, main_edges, qint_edges, num_nodes)
    senders, receivers = edge_index.tolist()
    main, qint = main_edges.tolist(), qint_edges.tolist()
    expected = set()
    for o, ca in enumerate(main):
        for q, ba in enumerate(qint):
            if receivers[ba] != receivers[ca] or ba == ca:
                continue
            for i, db in enumerate(main):
                if receivers[db] != senders[ba] or db == int(reverse[ba]):
                    continue
                if float((vectors[db] + vectors[ba] - vectors[ca]).norm()) > 1e-4:
                    expected.add((o, q, i))
    produced = {
        (o, int(quads["triplet_out_in"][t_out]), int(quads["triplet_in_in"][t_in]))
        for o, t_out, t_in in zip(quads["out"].tolist(), quads["trip_out_to_quad"].tolist(), quads["trip_in_to_quad"].tolist())
    }
    assert produced == expected and len(expected) > 0
    assert len(produced) == quads["out"].numel()  # no quadruplet twice
    # triplets point at the edges they name
    assert torch.equal(quads["triplet_out_out"][quads["trip_out_to_quad"]], quads["out"])
    assert torch.equal(quads["triplet_in_out"][quads["trip_in_to_quad"]], quads["triplet_out_in"][quads["trip_out_to_quad"]])
    assert bool((quads["out"][1:] >= quads["out"][:-1]).all())


def test_index_sets_trace_with_symbolic_sizes():
    """make_fx with symbolic shapes (the export route) traces them; the trace gives eager's sets on another graph."""
    from torch.fx.experimental.proxy_tensor import make_fx

    def index_sets(edge_index, edge_vectors, reverse, atom_types):
        lengths = edge_vectors.norm(dim=1)
        main_edges = torch.nonzero(lengths <= 4.5).squeeze(1)
        qint_edges = torch.nonzero(lengths <= 4.0).squeeze(1)
        num_nodes = atom_types.shape[0]
        edge_in, edge_out = triplets(edge_index.index_select(1, main_edges), num_nodes)
        quads = quadruplets(edge_index, edge_vectors, reverse, main_edges, qint_edges, num_nodes)
        return edge_in, edge_out, quads["out"], quads["trip_in_to_quad"], inner_index(quads["out"], main_edges.numel())

    def inputs(name):
        edge_index, vectors, num_nodes = graph_parts(name)
        return edge_index, vectors, reverse_edges(edge_index, vectors, num_nodes), torch.zeros(num_nodes, dtype=torch.long)

    traced = make_fx(index_sets, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*inputs("small_cell"))
    other = inputs("molecule")
    for produced, expected in zip(traced(*other), index_sets(*other)):
        assert torch.equal(produced, expected)
