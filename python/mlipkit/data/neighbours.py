"""Neighbour lists from vesin, as receiver-sorted edges, and the k vectors of Ewald sums."""

from __future__ import annotations

import numpy as np
import vesin

#: Two atoms closer than this (in Å) are "on top of each other": no model is
#: defined there, and the Bessel basis divides by the distance.
MIN_ATOM_DISTANCE = 1e-4


def neighbour_list(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray]:
    """Full neighbour list within ``r_max``.

    Returns ``edge_index`` [2, E] (row 0 sender, row 1 receiver, sorted by
    receiver then sender) and integer ``edge_cell_shifts`` [E, 3] such that
    ``positions[receiver] - positions[sender] + edge_cell_shifts @ cell`` is the
    edge vector. Works for any mix of periodic directions and for cells smaller
    than the cutoff (an atom may then neighbour its own images).
    """
    if not r_max > 0:
        raise ValueError(f"r_max must be positive, got {r_max}")
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.ascontiguousarray(cell, dtype=np.float64)
    pbc = np.asarray(pbc, dtype=bool)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if not np.all(np.isfinite(positions)):
        raise ValueError("positions contain NaN or infinite values")
    if pbc.any() and abs(np.linalg.det(cell)) < 1e-12:
        raise ValueError(f"periodic boundary conditions {pbc.tolist()} need a cell with non-zero volume, got {cell.tolist()}")
    if len(positions) == 0:
        return np.zeros((2, 0), dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    calculator = vesin.NeighborList(cutoff=float(r_max), full_list=True)
    senders, receivers, shifts, distances = calculator.compute(
        positions, cell, pbc.tolist(), quantities="ijSd"
    )
    senders = senders.astype(np.int64)
    receivers = receivers.astype(np.int64)
    too_close = distances < MIN_ATOM_DISTANCE
    if too_close.any():
        k = int(np.argmax(too_close))
        raise ValueError(
            f"atoms {senders[k]} and {receivers[k]} are {distances[k]:.3g} Å apart "
            f"(closer than {MIN_ATOM_DISTANCE} Å): atoms on top of each other are not a valid structure"
        )
    order = np.lexsort((senders, receivers))
    edge_index = np.stack([senders[order], receivers[order]])
    return edge_index, shifts[order].astype(np.int64)


def ewald_k_indices(cell: np.ndarray, k_max: float) -> np.ndarray:
    """Integer vectors n != 0, one of each pair +-n, whose k = 2 pi n (cell^-1)^T has |k| <= k_max.

    Row vectors of ``cell`` are the lattice vectors; k . a_j = 2 pi n_j bounds
    |n_j| by k_max |a_j| / 2 pi.
    """
    cell = np.asarray(cell, dtype=np.float64)
    reciprocal = 2.0 * np.pi * np.linalg.inv(cell).T
    bounds = np.floor(k_max * np.linalg.norm(cell, axis=1) / (2.0 * np.pi)).astype(np.int64)
    axes = [np.arange(-b, b + 1) for b in bounds]
    n = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    first_nonzero = np.where(n[:, 0] != 0, n[:, 0], np.where(n[:, 1] != 0, n[:, 1], n[:, 2]))
    k = n @ reciprocal
    keep = (first_nonzero > 0) & (np.einsum("ij,ij->i", k, k) <= k_max * k_max)
    return n[keep]
