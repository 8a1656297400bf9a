"""GemNet-OC's angular bases of triplet and quadruplet angles."""

from __future__ import annotations

import math

import torch


def zonal_harmonics(cosines: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """[N, num_degrees]: the real spherical harmonics with m = 0, sqrt((2l+1)/(4 pi)) P_l(cos), l = 0 .. num_degrees-1.

    GemNet-OC's "spherical_harmonics" basis of triplet angle cosines
    (fairchem's cbf); Legendre polynomials by their three-term recursion.
    """
    legendre = [torch.ones_like(cosines), cosines]
    for degree in range(1, num_degrees - 1):
        legendre.append(((2 * degree + 1) * cosines * legendre[degree] - degree * legendre[degree - 1]) / (degree + 1))
    norms = [math.sqrt((2 * degree + 1) / (4 * math.pi)) for degree in range(num_degrees)]
    return torch.stack([norm * values for norm, values in zip(norms, legendre[:num_degrees])], dim=-1)
