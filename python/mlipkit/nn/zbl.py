"""Ziegler-Biersack-Littmark screened nuclear repulsion, as an additive per-atom energy."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from ase import units
from ase.data import atomic_numbers
from torch import nn

from mlipkit.nn.radial import PolynomialCutoff
from mlipkit.nn.scatter import sum_into_segments

EnergyUnits = Literal["metal", "real"]

#: e^2 / (4 pi eps0) in energy * Å: eV·Å for LAMMPS "metal", kcal/mol·Å for "real".
COULOMB_CONSTANT = {
    "metal": units.Hartree * units.Bohr,
    "real": units.Hartree * units.Bohr / (units.kcal / units.mol),
}
#: Universal screening length prefactor in Å (0.8854 Bohr), as LAMMPS pair zbl.
SCREENING_LENGTH = 0.46850
SCREENING_COEFFICIENTS = (0.18175, 0.50986, 0.28022, 0.02817)
SCREENING_EXPONENTS = (3.19980, 0.94229, 0.40290, 0.20162)


def atomic_numbers_of(chemical_species: Sequence[str]) -> list[int]:
    unknown = [s for s in chemical_species if s not in atomic_numbers or s == "X"]
    if unknown:
        raise ValueError(f"ZBL needs chemical elements; {unknown} are not element symbols")
    return [atomic_numbers[s] for s in chemical_species]


class ZBL(nn.Module):
    """Pair energy ke Z_i Z_j / r * phi(r / a) times the p=6 polynomial cutoff envelope; half to each atom."""

    def __init__(self, chemical_species: Sequence[str], r_max: float, energy_units: EnergyUnits):
        super().__init__()
        dtype = torch.get_default_dtype()
        self.register_buffer("atomic_numbers", torch.tensor(atomic_numbers_of(chemical_species), dtype=dtype))
        self.register_buffer("coefficients", torch.tensor(SCREENING_COEFFICIENTS, dtype=dtype))
        self.register_buffer("exponents", torch.tensor(SCREENING_EXPONENTS, dtype=dtype))
        self.coulomb_constant = float(COULOMB_CONSTANT[energy_units])
        self.envelope = PolynomialCutoff(r_max, 6)

    def forward(self, atom_types: torch.Tensor, edge_index: torch.Tensor, edge_lengths: torch.Tensor) -> torch.Tensor:
        sender, receiver = edge_index[0], edge_index[1]
        z_sender = self.atomic_numbers.index_select(0, atom_types.index_select(0, sender))
        z_receiver = self.atomic_numbers.index_select(0, atom_types.index_select(0, receiver))
        screening_length = SCREENING_LENGTH / (z_sender.pow(0.23) + z_receiver.pow(0.23))
        x = (edge_lengths / screening_length).unsqueeze(-1)
        screening = (self.coefficients * torch.exp(-self.exponents * x)).sum(-1)
        pair_energy = self.coulomb_constant * z_sender * z_receiver / edge_lengths * screening
        half_per_edge = 0.5 * pair_energy * self.envelope(edge_lengths)
        return sum_into_segments(half_per_edge, receiver, atom_types.shape[0])
