"""GemNet-OC's angular bases of triplet and quadruplet angles."""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from mlipkit.models.gemnet_oc.layers import FactoredAngular, ScaleFactor
from mlipkit.nn.radial import BernsteinBasis, BesselBasis, GaussianBasis, PolynomialCutoff, SoftEnvelope


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


def _least_squares(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    """x minimising |a x - b|, by the normal equations and Gauss-Jordan elimination in plain Python floats.

    The same bits on every run: LAPACK's least squares differs in the last
    bits with the memory alignment of its inputs, which would make a model
    rebuilt from its checkpoint differ from the saved one.
    """
    columns, targets = len(a[0]), len(b[0])
    rows = [
        [sum(row[i] * row[j] for row in a) for j in range(columns)]
        + [sum(row[i] * values[k] for row, values in zip(a, b)) for k in range(targets)]
        for i in range(columns)
    ]
    for column in range(columns):
        pivot = max(range(column, columns), key=lambda r: abs(rows[r][column]))
        rows[column], rows[pivot] = rows[pivot], rows[column]
        rows[column] = [value / rows[column][column] for value in rows[column]]
        for r in range(columns):
            if r != column and rows[r][column] != 0.0:
                factor = rows[r][column]
                rows[r] = [value - factor * pivot_value for value, pivot_value in zip(rows[r], rows[column])]
    return [row[columns:] for row in rows]


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
        cosines = torch.rand(8 * num_degrees**2, generator=generator, dtype=torch.float64, device="cpu") * 1.6 - 0.8
        azimuths = torch.rand(cosines.shape, generator=generator, dtype=torch.float64, device="cpu") * 2 * math.pi
        sines = torch.sqrt(1.0 - cosines**2)
        directions = torch.stack([sines * torch.cos(azimuths), sines * torch.sin(azimuths), cosines], dim=-1)
        e3nn_values = o3.spherical_harmonics(self.degrees, directions, normalize=False, normalization="integral")
        target = _fairchem_convention_harmonics(cosines, azimuths, num_degrees)
        # block diagonal: degree l maps onto degree l
        change = torch.zeros(num_degrees**2, num_degrees**2, dtype=torch.float64, device="cpu")
        for degree in self.degrees:
            block = slice(degree**2, (degree + 1) ** 2)
            change[block, block] = torch.tensor(
                _least_squares(e3nn_values[:, block].tolist(), target[:, block].tolist()), dtype=torch.float64, device="cpu"
            )
        residual = float((e3nn_values @ change - target).abs().max())
        if residual > 1e-10:
            raise RuntimeError(f"QuadrupletHarmonics: the change of basis does not fit (residual {residual:.2e})")
        self.register_buffer("change_of_basis", change, persistent=False)

    def forward(self, unit_vectors: torch.Tensor) -> torch.Tensor:
        from e3nn import o3

        values = o3.spherical_harmonics(self.degrees, unit_vectors, normalize=False, normalization="integral")
        return values @ self.change_of_basis


RadialBasisName = Literal["gaussian", "spherical_bessel", "bernstein"]
CircularBasisName = Literal["gaussian", "spherical_harmonics"]
SphericalBasisName = Literal["spherical_harmonics", "legendre_outer", "gaussian_outer"]


class RadialBasis(nn.Module):
    """A radial basis of edge lengths times a smooth envelope that reaches zero at ``cutoff``.

    ``scale_basis`` adds a fitted scale factor on the result (fairchem's option for numerical range).
    """

    def __init__(
        self, name: RadialBasisName, num_radial: int, cutoff: float, envelope: str, exponent: int, scale_basis: bool,
        trainable: bool = False, pregamma_initial: float = 0.45264,
    ):
        super().__init__()
        self.cutoff = float(cutoff)
        if name == "gaussian":
            # on lengths / cutoff, so the centres lie in [0, 1] as fairchem stores them
            self.rbf = GaussianBasis(0.0, 1.0, num_radial, trainable)
        elif name == "spherical_bessel":
            self.rbf = BesselBasis(cutoff, num_radial, trainable=True)
        else:
            self.rbf = BernsteinBasis(cutoff, num_radial, pregamma_initial)
        self.scaled_lengths = name == "gaussian"
        self.envelope = PolynomialCutoff(cutoff, exponent) if envelope == "polynomial" else SoftEnvelope(cutoff)
        self.scale_rbf = ScaleFactor() if scale_basis else None

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        values = self.rbf(lengths / self.cutoff if self.scaled_lengths else lengths)
        values = self.envelope(lengths).unsqueeze(-1) * values
        return values if self.scale_rbf is None else self.scale_rbf(values)


class CircularBasis(nn.Module):
    """A radial basis of the output edge and a basis of triplet angle cosines (fairchem's cbf):
    Gaussians on [-1, 1] or zonal harmonics."""

    def __init__(
        self, name: CircularBasisName, num_spherical: int, radial_basis: RadialBasis, scale_basis: bool, trainable: bool = False
    ):
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis
        self.gaussians = GaussianBasis(-1.0, 1.0, num_spherical, trainable) if name == "gaussian" else None
        self.scale_cbf = ScaleFactor() if scale_basis else None

    def forward(self, lengths: torch.Tensor, cosines: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = zonal_harmonics(cosines, self.num_spherical) if self.gaussians is None else self.gaussians(cosines)
        return self.radial_basis(lengths), values if self.scale_cbf is None else self.scale_cbf(values)


#: Below this a normal of the planes c-a-b or a-b-d (a sine of their angles) counts as zero: the atoms are
#: collinear and the dihedral undefined; rounding noise stays far below it
COLLINEAR_TOLERANCE = 1e-9


class QuadrupletTriplets(NamedTuple):
    """Where each quadruplet's triplets are: its output triplet c->a<-b (``output``, sorted) and its input
    triplet d->b->a (``input``); and each output triplet's output edge (``output_edge``, sorted)."""

    output: torch.Tensor
    input: torch.Tensor
    output_edge: torch.Tensor


class SphericalBasis(nn.Module):
    """A radial basis of the output edge and the quadruplet basis of the polar angle c-a-b and the dihedral
    c-a-b-d (fairchem's sbf), num_spherical^2 wide.

    Takes the normals of the planes c-a-b (per output triplet) and d-b-a (per input triplet) and the polar
    cosines (per output triplet).
    """

    def __init__(
        self, name: SphericalBasisName, num_spherical: int, radial_basis: RadialBasis, scale_basis: bool, trainable: bool = False
    ):
        super().__init__()
        self.num_spherical = num_spherical
        self.radial_basis = radial_basis
        self.harmonics = QuadrupletHarmonics(num_spherical) if name == "spherical_harmonics" else None
        self.circular_basis = GaussianBasis(-1.0, 1.0, num_spherical, trainable) if name == "gaussian_outer" else None
        self.scale_sbf = ScaleFactor() if scale_basis else None

    def angular(
        self, normal_cab: torch.Tensor, normal_abd: torch.Tensor, polar_cosines: torch.Tensor, triplets: QuadrupletTriplets
    ) -> torch.Tensor | FactoredAngular:
        """[quadruplets, num_spherical^2]; the "_outer" bases as their two factors, polar index major (the polar
        factor is a triplet's, computed once for its quadruplets).

        The outer bases need only cos(dihedral), the cosine of the angle between the two planes' normals: unit
        normals per triplet (zero where the atoms are collinear, so that the undefined dihedral counts as
        pi/2, as in fairchem), then one dot product a quadruplet.
        """
        if self.harmonics is not None:
            directions = quadruplet_directions(
                normal_cab.index_select(0, triplets.output), normal_abd.index_select(0, triplets.input),
                polar_cosines.index_select(0, triplets.output),
            )
            return self.harmonics(directions)
        dihedral_cosines = (
            unit_or_zero(normal_cab).index_select(0, triplets.output) * unit_or_zero(normal_abd).index_select(0, triplets.input)
        ).sum(-1)
        if self.circular_basis is None:
            polar, dihedral = zonal_harmonics(polar_cosines, self.num_spherical), zonal_harmonics(dihedral_cosines, self.num_spherical)
        else:
            polar, dihedral = self.circular_basis(polar_cosines), self.circular_basis(dihedral_cosines)
        return FactoredAngular(polar, dihedral, triplets.output, triplets.output_edge)

    def forward(
        self, lengths: torch.Tensor, normal_cab: torch.Tensor, normal_abd: torch.Tensor, polar_cosines: torch.Tensor,
        triplets: QuadrupletTriplets,
    ) -> tuple[torch.Tensor, torch.Tensor | FactoredAngular]:
        """The radial basis and the angular one (arguments as for ``angular``); a scaled basis is written out
        (its scale factor is fitted to the product's variance)."""
        values = self.angular(normal_cab, normal_abd, polar_cosines, triplets)
        if self.scale_sbf is None:
            return self.radial_basis(lengths), values
        if isinstance(values, FactoredAngular):
            values = values.written_out()
        return self.radial_basis(lengths), self.scale_sbf(values)


def cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a x b by components (torch.linalg.cross would pin the traced vector width to 3 with a guard)."""
    ax, ay, az = a[..., 0], a[..., 1], a[..., 2]
    bx, by, bz = b[..., 0], b[..., 1], b[..., 2]
    return torch.stack([ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx], dim=-1)


def unit_or_zero(vectors: torch.Tensor) -> torch.Tensor:
    """v / |v|, or zero where |v| is below COLLINEAR_TOLERANCE (the normal of three collinear atoms)."""
    lengths = safe_norm(vectors)
    defined = lengths >= COLLINEAR_TOLERANCE
    return torch.where(defined.unsqueeze(-1), vectors / torch.where(defined, lengths, 1.0).unsqueeze(-1), 0.0)


def quadruplet_directions(normal_cab: torch.Tensor, normal_abd: torch.Tensor, polar_cosines: torch.Tensor) -> torch.Tensor:
    """(sin p cos d, sin p sin d, cos p) of each quadruplet's polar angle p (c-a-b) and unsigned dihedral d.

    With unit edge vectors |normal_cab| = sin p, so the first component is
    normal_cab's projection on normal_abd's direction (smooth through p = 0)
    and the second the length of the rest (fairchem's unsigned dihedral: a
    kink at planar quadruplets). An undefined dihedral (d, b, a collinear)
    counts as pi/2, as in fairchem. Values below COLLINEAR_TOLERANCE count as
    exactly zero, so that rounding noise in an exactly collinear or planar
    geometry decides neither values nor derivatives.
    """
    length_abd = safe_norm(normal_abd)
    defined = length_abd >= COLLINEAR_TOLERANCE
    divisor = torch.where(defined, length_abd, 1.0)
    along = torch.where(defined, (normal_cab * normal_abd).sum(-1) / divisor, 0.0)
    rejection = safe_norm(cross(normal_cab, normal_abd))
    across_defined = torch.where(rejection >= COLLINEAR_TOLERANCE, rejection, 0.0) / divisor
    length_cab = safe_norm(normal_cab)
    across = torch.where(defined, across_defined, torch.where(length_cab >= COLLINEAR_TOLERANCE, length_cab, 0.0))
    return torch.stack([along, across, polar_cosines], dim=-1)


def safe_norm(vectors: torch.Tensor) -> torch.Tensor:
    """|v| along the last axis, with a zero (not NaN) derivative at v = 0."""
    squared = (vectors * vectors).sum(-1)
    positive = squared > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, squared, 1.0)), 0.0)
