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
from mlipkit.nn.scatter import graph_rows, sum_into_nodes, sum_into_segments


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
    lr_edges: tuple[torch.Tensor, torch.Tensor] | None = None,
    position_gradient: torch.Tensor | None = None,
    cell_gradient: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Edge forces, forces, per-atom virials, virials and (where the graph has a cell) stress.

    ``lr_edges``: (vectors, forces) of the long-range edge list, which adds the
    same way. Ewald's reciprocal sum depends on positions x and cells h
    directly: ``position_gradient`` dE/dx adds -dE/dx to the forces, and with
    ``cell_gradient`` dE/dh the virial -sum_i x_i (x) dE/dx_i - h^T dE/dh (a
    strain moves both) to each graph's, shared equally by its atoms: the
    terms x_i (x) dE/dx_i alone change with the periodic image x_i is given
    in, their sum with the cell's does not.
    """
    num_nodes = graph[keys.ATOM_TYPES].shape[0]
    forces, node_virials = forces_and_node_virials(graph[keys.EDGE_INDEX], edge_vectors, edge_forces, num_nodes)
    outputs = {keys.EDGE_FORCES: edge_forces}
    if lr_edges is not None:
        lr_vectors, lr_forces = lr_edges
        lr_node_forces, lr_node_virials = forces_and_node_virials(graph[keys.LR_EDGE_INDEX], lr_vectors, lr_forces, num_nodes)
        forces, node_virials = forces + lr_node_forces, node_virials + lr_node_virials
        outputs[keys.LR_EDGE_FORCES] = lr_forces
    if position_gradient is not None:
        forces = forces - position_gradient
        position_terms = graph[keys.POSITIONS].unsqueeze(2) * position_gradient.unsqueeze(1)
        direct_virials = -sum_into_segments(position_terms, batch, num_graphs) - torch.bmm(graph[keys.CELL].transpose(1, 2), cell_gradient)
        atoms_per_graph = sum_into_segments(torch.ones_like(forces[:, 0]), batch, num_graphs)
        node_virials = node_virials + graph_rows(direct_virials / atoms_per_graph.view(-1, 1, 1), batch, num_graphs)
    virial = virial_per_graph(node_virials, batch, num_graphs)
    outputs.update({keys.FORCES: forces, keys.NODE_VIRIALS: node_virials, keys.VIRIAL: virial})
    if keys.CELL in graph and keys.PBC in graph:
        outputs[keys.STRESS] = stress_from_virial(virial, graph[keys.CELL], graph[keys.PBC])
    return outputs
