"""Graph energies, and forces and virials from edge forces: the routines every output path shares.

With edge vectors r_e = x_receiver - x_sender (+ periodic shift) and edge
forces f_e = -dE/dr_e, the force on an atom is the sum of f_e over the edges it
receives minus the sum over the edges it sends; the virial is the sum of
r_e (x) f_e, which equals -dE/d(strain); each edge's virial is split equally
between its two atoms to give per-atom virials that sum to the total.
"""

from __future__ import annotations

import torch

from mlipkit.data import keys
from mlipkit.nn.scatter import sum_into_nodes, sum_into_segments


def forces_and_node_virials(
    edge_index: torch.Tensor, edge_vectors: torch.Tensor, edge_forces: torch.Tensor, num_nodes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    sender, receiver = edge_index[0], edge_index[1]
    forces = sum_into_nodes(edge_forces, receiver, num_nodes) - sum_into_nodes(edge_forces, sender, num_nodes)
    edge_virials = edge_vectors.unsqueeze(2) * edge_forces.unsqueeze(1)
    node_virials = 0.5 * (
        sum_into_nodes(edge_virials, receiver, num_nodes) + sum_into_nodes(edge_virials, sender, num_nodes)
    )
    return forces, node_virials


def virial_per_graph(node_virials: torch.Tensor, batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    return sum_into_segments(node_virials, batch, num_graphs)


def stress_from_virial(virial: torch.Tensor, cell: torch.Tensor, pbc: torch.Tensor) -> torch.Tensor:
    """-virial / volume (ASE sign); NaN for graphs that are not periodic in all three directions."""
    volume = torch.linalg.det(cell).abs()
    periodic = pbc.all(dim=1)
    safe_volume = torch.where(periodic, volume, torch.ones_like(volume))
    stress = -virial / safe_volume.view(-1, 1, 1)
    return torch.where(periodic.view(-1, 1, 1), stress, torch.full_like(stress, float("nan")))


def graph_energies(node_energies: torch.Tensor, graph: dict[str, torch.Tensor], batch: torch.Tensor, num_graphs: int) -> torch.Tensor:
    """Per-graph sums of the counted atoms' energies (all atoms unless the graph has a node_energy_mask).

    Callers with ghost atoms (LAMMPS) count only the atoms they own; forces are
    then derivatives of that sum.
    """
    if keys.NODE_ENERGY_MASK in graph:
        node_energies = torch.where(graph[keys.NODE_ENERGY_MASK], node_energies, torch.zeros_like(node_energies))
    return sum_into_segments(node_energies, batch, num_graphs)


def outputs_from_edge_forces(
    graph: dict[str, torch.Tensor],
    edge_vectors: torch.Tensor,
    edge_forces: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
) -> dict[str, torch.Tensor]:
    """Edge forces, forces, per-atom virials, virials and (where the graph has a cell) stress."""
    forces, node_virials = forces_and_node_virials(
        graph[keys.EDGE_INDEX], edge_vectors, edge_forces, graph[keys.ATOM_TYPES].shape[0]
    )
    virial = virial_per_graph(node_virials, batch, num_graphs)
    outputs = {
        keys.EDGE_FORCES: edge_forces,
        keys.FORCES: forces,
        keys.NODE_VIRIALS: node_virials,
        keys.VIRIAL: virial,
    }
    if keys.CELL in graph and keys.PBC in graph:
        outputs[keys.STRESS] = stress_from_virial(virial, graph[keys.CELL], graph[keys.PBC])
    return outputs
