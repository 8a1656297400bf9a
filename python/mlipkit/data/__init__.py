"""Atomic graphs, neighbour lists, extxyz datasets, batching and statistics."""

from mlipkit.data import keys
from mlipkit.data.extxyz import Configuration, configuration_from_atoms, read_extxyz
from mlipkit.data.graph import (
    AtomicGraph,
    batch_graphs,
    compute_edge_vectors,
    graph_from_atoms,
    graph_from_configuration,
    type_indices,
)
from mlipkit.data.neighbours import neighbour_list
from mlipkit.data.statistics import DatasetStatistics, compute_statistics

__all__ = [
    "AtomicGraph",
    "Configuration",
    "DatasetStatistics",
    "batch_graphs",
    "compute_edge_vectors",
    "compute_statistics",
    "configuration_from_atoms",
    "graph_from_atoms",
    "graph_from_configuration",
    "keys",
    "neighbour_list",
    "read_extxyz",
    "type_indices",
]
