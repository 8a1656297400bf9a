"""AtomicGraph: a plain mapping of named tensors (field names in ``keys``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import ase
import numpy as np
import torch

from mlipkit.data import keys
from mlipkit.data.extxyz import Configuration, atoms_total_charge
from mlipkit.data.neighbours import ewald_k_indices, neighbour_list

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


@dataclass(frozen=True)
class LongRangeInputs:
    """What a model with long-range electrostatics reads beyond the graph: a second edge list and Ewald's k vectors.

    ``every_pair_without_pbc``: a structure periodic in no direction lists
    every pair (Ewald's direct sum); ``k_max`` > 0: periodic structures get
    the k vectors up to it (and must be periodic in all three directions).
    """

    cutoff: float
    every_pair_without_pbc: bool = False
    k_max: float = 0.0

    @classmethod
    def for_coulomb(cls, cutoff: float, method: str, k_max: float) -> "LongRangeInputs":
        """What a Coulomb method needs: Ewald lists every pair of a molecule and takes the k vectors up to k_max."""
        return cls(cutoff, every_pair_without_pbc=method == "ewald", k_max=k_max)


def long_range_fields(configuration: Configuration, inputs: LongRangeInputs, dtype: torch.dtype) -> AtomicGraph:
    periodic = bool(np.all(configuration.pbc))
    if inputs.k_max > 0 and np.any(configuration.pbc) and not periodic:
        raise ValueError(
            f"{configuration.source}: Ewald sums need a cell periodic in all three directions or in none; "
            f"this structure has pbc={configuration.pbc.tolist()}"
        )
    cutoff = inputs.cutoff
    if inputs.every_pair_without_pbc and not np.any(configuration.pbc) and len(configuration.positions) > 1:
        extent = np.ptp(configuration.positions, axis=0)
        cutoff = max(cutoff, float(np.linalg.norm(extent)) + 1.0)
    edge_index, shifts = neighbour_list(configuration.positions, configuration.cell, configuration.pbc, cutoff)
    fields = {keys.LR_EDGE_INDEX: torch.from_numpy(edge_index), keys.LR_EDGE_CELL_SHIFTS: torch.from_numpy(shifts).to(dtype)}
    k_indices = np.zeros((0, 3))
    if inputs.k_max > 0 and periodic:
        k_indices = ewald_k_indices(configuration.cell, inputs.k_max)
    fields[keys.K_INDICES] = torch.tensor(k_indices, dtype=dtype)
    fields[keys.K_BATCH] = torch.zeros(len(k_indices), dtype=torch.int64)
    return fields


def graph_from_configuration(
    configuration: Configuration,
    r_max: float,
    type_names: Sequence[str],
    dtype: torch.dtype | None = None,
    long_range: LongRangeInputs | None = None,
) -> AtomicGraph:
    """One structure as a single-graph batch, with whatever labels it carries (and long-range inputs if asked)."""
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
    if configuration.dipole is not None:
        graph[keys.DIPOLE] = torch.tensor(configuration.dipole, dtype=dtype).unsqueeze(0)
    if long_range is not None:
        graph.update(long_range_fields(configuration, long_range, dtype))
    for name, values in configuration.head_labels.items():
        tensor = torch.tensor(values, dtype=dtype)
        graph[name] = tensor.unsqueeze(0) if name.startswith("graph") else tensor
    return graph


def graph_from_atoms(
    atoms: ase.Atoms,
    r_max: float,
    type_names: Sequence[str],
    dtype: torch.dtype | None = None,
    long_range: LongRangeInputs | None = None,
) -> AtomicGraph:
    """Graph of an ``ase.Atoms`` with its total charge (see ``atoms_total_charge``); labels are never read from its calculator."""
    configuration = Configuration(
        symbols=atoms.get_chemical_symbols(),
        positions=np.asarray(atoms.positions, dtype=np.float64),
        cell=np.asarray(atoms.cell.array, dtype=np.float64),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        total_charge=atoms_total_charge(atoms),
    )
    return graph_from_configuration(configuration, r_max, type_names, dtype, long_range)


def batch_layout(graph: AtomicGraph) -> tuple[torch.Tensor, int]:
    """Each atom's graph index and the number of graphs; a graph without batch fields is one structure."""
    batch = graph[keys.BATCH] if keys.BATCH in graph else torch.zeros_like(graph[keys.ATOM_TYPES])
    num_graphs = graph[keys.NUM_ATOMS].shape[0] if keys.NUM_ATOMS in graph else 1
    return batch, num_graphs


def graph_total_charges(graph: AtomicGraph, num_graphs: int, dtype: torch.dtype) -> torch.Tensor:
    """Each graph's total charge; graphs without one are neutral."""
    if keys.TOTAL_CHARGE in graph:
        return graph[keys.TOTAL_CHARGE].to(dtype)
    return torch.zeros(num_graphs, dtype=dtype, device=graph[keys.ATOM_TYPES].device)


def compute_edge_vectors(
    graph: AtomicGraph, index_field: str = keys.EDGE_INDEX, shift_field: str = keys.EDGE_CELL_SHIFTS
) -> torch.Tensor:
    """Receiver minus sender position, plus the periodic shift of the receiver (of the long-range list with LR_* names)."""
    sender, receiver = graph[index_field]
    positions = graph[keys.POSITIONS]
    edge_vectors = positions.index_select(0, receiver) - positions.index_select(0, sender)
    if shift_field in graph:
        edge_cells = graph[keys.CELL].index_select(0, graph[keys.BATCH].index_select(0, receiver))
        edge_vectors = edge_vectors + torch.bmm(graph[shift_field].unsqueeze(1), edge_cells).squeeze(1)
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
    known = keys.NODE_FIELDS + keys.EDGE_FIELDS + keys.GRAPH_FIELDS + keys.LR_EDGE_FIELDS + keys.K_FIELDS + keys.NODE_INDEX_FIELDS
    unknown = fields - set(known) - set(keys.GRAPH_INDEX_FIELDS)
    if unknown:
        raise ValueError(f"cannot batch unknown graph field(s) {sorted(unknown)}")
    num_nodes = torch.tensor([g[keys.ATOM_TYPES].shape[0] for g in graphs])
    node_offsets = torch.cumsum(num_nodes, 0) - num_nodes
    batched: AtomicGraph = {}
    for name in fields:
        if name in keys.NODE_INDEX_FIELDS:
            batched[name] = torch.cat([g[name] + offset for g, offset in zip(graphs, node_offsets)], dim=1)
        elif name in keys.GRAPH_INDEX_FIELDS:
            counts = torch.tensor([g[keys.GRAPH_INDEX_FIELDS[name]].shape[0] for g in graphs])
            batched[name] = torch.repeat_interleave(torch.arange(len(graphs)), counts)
        else:
            batched[name] = torch.cat([g[name] for g in graphs], dim=0)
    return batched
