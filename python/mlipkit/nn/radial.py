"""Radial bases and smooth cutoff envelopes of edge lengths."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

EnvelopeName = Literal["polynomial", "soft"]


class BesselBasis(nn.Module):
    """sqrt(2/r_max) sin(w_n r / r_max) / r with w_n = n pi (optionally trainable); GemNet-OC's "spherical_bessel"."""

    def __init__(self, r_max: float, num_basis: int, trainable: bool = True):
        super().__init__()
        self.r_max = float(r_max)
        self.prefactor = math.sqrt(2.0 / self.r_max)
        frequencies = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi
        if trainable:
            self.frequencies = nn.Parameter(frequencies)
        else:
            self.register_buffer("frequencies", frequencies)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        lengths = lengths.unsqueeze(-1)
        return self.prefactor * torch.sin(self.frequencies * lengths / self.r_max) / lengths


class GaussianBasis(nn.Module):
    """exp(-(x - mu_k)^2 / (2 delta^2)), mu_k evenly spaced from start to stop, delta their spacing.

    GemNet-OC's default radial basis (start 0, stop r_max, on edge lengths)
    and its Gaussian basis of triplet angle cosines (start -1, stop 1).
    """

    def __init__(self, start: float, stop: float, num_basis: int, trainable: bool = False):
        super().__init__()
        centres = torch.linspace(start, stop, num_basis, dtype=torch.get_default_dtype())
        if trainable:
            self.centres = nn.Parameter(centres)
        else:
            self.register_buffer("centres", centres)
        self.coefficient = -0.5 / ((stop - start) / (num_basis - 1)) ** 2

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        return torch.exp(self.coefficient * (values.unsqueeze(-1) - self.centres) ** 2)


class BernsteinBasis(nn.Module):
    """binom(n-1, k) e^(-g k u) (1 - e^(-g u))^(n-1-k), u = r/r_max, g = softplus(trainable pregamma).

    SpookyNet's basis (Unke et al. 2021), one of GemNet-OC's radial bases; the
    default pregamma 0.45264 gives g = 0.94486, half an inverse Bohr radius.
    """

    def __init__(self, r_max: float, num_basis: int, pregamma: float = 0.45264):
        super().__init__()
        self.r_max = float(r_max)
        orders = torch.arange(num_basis, dtype=torch.get_default_dtype())
        binomials = torch.tensor([math.comb(num_basis - 1, k) for k in range(num_basis)], dtype=torch.get_default_dtype())
        self.register_buffer("binomials", binomials, persistent=False)
        self.register_buffer("orders", orders, persistent=False)
        self.pregamma = nn.Parameter(torch.tensor(pregamma, dtype=torch.get_default_dtype()))

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        decay = torch.exp(-nn.functional.softplus(self.pregamma) * lengths / self.r_max).unsqueeze(-1)
        return self.binomials * decay**self.orders * (1.0 - decay) ** (self.orders.flip(0))


class PolynomialCutoff(nn.Module):
    """Envelope with p continuous derivatives at r_max (Klicpera et al., DimeNet; GemNet-OC's "polynomial")."""

    def __init__(self, r_max: float, p: int = 6):
        super().__init__()
        self.r_max = float(r_max)
        self.p = float(p)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        p = self.p
        u = lengths / self.r_max
        envelope = (
            1.0
            - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(u, p)
            + p * (p + 2.0) * torch.pow(u, p + 1.0)
            - p * (p + 1.0) / 2.0 * torch.pow(u, p + 2.0)
        )
        return envelope * (u < 1.0)


class SoftEnvelope(nn.Module):
    """exp(1 - 1/(1 - u^2)), u = r/r_max: equal to 1 at r=0, every derivative vanishes at r_max.

    The same function as SpookyNet's and GemNet-OC's "exponential" envelope, exp(-u^2 / ((1 - u)(1 + u))).
    """

    def __init__(self, r_max: float):
        super().__init__()
        self.r_max = float(r_max)

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        u = lengths / self.r_max
        inside = u < 1.0
        # the where() on the denominator keeps gradients finite outside the cutoff
        denominator = torch.where(inside, 1.0 - u * u, torch.ones_like(u))
        return torch.where(inside, torch.exp(1.0 - 1.0 / denominator), torch.zeros_like(u))


class RadialEmbedding(nn.Module):
    """Bessel basis times a cutoff envelope.

    With ``avg_r_min`` the embedding is rescaled to unit second moment over
    [avg_r_min, r_max], the range where real neighbours lie.
    """

    def __init__(
        self,
        r_max: float,
        num_basis: int,
        trainable: bool,
        envelope: EnvelopeName = "polynomial",
        polynomial_p: int = 6,
        avg_r_min: float | None = None,
    ):
        super().__init__()
        self.basis = BesselBasis(r_max, num_basis, trainable)
        self.envelope = PolynomialCutoff(r_max, polynomial_p) if envelope == "polynomial" else SoftEnvelope(r_max)
        self.num_basis = num_basis
        factor = 1.0
        if avg_r_min is not None:
            if not 0.0 < avg_r_min < r_max:
                raise ValueError(f"avg_r_min must lie in (0, r_max={r_max}), got {avg_r_min}")
            with torch.no_grad():
                samples = torch.linspace(avg_r_min, r_max, 1000)
                values = self.basis(samples) * self.envelope(samples).unsqueeze(-1)
                factor = float(values.pow(2).mean().rsqrt())
        self.normalization = factor

    def forward(self, lengths: torch.Tensor) -> torch.Tensor:
        return self.normalization * self.basis(lengths) * self.envelope(lengths).unsqueeze(-1)
