"""Neighbour lists from vesin, as receiver-sorted edges."""

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
