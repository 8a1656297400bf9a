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


def outer_product_basis(polar_values: torch.Tensor, dihedral_values: torch.Tensor) -> torch.Tensor:
    """[N, K * K]: a circular basis of the polar angle times one of the dihedral, polar index major.

    GemNet-OC's "legendre_outer" (zonal harmonics of both cosines) and
    "gaussian_outer" (Gaussians of both cosines) quadruplet bases.
    """
    return (polar_values.unsqueeze(-1) * dihedral_values.unsqueeze(-2)).flatten(-2)


def _fairchem_convention_harmonics(cosines: torch.Tensor, azimuths: torch.Tensor, num_degrees: int) -> torch.Tensor:
    """fairchem's real spherical harmonics of (cos polar angle, azimuth), written out; only to fit the basis change.

    Per degree l the order m = 0, 1 .. l, -l .. -1; sqrt(2) N_l|m| P_l^|m| times cos(m phi) (m > 0) or
    sin(|m| phi) (m < 0), with P without the Condon-Shortley phase. Its sqrt(1 - z^2) makes
    derivatives infinite at the poles, which is why the model does not evaluate it.
    """
    sines = torch.sqrt(1.0 - cosines * cosines)
    legendre: dict[tuple[int, int], torch.Tensor] = {}
    for order in range(num_degrees):
        # P_m^m = (2m - 1)!! sin^m, P_{m+1}^m = (2m + 1) z P_m^m, then the three-term recursion in l
        legendre[order, order] = math.prod(range(1, 2 * order, 2)) * sines**order
        if order + 1 < num_degrees:
            legendre[order + 1, order] = (2 * order + 1) * cosines * legendre[order, order]
        for degree in range(order + 2, num_degrees):
            legendre[degree, order] = (
                (2 * degree - 1) * cosines * legendre[degree - 1, order] - (degree + order - 1) * legendre[degree - 2, order]
            ) / (degree - order)
    columns = []
    for degree in range(num_degrees):
        norm = lambda order: math.sqrt((2 * degree + 1) / (4 * math.pi) * math.factorial(degree - order) / math.factorial(degree + order))  # noqa: E731
        components = {0: norm(0) * legendre[degree, 0]}
        for order in range(1, degree + 1):
            components[order] = math.sqrt(2.0) * norm(order) * legendre[degree, order] * torch.cos(order * azimuths)
            components[-order] = math.sqrt(2.0) * norm(order) * legendre[degree, order] * torch.sin(order * azimuths)
        columns += [components[order] for order in [0, *range(1, degree + 1), *range(-degree, 0)]]
    return torch.stack(columns, dim=-1)


class QuadrupletHarmonics(torch.nn.Module):
    """GemNet-OC's "spherical_harmonics" quadruplet basis (fairchem's sbf), smooth everywhere.

    fairchem evaluates real spherical harmonics from the cosine of a polar
    angle and an azimuth; at collinear geometries (the poles) their
    derivatives are infinite. The same functions of the unit vector
    (sin cos az, sin sin az, cos) are e3nn's spherical harmonics, polynomials
    of the components, followed by a fixed orthogonal change of basis per
    degree, fitted once here on directions away from the poles.
    """

    def __init__(self, num_degrees: int):
        super().__init__()
        from e3nn import o3

        self.degrees = list(range(num_degrees))
        generator = torch.Generator().manual_seed(0)
        cosines = torch.rand(8 * num_degrees**2, generator=generator, dtype=torch.float64) * 1.6 - 0.8
        azimuths = torch.rand(cosines.shape, generator=generator, dtype=torch.float64) * 2 * math.pi
        sines = torch.sqrt(1.0 - cosines**2)
        directions = torch.stack([sines * torch.cos(azimuths), sines * torch.sin(azimuths), cosines], dim=-1)
        e3nn_values = o3.spherical_harmonics(self.degrees, directions, normalize=False, normalization="integral")
        target = _fairchem_convention_harmonics(cosines, azimuths, num_degrees)
        change = torch.linalg.lstsq(e3nn_values, target).solution
        residual = float((e3nn_values @ change - target).abs().max())
        if residual > 1e-10:
            raise RuntimeError(f"QuadrupletHarmonics: the change of basis does not fit (residual {residual:.2e})")
        self.register_buffer("change_of_basis", change, persistent=False)

    def forward(self, unit_vectors: torch.Tensor) -> torch.Tensor:
        from e3nn import o3

        values = o3.spherical_harmonics(self.degrees, unit_vectors, normalize=False, normalization="integral")
        return values @ self.change_of_basis
