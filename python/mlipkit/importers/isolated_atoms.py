"""The network's energy for an atom without neighbours, which mlipkit measures every atom from.

mlipkit's models subtract, per type, what the network gives an isolated atom
(so that such an atom gets exactly its per-type shift); other packages do not.
An imported model keeps their energies by adding that value to the shift.
"""

from __future__ import annotations

from typing import Callable

import ase
import torch

from mlipkit.data import keys
from mlipkit.data.graph import graph_from_atoms
from mlipkit.models.potential import Potential


def isolated_atom_network_energies(model: Potential, read_out: Callable[[torch.Tensor], torch.Tensor]) -> list[float]:
    """``read_out`` (the core's per-atom energy of its atom features) of an isolated atom of each type."""
    spacing = 10.0 * model.r_max
    atoms = ase.Atoms(symbols=model.type_names, positions=[[spacing * i, 0.0, 0.0] for i in range(len(model.type_names))])
    graph = graph_from_atoms(atoms, model.r_max, model.type_names, torch.float64)
    edge_vectors = graph[keys.POSITIONS].new_zeros(0, 3)
    with torch.no_grad():
        node_features = model.core(graph, edge_vectors, edge_vectors.new_zeros(0))[1]
        return [float(value) for value in read_out(node_features)[:, 0]]
