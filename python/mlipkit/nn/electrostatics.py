"""Partial charges, total-charge embedding and the Coulomb energy of the charges.

Charges: a readout of the final node features gives raw charges q~_i; a
correction makes each graph's charges add up to its total charge Q:
q_i = q~_i - f_i c with c = (sum_j q~_j - Q) / sum_j f_j, where f_i = 1
("uniform", as InstaDeep's mlip), f_i = softplus of a second readout channel
("weighted", as AIMNet2), or no correction ("none"). Several LAMMPS ranks
cannot form the sums themselves, so the shift c may instead be given.

Energy: E = 1/2 sum_{i != j} k_e q_i q_j psi(r_ij) over a second, longer edge
list (both directions of every pair, hence the 1/2) plus a self term per atom,
plus for Ewald the reciprocal-space sum. Each method's psi:

- ``damped_shifted`` (Fennell and Gezelter 2006): erfc(a r)/r with its value
  and slope shifted to zero at the long-range cutoff; local and smooth.
- ``ewald``: erfc(a r)/r in real space, the reciprocal sum and the
  neutralising background for periodic cells; 1/r over every pair for
  molecules (the caller lists every pair).
- ``mlip_parity``: mlip's sum, k_e q_i q_j chi(r) over every listed pair
  without the 1/2 and cut hard at the cutoff (twice the energy, jumps).

PhysNet's short-range damping replaces 1/r by
phi(r/R_d)/sqrt(r^2 + 1) + (1 - phi(r/R_d))/r below R_d (phi = 1 - 6x^5 +
15x^4 - 10x^3), as a term added to psi that vanishes smoothly at R_d.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
from e3nn import o3
from torch import nn

from mlipkit.nn.linear import Linear
from mlipkit.nn.scatter import graph_rows, sum_into_segments
from mlipkit.nn.tracing import is_eager

CoulombMethod = Literal["damped_shifted", "ewald", "mlip_parity"]
ChargeCorrection = Literal["uniform", "weighted", "none"]
TotalChargeEmbeddingKind = Literal["categorical", "continuous"]

#: mlip's PhysNet damping radius (its envelope cutoff of 10 Å, halved by the 2r in phi's argument)
MLIP_DAMPING_RADIUS = 5.0
#: damped_shifted's default damping (1/Å)
DAMPED_SHIFTED_ALPHA = 0.2


def short_range_damping(lengths: torch.Tensor, radius: float) -> torch.Tensor:
    """PhysNet's damped 1/r minus the bare 1/r: zero (with two derivatives) from ``radius`` on."""
    inside = lengths < radius
    x = torch.where(inside, lengths / radius, torch.zeros_like(lengths))
    switch = 1.0 - x**3 * (10.0 - 15.0 * x + 6.0 * x**2)
    difference = torch.rsqrt(lengths * lengths + 1.0) - 1.0 / lengths
    return torch.where(inside, switch * difference, torch.zeros_like(lengths))


def damped_shifted_force(lengths: torch.Tensor, alpha: float, cutoff: float) -> torch.Tensor:
    """erfc(a r)/r shifted so that it and its derivative vanish at ``cutoff``; zero beyond."""
    value_at_cutoff = math.erfc(alpha * cutoff) / cutoff
    slope_at_cutoff = value_at_cutoff / cutoff + 2.0 * alpha / math.sqrt(math.pi) * math.exp(-((alpha * cutoff) ** 2)) / cutoff
    psi = torch.erfc(alpha * lengths) / lengths - value_at_cutoff + slope_at_cutoff * (lengths - cutoff)
    return torch.where(lengths < cutoff, psi, torch.zeros_like(psi))


def damped_shifted_self_coefficient(alpha: float, cutoff: float) -> float:
    """The self term of the damped shifted force sum, per q_i^2 (Fennell and Gezelter's eq. 20)."""
    return -(math.erfc(alpha * cutoff) / (2.0 * cutoff) + alpha / math.sqrt(math.pi))


def ewald_alpha(cutoff: float, accuracy: float) -> float:
    """The splitting parameter a whose real-space terms fall below ``accuracy`` at ``cutoff`` (erfc(a r_c) ~ accuracy)."""
    return math.sqrt(-math.log(accuracy)) / cutoff


def ewald_k_max(alpha: float, accuracy: float) -> float:
    """The reciprocal cutoff whose left-out terms fall below ``accuracy`` (exp(-k^2 / 4a^2) ~ accuracy)."""
    return 2.0 * alpha * math.sqrt(-math.log(accuracy))


