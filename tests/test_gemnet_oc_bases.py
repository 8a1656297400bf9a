"""GemNet-OC's radial and circular bases against fairchem-core 1.10.0's values.

tests/data/fairchem_gemnet_oc_bases.json is written by
``tools/fairchem_reference.py --bases-fixture`` in the reference environment.
fairchem keeps its frequencies, centres and pregamma in float32 even in a
float64 model, so the same float32-rounded values are loaded here; the
comparison is then to float64 rounding.
"""

import json
from pathlib import Path

import pytest
import torch

from mlipkit.models.gemnet_oc.bases import zonal_harmonics
from mlipkit.nn.radial import BernsteinBasis, BesselBasis, GaussianBasis, PolynomialCutoff, SoftEnvelope

FIXTURE = json.loads((Path(__file__).parent / "data" / "fairchem_gemnet_oc_bases.json").read_text())


def float32_rounded(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float().double()


def radial_basis(name: str, num: int, cutoff: float) -> torch.nn.Module:
    with torch.no_grad():
        if name == "gaussian":
            basis = GaussianBasis(0.0, 1.0, num).double()
            basis.centres.copy_(float32_rounded(basis.centres))
            return lambda lengths: basis(lengths / cutoff)
        if name == "spherical_bessel":
            basis = BesselBasis(cutoff, num).double()
            basis.frequencies.copy_(float32_rounded(basis.frequencies))
            return basis
        basis = BernsteinBasis(cutoff, num).double()
        basis.pregamma.copy_(float32_rounded(basis.pregamma))
        return basis


@pytest.mark.parametrize("key", sorted(FIXTURE["radial"]))
def test_radial_bases_equal_fairchems(key):
    name, envelope_name = key.split("/")
    num, cutoff = FIXTURE["num_radial"], FIXTURE["cutoff"]
    lengths = torch.tensor(FIXTURE["distances"], dtype=torch.float64)
    envelope = PolynomialCutoff(cutoff, 5) if envelope_name == "polynomial" else SoftEnvelope(cutoff)
    produced = envelope(lengths).unsqueeze(-1) * radial_basis(name, num, cutoff)(lengths)
    expected = torch.tensor(FIXTURE["radial"][key], dtype=torch.float64)
    assert produced.shape == expected.shape
    assert torch.allclose(produced, expected, rtol=1e-12, atol=1e-14), (produced - expected).abs().max()
    assert float(expected[-1].abs().max()) == 0.0  # beyond the cutoff


def test_circular_gaussian_basis_equals_fairchems():
    basis = GaussianBasis(-1.0, 1.0, 5).double()
    with torch.no_grad():
        basis.centres.copy_(float32_rounded(basis.centres))
    produced = basis(torch.tensor(FIXTURE["cosines"], dtype=torch.float64))
    assert torch.allclose(produced, torch.tensor(FIXTURE["circular_gaussian"], dtype=torch.float64), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("num_degrees", [1, 2, 5])
def test_zonal_harmonics_equal_fairchems_circular_spherical_harmonics(num_degrees):
    produced = zonal_harmonics(torch.tensor(FIXTURE["cosines"], dtype=torch.float64), num_degrees)
    expected = torch.tensor(FIXTURE["circular_spherical_harmonics"], dtype=torch.float64)[:, :num_degrees]
    assert torch.allclose(produced, expected, rtol=1e-12, atol=1e-14)


def test_quadruplet_harmonics_equal_fairchems_and_stay_smooth_at_the_poles():
    from mlipkit.models.gemnet_oc.bases import QuadrupletHarmonics

    cosines = torch.tensor(FIXTURE["cosines"], dtype=torch.float64)
    azimuths = torch.tensor(FIXTURE["angles"], dtype=torch.float64)
    sines = torch.sqrt(1.0 - cosines**2)
    directions = torch.stack([sines * torch.cos(azimuths), sines * torch.sin(azimuths), cosines], dim=-1)
    harmonics = QuadrupletHarmonics(3).double()
    expected = torch.tensor(FIXTURE["spherical_harmonics"], dtype=torch.float64)
    assert torch.allclose(harmonics(directions), expected, rtol=1e-12, atol=1e-13)
    # collinear quadruplets: directions at the poles, where fairchem's derivatives are infinite
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64, requires_grad=True)
    (gradient,) = torch.autograd.grad(QuadrupletHarmonics(7).double()(poles).pow(2).sum(), poles)
    assert bool(torch.isfinite(gradient).all())


@pytest.mark.parametrize("name", ["legendre_outer", "gaussian_outer"])
def test_outer_product_quadruplet_bases_equal_fairchems(name):
    """The two factors the model keeps (FactoredAngular), written out, equal fairchem's basis."""
    from mlipkit.models.gemnet_oc.layers import FactoredAngular

    cosines = torch.tensor(FIXTURE["cosines"], dtype=torch.float64)
    dihedral_cosines = torch.cos(torch.tensor(FIXTURE["angles"], dtype=torch.float64))
    circular = (lambda values: zonal_harmonics(values, 3)) if name == "legendre_outer" else GaussianBasis(-1.0, 1.0, 3).double()
    rows = torch.arange(len(cosines))
    produced = FactoredAngular(circular(cosines), circular(dihedral_cosines), rows, rows).written_out()
    assert torch.allclose(produced, torch.tensor(FIXTURE[name], dtype=torch.float64), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", ["legendre_outer", "gaussian_outer"])
def test_outer_bases_read_the_dihedral_from_unit_normals(name):
    """The outer bases take cos(dihedral) as the cosine between the two planes' unit normals (per triplet, one
    dot product a quadruplet); it equals the one from each quadruplet's direction (sin p cos d, sin p sin d,
    cos p) that the spherical-harmonics basis reads, an undefined dihedral (collinear atoms) counts as pi/2 in
    both, and the derivatives stay finite at planar and collinear quadruplets."""
    from mlipkit.models.gemnet_oc.bases import (
        COLLINEAR_TOLERANCE, QuadrupletTriplets, RadialBasis, SphericalBasis, quadruplet_directions,
    )

    generator = torch.Generator().manual_seed(0)
    normal_cab = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    normal_abd = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    normal_cab[1] = 0.0  # c, a, b collinear
    normal_abd[2] = 0.0  # d, b, a collinear
    normal_abd[3] = -0.4 * normal_cab[3]  # planar, d opposite c
    normal_abd[4] = 0.7 * normal_cab[4]  # planar, d on c's side
    normal_cab.requires_grad_(True)
    normal_abd.requires_grad_(True)
    triplets = QuadrupletTriplets(
        output=torch.tensor([0, 0, 1, 2, 3, 3, 4]), input=torch.tensor([0, 1, 1, 2, 3, 4, 4]), output_edge=torch.arange(5)
    )
    polar_cosines = torch.linspace(-0.9, 0.9, 5, dtype=torch.float64)
    radial = RadialBasis("gaussian", 4, 5.0, "polynomial", 5, False, False, 1.0)
    basis = SphericalBasis(name, 3, radial, scale_basis=False).double()
    dihedral = basis.angular(normal_cab, normal_abd, polar_cosines, triplets).second

    directions = quadruplet_directions(
        normal_cab.index_select(0, triplets.output), normal_abd.index_select(0, triplets.input),
        polar_cosines.index_select(0, triplets.output),
    ).detach()
    sines = directions[:, :2].norm(dim=-1)
    expected_cosines = torch.where(sines >= COLLINEAR_TOLERANCE, directions[:, 0] / sines.clamp_min(COLLINEAR_TOLERANCE), 0.0)
    circular = (lambda values: zonal_harmonics(values, 3)) if name == "legendre_outer" else basis.circular_basis
    assert torch.allclose(dihedral, circular(expected_cosines), rtol=1e-12, atol=1e-14)
    assert expected_cosines[[2, 3]].tolist() == [0.0, 0.0]  # the collinear ones: pi/2
    assert expected_cosines[[4, 6]].tolist() == pytest.approx([-1.0, 1.0], abs=1e-14)  # the planar ones

    gradients = torch.autograd.grad(dihedral.pow(2).sum(), [normal_cab, normal_abd])
    assert all(bool(torch.isfinite(gradient).all()) for gradient in gradients)
