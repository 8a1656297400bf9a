"""AtomicGraph: a plain mapping of named tensors (field names in ``keys``)."""

from __future__ import annotations

from typing import Sequence

import ase
import numpy as np
import torch

from mlipkit.data import keys
from mlipkit.data.extxyz import Configuration
from mlipkit.data.neighbours import neighbour_list

AtomicGraph = dict[str, torch.Tensor]


def type_indices(symbols: Sequence[str], type_names: Sequence[str]) -> np.ndarray:
    """Map chemical symbols onto indices into ``type_names``."""
    index_of = {name: i for i, name in enumerate(type_names)}
    unknown = sorted({s for s in symbols if s not in index_of})
    if unknown:
        raise ValueError(
            f"species {unknown} are not known to the model, whose type names are {list(type_names)}"
        )
    return np.fromiter((index_of[s] for s in symbols), dtype=np.int64, count=len(symbols))


def graph_from_configuration(
    configuration: Configuration,
    r_max: float,
    type_names: Sequence[str],
    dtype: torch.dtype | None = None,
) -> AtomicGraph:
    """One structure as a single-graph batch, with whatever labels it carries."""
    dtype = dtype or torch.get_default_dtype()
    edge_index, shifts = neighbour_list(configuration.positions, configuration.cell, configuration.pbc, r_max)
    n = len(configuration.symbols)
    graph: AtomicGraph = {
        keys.POSITIONS: torch.tensor(configuration.positions, dtype=dtype),
        keys.ATOM_TYPES: torch.from_numpy(type_indices(configuration.symbols, type_names)),
        keys.EDGE_INDEX: torch.from_numpy(edge_index),
        keys.EDGE_CELL_SHIFTS: torch.from_numpy(shifts).to(dtype),
        keys.CELL: torch.tensor(configuration.cell, dtype=dtype).unsqueeze(0),
        keys.PBC: torch.tensor(configuration.pbc, dtype=torch.bool).unsqueeze(0),
        keys.BATCH: torch.zeros(n, dtype=torch.int64),
        keys.NUM_ATOMS: torch.tensor([n], dtype=torch.int64),
    }
    if configuration.energy is not None:
        graph[keys.ENERGY] = torch.tensor([configuration.energy], dtype=dtype)
    if configuration.forces is not None:
        graph[keys.FORCES] = torch.tensor(configuration.forces, dtype=dtype)
    if configuration.stress is not None:
        graph[keys.STRESS] = torch.tensor(configuration.stress, dtype=dtype).unsqueeze(0)
    if configuration.charges is not None:
        graph[keys.CHARGES] = torch.tensor(configuration.charges, dtype=dtype)
    if configuration.total_charge is not None:
        graph[keys.TOTAL_CHARGE] = torch.tensor([configuration.total_charge], dtype=dtype)
    for name, values in configuration.head_labels.items():
        tensor = torch.tensor(values, dtype=dtype)
        graph[name] = tensor.unsqueeze(0) if name.startswith("graph") else tensor
    return graph


def graph_from_atoms(
    atoms: ase.Atoms, r_max: float, type_names: Sequence[str], dtype: torch.dtype | None = None
) -> AtomicGraph:
    """Unlabelled graph of an ``ase.Atoms`` (labels are never read from its calculator)."""
    configuration = Configuration(
        symbols=atoms.get_chemical_symbols(),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
    )
    return graph_from_configuration(configuration, r_max, type_names, dtype)


def batch_layout(graph: AtomicGraph) -> tuple[torch.Tensor, int]:
    """Each atom's graph index and the number of graphs; a graph without batch fields is one structure."""
    batch = graph[keys.BATCH] if keys.BATCH in graph else torch.zeros_like(graph[keys.ATOM_TYPES])
    num_graphs = graph[keys.NUM_ATOMS].shape[0] if keys.NUM_ATOMS in graph else 1
    return batch, num_graphs


def compute_edge_vectors(graph: AtomicGraph) -> torch.Tensor:
    """Receiver minus sender position, plus the periodic shift of the receiver."""
    sender, receiver = graph[keys.EDGE_INDEX]
    positions = graph[keys.POSITIONS]
    edge_vectors = positions.index_select(0, receiver) - positions.index_select(0, sender)
    if keys.EDGE_CELL_SHIFTS in graph:
        edge_cells = graph[keys.CELL].index_select(0, graph[keys.BATCH].index_select(0, receiver))
        edge_vectors = edge_vectors + torch.bmm(graph[keys.EDGE_CELL_SHIFTS].unsqueeze(1), edge_cells).squeeze(1)
    return edge_vectors


def batch_graphs(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    """Disjoint union of graphs; receiver-sorted edges stay receiver-sorted."""
    if not graphs:
        raise ValueError("cannot batch an empty list of graphs")
    fields = set(graphs[0])
    for i, graph in enumerate(graphs):
        if set(graph) != fields:
            difference = sorted(fields.symmetric_difference(graph))
            raise ValueError(f"graph {i} does not have the same fields as graph 0 (differ in {difference})")
    unknown = fields - set(keys.NODE_FIELDS + keys.EDGE_FIELDS + keys.GRAPH_FIELDS + (keys.EDGE_INDEX,))
    if unknown:
        raise ValueError(f"cannot batch unknown graph field(s) {sorted(unknown)}")
    num_nodes = torch.tensor([g[keys.ATOM_TYPES].shape[0] for g in graphs])
    node_offsets = torch.cumsum(num_nodes, 0) - num_nodes
    batched: AtomicGraph = {}
    for name in fields:
        if name == keys.EDGE_INDEX:
            batched[name] = torch.cat([g[name] + offset for g, offset in zip(graphs, node_offsets)], dim=1)
        elif name == keys.BATCH:
            batched[name] = torch.repeat_interleave(torch.arange(len(graphs)), num_nodes)
        else:
            batched[name] = torch.cat([g[name] for g in graphs], dim=0)
    return batched