def reciprocal_energies(
    charges: torch.Tensor,
    positions: torch.Tensor,
    batch: torch.Tensor,
    cell: torch.Tensor,
    k_indices: torch.Tensor,
    k_batch: torch.Tensor,
    alpha: float,
    num_graphs: int,
) -> torch.Tensor:
    """Per-atom shares of the reciprocal Ewald sum (2 pi / V) sum_k exp(-k^2/4a^2)/k^2 |S(k)|^2, without k_e.

    ``k_indices`` hold one of each pair +-k (hence 4 pi); atom i's share is
    q_i Re(exp(i k.x_i) S(k)*), so the shares add up to the sum.
    """
    reciprocal = 2.0 * math.pi * torch.linalg.inv(cell).transpose(1, 2)
    k = torch.bmm(k_indices.to(positions.dtype).unsqueeze(1), graph_rows(reciprocal, k_batch, num_graphs)).squeeze(1)
    k_squared = (k * k).sum(1)
    volume = graph_rows(torch.linalg.det(cell).abs(), k_batch, num_graphs)
    prefactor = 4.0 * math.pi / volume * torch.exp(-k_squared / (4.0 * alpha * alpha)) / k_squared
    phase = k @ positions.transpose(0, 1)
    same_graph = k_batch.unsqueeze(1) == batch.unsqueeze(0)
    cosines = torch.where(same_graph, torch.cos(phase), torch.zeros_like(phase))
    sines = torch.where(same_graph, torch.sin(phase), torch.zeros_like(phase))
    structure_cos, structure_sin = cosines @ charges, sines @ charges
    return charges * ((prefactor * structure_cos) @ cosines + (prefactor * structure_sin) @ sines)


