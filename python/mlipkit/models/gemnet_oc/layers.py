"""GemNet-OC's building blocks.

Module and attribute names follow fairchem-core's GemNet-OC, so that its
state dicts and scale-factor files (name -> value) map onto these modules
name for name. fairchem pads neighbour lists into dense [rows, Kmax, ...]
matrices; here every sum over triplets, quadruplets or edges is a segment sum
over receiver-sorted indices, which needs no data-dependent Kmax and so
exports with dynamic shapes.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import nn

from mlipkit import ops
from mlipkit.models.gemnet_oc.indices import inner_index
from mlipkit.nn.activations import scaled_activation
from mlipkit.nn.scatter import sum_into_segments
from mlipkit.ops import segment_outer_sum

INV_SQRT_2 = 1.0 / math.sqrt(2.0)
#: SiLU divided by 0.6 keeps roughly unit second moment on unit-Gaussian inputs (GemNet's ScaledSiLU)
SCALED_SILU_FACTOR = 1.0 / 0.6


def he_orthogonal_(weight: torch.Tensor) -> torch.Tensor:
    """A random (semi-)orthogonal matrix standardised to zero mean and variance 1/fan_in per output.

    GemNet's initialisation: decorrelated features with He variance. A 3-d
    weight [R, S, K] counts its first two axes as fan-in.
    """
    with torch.no_grad():
        nn.init.orthogonal_(weight)
        axes = [0, 1] if weight.dim() == 3 else [1]
        fan_in = weight.shape[:-1].numel() if weight.dim() == 3 else weight.shape[1]
        variance, mean = torch.var_mean(weight, dim=axes, unbiased=True, keepdim=True)
        weight.copy_((weight - mean) / (variance + 1e-6).sqrt() / math.sqrt(fan_in))
    return weight


class ScaleFactor(nn.Module):
    """Multiplies by a constant fitted on training data (``models.gemnet_oc.scale_factors``).

    Fitting sets it to sqrt(var(reference) / var(output)) so that each sum or
    product keeps the variance of its input; 1 until fitted.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("scale_factor", torch.tensor(1.0))
        #: while fitting: [sum of var(reference) * rows, sum of var(output) * rows, rows]
        self.statistics: list[float] | None = None

    def reference_rows(self, features: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
        """``features[index]`` while fitting, the rows whose variance the output's is fitted to; None otherwise,
        when gathering them would only cost memory."""
        return features.index_select(0, index) if self.statistics is not None else None

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        x = x * self.scale_factor
        if self.statistics is not None and x.shape[0] > 1:
            rows = x.shape[0]
            self.statistics[0] += (float(ref.var(dim=0).mean()) if ref is not None else 1.0) * rows
            self.statistics[1] += float(x.var(dim=0).mean()) * rows
            self.statistics[2] += rows
        return x


class Dense(nn.Module):
    """Linear layer, optionally followed by SiLU / 0.6.

    ``scale`` multiplies the output inside the activation's own pass: the constant factors of GemNet's sums
    (1/sqrt(2), 1/sqrt(number of terms)) cost no pass of their own over the [edges, 512] features.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = False, activation: str | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        he_orthogonal_(self.linear.weight)
        if bias:
            nn.init.zeros_(self.linear.bias)
        self.activation = activation

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return self.activate(self.linear(x), scale)

    def activate(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        """The layer's activation (and ``scale``) on a product with its weight computed elsewhere."""
        if self.activation is not None:
            return scaled_activation(x, self.activation, SCALED_SILU_FACTOR * scale)
        return x * scale if scale != 1.0 else x


class ResidualLayer(nn.Module):
    """x + MLP(x), divided by sqrt(2) (and multiplied by ``scale``)."""

    def __init__(self, units: int, num_layers: int = 2, activation: str | None = None):
        super().__init__()
        self.dense_mlp = nn.Sequential(*[Dense(units, units, activation=activation) for _ in range(num_layers)])

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return torch.add(run(self.dense_mlp, x, scale * INV_SQRT_2), x, alpha=scale * INV_SQRT_2)


def residual_stack(units_in: int, units: int, num_residual: int, activation: str | None) -> nn.ModuleList:
    """A projection to ``units`` (when the width changes) followed by residual layers."""
    layers = [Dense(units_in, units, activation=activation)] if units_in != units else []
    return nn.ModuleList(layers + [ResidualLayer(units, activation=activation) for _ in range(num_residual)])


def run(layers: nn.ModuleList | nn.Sequential, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The layers one after another, the last one's output multiplied by ``scale`` (in its own pass)."""
    if len(layers) == 0:
        return x * scale if scale != 1.0 else x
    *first, last = layers
    for layer in first:
        x = layer(x)
    return last(x, scale)


class AtomEmbedding(nn.Module):
    def __init__(self, emb_size: int, num_rows: int):
        super().__init__()
        self.emb_size = emb_size
        self.embeddings = nn.Embedding(num_rows, emb_size)
        nn.init.uniform_(self.embeddings.weight, -math.sqrt(3.0), math.sqrt(3.0))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.embeddings(rows)


class EdgeEmbedding(nn.Module):
    """Edge features from the sender's and receiver's atom features and the edge's own.

    The dense layer of [h_sender, h_receiver, m] is evaluated as W_s h_sender + W_r h_receiver + W_m m, the
    atoms' products on the atoms and then gathered: the same sum, with the atom features' share of the
    matrix product done once per atom instead of once per edge (OC20's GemNet-OC: half of each block's
    [edges, 1024] x [1024, 512] product, in the forward pass and again in the backward; slab66, gradient
    forces, eager: 1.035 -> 1.002 s a call).
    """

    def __init__(self, atom_features: int, edge_features: int, out_features: int, activation: str | None):
        super().__init__()
        self.dense = Dense(2 * atom_features + edge_features, out_features, activation=activation)
        self.atom_features = atom_features

    def forward(self, h: torch.Tensor, m: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        weight, a = self.dense.linear.weight, self.atom_features  # the layer has no bias
        pre = m @ weight[:, 2 * a :].T + (h @ weight[:, :a].T).index_select(0, senders)
        pre = pre + (h @ weight[:, a : 2 * a].T).index_select(0, receivers)
        return self.dense.activate(pre)


class FactoredAngular(NamedTuple):
    """An angular basis that is an outer product, ``angular[t, p R + r] = first[group[t], p] * second[t, r]``
    (GemNet-OC's "legendre_outer" and "gaussian_outer" quadruplet bases), kept as its two factors.

    The first factor (of the polar angle c-a-b) is the same for every quadruplet of one output triplet, so it
    is stored once per triplet (``group``: each row's triplet, sorted; ``group_out``: each triplet's output,
    sorted). The sum over a target's rows then runs in two stages (see ``grouped_outer_sum``), and the
    [rows, P R] basis and its derivative never exist.
    """

    first: torch.Tensor  # [groups, P]
    second: torch.Tensor  # [rows, R]
    group: torch.Tensor  # [rows]
    group_out: torch.Tensor  # [groups]

    def written_out(self) -> torch.Tensor:
        return (self.first.index_select(0, self.group).unsqueeze(-1) * self.second.unsqueeze(-2)).flatten(-2)


def grouped_outer_sum(angular: FactoredAngular, features: torch.Tensor, source: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """[outputs, P R, C]: sum over rows t of angular[t] x features[source[t]], as

    per_group[g, r, c] = sum over the rows of group g of second[t, r] features[source[t], c], then
    out[o, p, (r, c)] = sum over the groups of output o of first[g, p] per_group[g, (r, c)]:
    R C multiply-adds a row instead of P R C (7x fewer for OC20's 7 x 7 basis), the rest once per group.
    """
    num_groups, num_first = angular.first.shape
    per_group = segment_outer_sum(angular.second, features, source, angular.group, num_groups)
    groups = torch.arange(num_groups, device=features.device)
    summed = segment_outer_sum(angular.first, per_group.reshape(num_groups, -1), groups, angular.group_out, num_outputs)
    return summed.reshape(num_outputs, num_first * angular.second.shape[1], features.shape[1])


class AngularBasis(NamedTuple):
    """A triplet or quadruplet basis in GemNet's factorised form.

    The basis of triplet t is sum_s radial_weights[out[t], :, s] angular[t, s]:
    radial weights per output edge (or atom) times the angular basis per triplet.
    """

    radial_weights: torch.Tensor  # [outputs, emb_size_interm, num_angular]
    angular: torch.Tensor | FactoredAngular  # [triplets, num_angular]
    out: torch.Tensor  # [triplets], sorted


class BasisEmbedding(nn.Module):
    """Projection of a radial basis (times an angular basis, when there is one) to an embedding."""

    def __init__(self, num_radial: int, emb_size_interm: int, num_spherical: int | None = None):
        super().__init__()
        shape = (emb_size_interm, num_radial) if num_spherical is None else (num_radial, num_spherical, emb_size_interm)
        self.weight = nn.Parameter(he_orthogonal_(torch.empty(shape)))
        self.num_spherical = num_spherical

    def forward(self, radial: torch.Tensor) -> torch.Tensor:
        """[edges, emb_size_interm] without an angular basis, else [edges, emb_size_interm, num_spherical]."""
        if self.num_spherical is None:
            return radial @ self.weight.T
        # fairchem's layout: the [num_spherical * emb_size_interm] product is read back as [emb_size_interm, num_spherical]
        num_radial, num_spherical, emb_size_interm = self.weight.shape
        return (radial @ self.weight.reshape(num_radial, -1)).reshape(radial.shape[0], emb_size_interm, num_spherical)

    def angular_basis(self, radial: torch.Tensor, angular: torch.Tensor | FactoredAngular, out: torch.Tensor) -> AngularBasis:
        return AngularBasis(self(radial), angular, out)

    def per_triplet(self, radial: torch.Tensor, angular: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """[triplets, emb_size_interm]: the basis contracted per triplet (the quadruplets' input triplets)."""
        return (self(radial).index_select(0, out) @ angular.unsqueeze(-1)).squeeze(-1)


#: how EfficientInteractionBilinear sums over triplets: ``segment`` the C++ op (CPU), ``padded`` batched matrix
#: products over zero-padded rows (the reference, and what runs on other devices)
ContractionKernel = Literal["segment", "padded"]


class EfficientInteractionBilinear(nn.Module):
    """sum over triplets of (basis x features), then a bilinear map: GemNet's efficient triplet contraction."""

    def __init__(self, emb_size_in: int, emb_size_interm: int, emb_size_out: int):
        super().__init__()
        self.bilinear = Dense(emb_size_in * emb_size_interm, emb_size_out)
        self.kernel: ContractionKernel = "segment"

    def forward(
        self, basis: AngularBasis, features: torch.Tensor, source: torch.Tensor,
        second_level: tuple[torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Triplet t carries ``features[source[t]]`` (``features`` [rows, emb_size_in]) -> [outputs, emb_size_out];
        ``second_level`` (sorted groups of the outputs, number of groups) sums the outputs once more, e.g. edges
        into atoms."""
        radial_weights, angular, out = basis
        num_outputs = radial_weights.shape[0]
        if self.kernel == "segment" and ops.has_kernels(features.device):
            if isinstance(angular, FactoredAngular):
                angular_features = grouped_outer_sum(angular, features, source, num_outputs)
            else:
                angular_features = segment_outer_sum(angular, features, source, out, num_outputs)
        else:
            if isinstance(angular, FactoredAngular):
                angular = angular.written_out()
            angular_features = padded_outer_sum(angular, features.index_select(0, source), out, num_outputs)
        contracted = radial_weights @ angular_features  # [outputs, emb_size_interm, emb_size_in]
        width = contracted.shape[1] * features.shape[1]
        contracted = contracted.reshape(num_outputs, width)
        if second_level is not None:
            groups, num_groups = second_level
            contracted = sum_into_segments(contracted, groups, num_groups)
        return self.bilinear(contracted)


def padded_outer_sum(angular: torch.Tensor, m: torch.Tensor, out: torch.Tensor, num_outputs: int) -> torch.Tensor:
    """[outputs, num_angular, emb_size_in]: each output's triplets as rows of a zero-padded matrix, so that the sum
    over triplets of (angular basis x features) is one batched matrix product.

    The largest count is data-dependent (one row more than needed: a width known to exceed 1 keeps Inductor's bmm
    lowering from guarding on it).
    """
    inner = inner_index(out, num_outputs)
    largest_inner = torch.cat([inner, inner.new_zeros(1)]).max().item()
    torch._check(largest_inner >= 0)
    most = largest_inner + 2
    padded_angular = angular.new_zeros(num_outputs, most, angular.shape[1]).index_put((out, inner), angular)
    padded_m = m.new_zeros(num_outputs, most, m.shape[1]).index_put((out, inner), m)
    return padded_angular.transpose(1, 2) @ padded_m


class AtomUpdateBlock(nn.Module):
    """Atom features from the sum of incoming edge features weighted by a radial basis."""

    def __init__(self, emb_size_atom: int, emb_size_edge: int, emb_size_rbf: int, num_hidden: int, activation: str | None):
        super().__init__()
        self.dense_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_sum = ScaleFactor()
        self.layers = residual_stack(emb_size_edge, emb_size_atom, num_hidden, activation)

    def aggregate(self, m: torch.Tensor, basis_rad: torch.Tensor, receivers: torch.Tensor, num_atoms: int) -> torch.Tensor:
        summed = sum_into_segments(m * self.dense_rbf(basis_rad), receivers, num_atoms)
        return self.scale_sum(summed, ref=m)

    def forward(self, m: torch.Tensor, basis_rad: torch.Tensor, receivers: torch.Tensor, num_atoms: int) -> torch.Tensor:
        return run(self.layers, self.aggregate(m, basis_rad, receivers, num_atoms))


class OutputBlock(AtomUpdateBlock):
    """Per-block outputs: atom features for the energy and, with direct forces, edge features for the forces."""

    def __init__(
        self, emb_size_atom: int, emb_size_edge: int, emb_size_rbf: int, num_hidden: int, num_hidden_afteratom: int,
        activation: str | None, direct_forces: bool,
    ):
        super().__init__(emb_size_atom, emb_size_edge, emb_size_rbf, num_hidden, activation)
        self.seq_energy2 = (
            residual_stack(emb_size_atom, emb_size_atom, num_hidden_afteratom, activation) if num_hidden_afteratom >= 1 else None
        )
        self.direct_forces = direct_forces
        if direct_forces:
            self.scale_rbf_F = ScaleFactor()
            self.seq_forces = residual_stack(emb_size_edge, emb_size_edge, num_hidden, activation)
            self.dense_rbf_F = Dense(emb_size_rbf, emb_size_edge)

    def forward(
        self, h: torch.Tensor, m: torch.Tensor, basis_rad: torch.Tensor, receivers: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x_energy = run(self.layers, self.aggregate(m, basis_rad, receivers, h.shape[0]))
        if self.seq_energy2 is not None:
            x_energy = run(self.seq_energy2, (x_energy + h) * INV_SQRT_2)
        if not self.direct_forces:
            return x_energy, None
        x_forces = run(self.seq_forces, m)
        return x_energy, self.scale_rbf_F(x_forces * self.dense_rbf_F(basis_rad), ref=x_forces)


def symmetric_output(up_ca: Dense, up_ac: Dense, x: torch.Tensor, reverse: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """A message for edge c->a and, through the reverse edge, one for a->c (symmetric message passing)."""
    return up_ca(x, scale * INV_SQRT_2) + up_ac(x, scale * INV_SQRT_2).index_select(0, reverse)


class TripletInteraction(nn.Module):
    """Messages along triplets b->a<-c, from edges (or atoms) to edges (or atoms)."""

    def __init__(
        self, emb_size_in: int, emb_size_out: int, emb_size_trip_in: int, emb_size_trip_out: int, emb_size_rbf: int,
        emb_size_cbf: int, symmetric_mp: bool, activation: str | None,
    ):
        super().__init__()
        self.dense_ba = Dense(emb_size_in, emb_size_in, activation=activation)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_in)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = EfficientInteractionBilinear(emb_size_trip_in, emb_size_cbf, emb_size_trip_out)
        self.scale_cbf_sum = ScaleFactor()
        self.down_projection = Dense(emb_size_in, emb_size_trip_in, activation=activation)
        self.up_projection_ca = Dense(emb_size_trip_out, emb_size_out, activation=activation)
        self.up_projection_ac = Dense(emb_size_trip_out, emb_size_out, activation=activation) if symmetric_mp else None

    def forward(
        self,
        m: torch.Tensor,
        basis_rad: torch.Tensor,
        basis: AngularBasis,
        triplet_in: torch.Tensor,
        reverse: torch.Tensor | None,
        expand_index: torch.Tensor | None = None,
        second_level: tuple[torch.Tensor, int] | None = None,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """The messages, multiplied by ``scale``."""
        x_ba = self.dense_ba(m)
        if expand_index is not None:
            x_ba = x_ba.index_select(0, expand_index)
        x_ba = self.scale_rbf(x_ba * self.mlp_rbf(basis_rad), ref=x_ba)
        x_ba = self.down_projection(x_ba)
        x = self.mlp_cbf(basis, x_ba, triplet_in, second_level)
        x = self.scale_cbf_sum(x, ref=self.scale_cbf_sum.reference_rows(x_ba, triplet_in))
        if self.up_projection_ac is None:
            return self.up_projection_ca(x, scale)
        return symmetric_output(self.up_projection_ca, self.up_projection_ac, x, reverse, scale)


class QuadrupletInteraction(nn.Module):
    """Messages along quadruplets d->b->a<-c into edge c->a (and its reverse)."""

    def __init__(
        self, emb_size_edge: int, emb_size_quad_in: int, emb_size_quad_out: int, emb_size_rbf: int, emb_size_cbf: int,
        emb_size_sbf: int, activation: str | None,
    ):
        super().__init__()
        self.dense_db = Dense(emb_size_edge, emb_size_edge, activation=activation)
        self.mlp_rbf = Dense(emb_size_rbf, emb_size_edge)
        self.scale_rbf = ScaleFactor()
        self.mlp_cbf = Dense(emb_size_cbf, emb_size_quad_in)
        self.scale_cbf = ScaleFactor()
        self.mlp_sbf = EfficientInteractionBilinear(emb_size_quad_in, emb_size_sbf, emb_size_quad_out)
        self.scale_sbf_sum = ScaleFactor()
        self.down_projection = Dense(emb_size_edge, emb_size_quad_in, activation=activation)
        self.up_projection_ca = Dense(emb_size_quad_out, emb_size_edge, activation=activation)
        self.up_projection_ac = Dense(emb_size_quad_out, emb_size_edge, activation=activation)

    def forward(
        self,
        m: torch.Tensor,
        basis_rad: torch.Tensor,
        triplet_basis: torch.Tensor,
        quadruplet_basis: AngularBasis,
        triplet_in: torch.Tensor,
        triplet_to_quadruplet: torch.Tensor,
        reverse: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """The messages, multiplied by ``scale``."""
        x_db = self.dense_db(m)
        x_db = self.scale_rbf(x_db * self.mlp_rbf(basis_rad), ref=x_db)
        x_db = self.down_projection(x_db).index_select(0, triplet_in)
        x_db = self.scale_cbf(x_db * self.mlp_cbf(triplet_basis), ref=x_db)
        x = self.mlp_sbf(quadruplet_basis, x_db, triplet_to_quadruplet)
        x = self.scale_sbf_sum(x, ref=self.scale_sbf_sum.reference_rows(x_db, triplet_to_quadruplet))
        return symmetric_output(self.up_projection_ca, self.up_projection_ac, x, reverse, scale)


class PairInteraction(nn.Module):
    """Messages from atoms to atoms within the atom-interaction cutoff, through a bilinear radial map."""

    def __init__(self, emb_size_atom: int, emb_size_pair_in: int, emb_size_pair_out: int, emb_size_rbf: int, activation: str | None):
        super().__init__()
        self.bilinear = Dense(emb_size_rbf * emb_size_pair_in, emb_size_pair_out)
        self.scale_rbf_sum = ScaleFactor()
        self.down_projection = Dense(emb_size_atom, emb_size_pair_in, activation=activation)
        self.up_projection = Dense(emb_size_pair_out, emb_size_atom, activation=activation)

    def forward(self, h: torch.Tensor, radial_weights: torch.Tensor, senders: torch.Tensor, receivers: torch.Tensor) -> torch.Tensor:
        x_ba = self.down_projection(h).index_select(0, senders)
        outer = (radial_weights.unsqueeze(-1) * x_ba.unsqueeze(1)).reshape(x_ba.shape[0], radial_weights.shape[1] * x_ba.shape[1])
        h_out = self.bilinear(sum_into_segments(outer, receivers, h.shape[0]))
        return self.up_projection(self.scale_rbf_sum(h_out, ref=x_ba))