class Coulomb(nn.Module):
    """Per-atom Coulomb energies of given charges (see the module docstring for the methods)."""

    def __init__(
        self,
        method: CoulombMethod,
        cutoff: float,
        alpha: float,
        damping_radius: float | None,
        coulomb_constant: float,
        ewald_k_max: float = 0.0,
    ):
        super().__init__()
        self.method = method
        self.cutoff = cutoff
        self.alpha = alpha
        self.damping_radius = damping_radius
        self.coulomb_constant = coulomb_constant
        self.ewald_k_max = ewald_k_max

    def pair_kernel(self, lengths: torch.Tensor, edge_alpha: torch.Tensor | None) -> torch.Tensor:
        if self.method == "damped_shifted":
            psi = damped_shifted_force(lengths, self.alpha, self.cutoff)
        elif self.method == "ewald":
            psi = torch.erfc(edge_alpha * lengths) / lengths
        else:
            psi = 1.0 / lengths
        if self.damping_radius is not None:
            psi = psi + short_range_damping(lengths, self.damping_radius)
        return psi

    def forward(
        self,
        charges: torch.Tensor,
        lr_edge_index: torch.Tensor,
        lr_edge_lengths: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        periodic: torch.Tensor,
        positions: torch.Tensor | None = None,
        cell: torch.Tensor | None = None,
        k_indices: torch.Tensor | None = None,
        k_batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-atom energies; Ewald also needs positions, cells and the k indices of the periodic graphs."""
        sender, receiver = lr_edge_index[0], lr_edge_index[1]
        graph_alpha = None
        edge_alpha = None
        if self.method == "ewald":
            alpha = torch.full(periodic.shape, self.alpha, dtype=charges.dtype, device=charges.device)
            graph_alpha = torch.where(periodic, alpha, torch.zeros_like(alpha))
            edge_alpha = graph_rows(graph_alpha, batch.index_select(0, receiver), num_graphs)
        pair = charges.index_select(0, receiver) * charges.index_select(0, sender) * self.pair_kernel(lr_edge_lengths, edge_alpha)
        half = 1.0 if self.method == "mlip_parity" else 0.5
        energies = half * sum_into_segments(pair, receiver, charges.shape[0])
        if self.method == "damped_shifted":
            energies = energies + damped_shifted_self_coefficient(self.alpha, self.cutoff) * charges * charges
        elif self.method == "ewald":
            node_alpha = graph_rows(graph_alpha, batch, num_graphs)
            energies = energies - node_alpha / math.sqrt(math.pi) * charges * charges
            if positions is not None and k_indices is not None:
                eye = torch.eye(3, dtype=charges.dtype, device=charges.device).expand_as(cell)
                safe_cell = torch.where(periodic.view(-1, 1, 1), cell, eye)
                energies = energies + reciprocal_energies(
                    charges, positions, batch, safe_cell, k_indices, k_batch, self.alpha, num_graphs
                )
                # a charged cell sits in a uniform neutralising background: -pi Q^2 / (2 V a^2), shared by q_i Q
                net_charge = sum_into_segments(charges, batch, num_graphs)
                volume = torch.linalg.det(safe_cell).abs()
                background = torch.where(periodic, -math.pi * net_charge / (2.0 * volume * self.alpha**2), 0.0)
                energies = energies + charges * graph_rows(background, batch, num_graphs)
        return self.coulomb_constant * energies


def finite_or_zero(values: torch.Tensor) -> torch.Tensor:
    """NaN entries (a charge shift left to the model) as 0, so that no arithmetic sees them, not even a derivative's."""
    return torch.where(torch.isnan(values), torch.zeros_like(values), values)


def counted_charge_sums(
    raw_charges: torch.Tensor, weights: torch.Tensor, batch: torch.Tensor, num_graphs: int, counted: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """sum q~ and sum f over each graph's counted atoms (all, or a LAMMPS rank's own)."""
    if counted is not None:
        raw_charges = torch.where(counted, raw_charges, torch.zeros_like(raw_charges))
        weights = torch.where(counted, weights, torch.zeros_like(weights))
    return sum_into_segments(raw_charges, batch, num_graphs), sum_into_segments(weights, batch, num_graphs)


def corrected_charges(
    raw_charges: torch.Tensor,
    weights: torch.Tensor,
    total_charge: torch.Tensor,
    batch: torch.Tensor,
    num_graphs: int,
    counted: torch.Tensor | None = None,
    given_shift: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """q = q~ - f c per graph with c = (sum q~ - Q) / sum f over the counted atoms, or c = ``given_shift`` where finite.

    Returns the charges and each graph's shift c.
    """
    raw_sums, weight_sums = counted_charge_sums(raw_charges, weights, batch, num_graphs, counted)
    shift = (raw_sums - total_charge) / weight_sums
    if given_shift is not None:
        shift = torch.where(torch.isnan(given_shift), shift, finite_or_zero(given_shift))
    return raw_charges - weights * graph_rows(shift, batch, num_graphs), shift


class PartialCharges(nn.Module):
    """Charges from a readout of the node features (q~, and for ``weighted`` the weight logits), corrected to Q."""

    def __init__(self, readout: nn.Module, correction: ChargeCorrection):
        super().__init__()
        self.readout = readout
        self.correction = correction

    @staticmethod
    def num_channels(correction: ChargeCorrection) -> int:
        return 2 if correction == "weighted" else 1

    def forward(
        self,
        readout_values: torch.Tensor,
        total_charge: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        counted: torch.Tensor | None = None,
        given_shift: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(charges, raw charges q~, correction weights f) from the readout's values [N, channels]."""
        raw = readout_values[:, 0]
        if self.correction == "none":
            return raw, raw, torch.zeros_like(raw)
        weights = nn.functional.softplus(readout_values[:, 1]) if self.correction == "weighted" else torch.ones_like(raw)
        charges, _ = corrected_charges(raw, weights, total_charge, batch, num_graphs, counted, given_shift)
        return charges, raw, weights


class TotalChargeEmbedding(nn.Module):
    """Each atom's initial features gain a term from its graph's total charge Q.

    ``categorical`` (as mlip): a learned vector per total charge seen in
    training, an error for any other; ``continuous``: Q times a learned vector,
    defined for any Q. Reference nodes (isolated atoms) get no term.
    """

    def __init__(self, kind: TotalChargeEmbeddingKind, available_total_charges: Sequence[float] | None, width: int):
        super().__init__()
        self.kind = kind
        classes = list(available_total_charges or []) if kind == "categorical" else []
        if kind == "categorical" and not classes:
            raise ValueError("the categorical total-charge embedding needs available_total_charges (the training data's)")
        self.register_buffer("classes", torch.tensor(classes, dtype=torch.get_default_dtype()), persistent=False)
        width_in = len(classes) if kind == "categorical" else 1
        self.linear = Linear(o3.Irreps(f"{width_in}x0e"), o3.Irreps(f"{width}x0e"))

    def forward(self, total_charge: torch.Tensor, batch: torch.Tensor, num_reference_nodes: int) -> torch.Tensor:
        if self.kind == "categorical":
            matches = (total_charge.unsqueeze(1) == self.classes.to(total_charge.dtype).unsqueeze(0)).to(total_charge.dtype)
            if is_eager() and not bool((matches.sum(1) == 1).all()):
                unseen = sorted({float(q) for q, row in zip(total_charge.tolist(), matches) if row.sum() != 1})
                raise ValueError(
                    f"total charge {unseen} was not seen in training; this model's categorical total-charge embedding "
                    f"knows {self.classes.tolist()}"
                )
            graph_inputs = matches
        else:
            graph_inputs = total_charge.unsqueeze(1)
        node_terms = graph_rows(self.linear(graph_inputs), batch, total_charge.shape[0])
        return nn.functional.pad(node_terms, (0, 0, 0, num_reference_nodes))


def dipole_moments(
    charges: torch.Tensor, positions: torch.Tensor, batch: torch.Tensor, num_graphs: int, pbc: torch.Tensor | None
) -> torch.Tensor:
    """sum_i q_i x_i per graph (about the origin); NaN for graphs periodic in any direction, where it is not defined."""
    dipoles = sum_into_segments(charges.unsqueeze(1) * positions, batch, num_graphs)
    if pbc is None:
        return dipoles
    return torch.where(pbc.any(dim=1, keepdim=True), torch.full_like(dipoles, float("nan")), dipoles)

