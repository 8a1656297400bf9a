"""MACE's product basis: symmetric contractions of a node's atomic basis with itself.

For every channel c the atomic basis A_c (a vector in V = l_0 + l_1 + ... of
dimension D, one copy of each irrep) is raised to the powers nu = 1..correlation
and coupled to each output irrep L:

    B_c^L = sum_nu sum_k w[type, nu, k, c] U_nu,k^L(A_c, ..., A_c)

U_nu,k^L are equivariant multilinear maps V^nu -> L, the generalised
Clebsch-Gordan coefficients of the MACE paper (Batatia et al. 2022, eq. 10),
computed here by coupling irreps one at a time with e3nn's Wigner 3j symbols.
Two sets are offered:

- ``reduced=False``: every coupling path (((l1 l2)L12 l3)L123 ...)L, as the
  original MACE and mace-torch without cuequivariance build them (at nu = 4
  intermediate irreps are restricted to natural parity and l < 12, as there).
  The paths are linearly dependent once contracted with a symmetric power
  A^nu, so some weights are redundant.
- ``reduced=True``: a basis of the symmetrised span of those paths, i.e. of
  the space of symmetric equivariant maps V^nu -> L. It has the smallest
  number of weights that spans the same functions (as mace-torch's
  ``use_reduced_cg`` with cuequivariance).

Two evaluations: ``kernel="sparse"`` (default) folds each type's weights into
the couplings written as polynomials in the components of A (monomials, most
of whose coefficients vanish: 94 per channel for a scalar output of V =
0e+1o+2e+3o at correlation 3, instead of 4368 dense entries) and evaluates
them with the channelwise polynomial op; ``kernel="dense"`` contracts the dense
coupling tensors with matmuls, the reference.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from e3nn import o3
from torch import nn

from mlipkit import ops
from mlipkit.nn.fused_convolution import component_major_columns

#: A candidate coupling whose part independent of those before it has a
#: squared norm below this fraction of its own is dropped as dependent.
DEPENDENCE_TOLERANCE = 1e-8


def _identity_paths(irreps: Sequence[o3.Irrep]) -> dict[o3.Irrep, torch.Tensor]:
    """nu = 1: each irrep of V is picked out of V by an identity block: {ir: [paths, ir.dim, D]}."""
    dimension = sum(ir.dim for ir in irreps)
    paths: dict[o3.Irrep, list[torch.Tensor]] = {}
    offset = 0
    for ir in irreps:
        block = torch.zeros(1, ir.dim, dimension, dtype=torch.float64)
        block[0, :, offset : offset + ir.dim] = torch.eye(ir.dim, dtype=torch.float64)
        paths.setdefault(ir, []).append(block)
        offset += ir.dim
    return {ir: torch.cat(blocks) for ir, blocks in paths.items()}


def _couple_once(
    left: dict[o3.Irrep, torch.Tensor],
    irreps: Sequence[o3.Irrep],
    keep: Callable[[o3.Irrep], bool],
) -> dict[o3.Irrep, list[torch.Tensor]]:
    """Couple every path [r, d_left, D^(nu-1)] with each irrep of V into each allowed irrep: [r, d_out, D^nu]."""
    dimension = sum(ir.dim for ir in irreps)
    coupled: dict[o3.Irrep, list[torch.Tensor]] = {}
    for ir_left, paths in sorted(left.items()):
        offset = 0
        for ir_in in irreps:
            for ir_out in ir_left * ir_in:
                if not keep(ir_out):
                    continue
                cg = o3.wigner_3j(ir_out.l, ir_left.l, ir_in.l, dtype=torch.float64) * math.sqrt(ir_out.dim)
                block = torch.einsum("rkI,mks->rmIs", paths, cg)
                full = block.new_zeros(*block.shape[:-1], dimension)
                full[..., offset : offset + ir_in.dim] = block
                coupled.setdefault(ir_out, []).append(full.flatten(2))
            offset += ir_in.dim
    return coupled


def _symmetrise(paths: torch.Tensor, order: int, dimension: int) -> torch.Tensor:
    """Average over permutations of the ``order`` input slots of tensors already symmetric in all but the last."""
    shaped = paths.reshape(*paths.shape[:2], *([dimension] * order))
    last = shaped.dim() - 1
    total = shaped.clone()
    for slot in range(2, last):
        total = total + shaped.transpose(slot, last)
    return (total / order).flatten(2)


def _independent_basis(candidates: torch.Tensor, scales: torch.Tensor | None = None) -> torch.Tensor:
    """An orthonormal basis of the span of ``candidates`` [R, ...], built in their order (Gram-Schmidt).

    Working in the order given (not an eigenbasis) makes the result unique, so
    a model rebuilt from its config pairs each stored weight with the same
    coupling on any machine. A candidate counts as new when the part of it
    outside the span so far has a squared norm above DEPENDENCE_TOLERANCE
    times its ``scales`` entry (default: its own squared norm; a symmetrised
    candidate passes the norm it had before symmetrising, so that one which
    symmetrises to rounding noise is dropped).
    """
    flat = candidates.flatten(1)
    gram = flat @ flat.T
    if scales is None:
        scales = gram.diagonal()
    rows: list[torch.Tensor] = []
    projections: list[torch.Tensor] = []  # row @ gram: inner products of a basis vector with every candidate
    for index in range(flat.shape[0]):
        coefficients = torch.zeros(flat.shape[0], dtype=flat.dtype)
        coefficients[index] = 1.0
        for row, projection in zip(rows, projections):
            coefficients = coefficients - (projection @ coefficients) * row
        residual = coefficients @ gram @ coefficients
        if residual > DEPENDENCE_TOLERANCE * scales[index]:
            rows.append(coefficients / residual.sqrt())
            projections.append(rows[-1] @ gram)
    if not rows:
        return candidates.new_zeros(0, *candidates.shape[1:])
    return (torch.stack(rows) @ flat).reshape(len(rows), *candidates.shape[1:])


def coupling_basis(irreps_in: o3.Irreps, ir_out: o3.Irrep, correlation: int, reduced: bool = True) -> torch.Tensor:
    """U_nu for nu = ``correlation``: [K, ir_out.dim, D^correlation], float64.

    ``irreps_in`` lists the irreps of V (multiplicities are ignored: one copy
    of each, as the contraction acts channel by channel).
    """
    irreps = [ir for _, ir in o3.Irreps(irreps_in)]
    dimension = sum(ir.dim for ir in irreps)
    max_l_in = max(ir.l for ir in irreps)
    natural_parity_only = correlation == 4 and not reduced
    paths = _identity_paths(irreps)
    for order in range(2, correlation + 1):
        remaining = correlation - order

        def keep(ir: o3.Irrep) -> bool:
            if remaining == 0 and ir != ir_out:
                return False
            if natural_parity_only and not (ir.l < 12 and ir.p == (-1) ** ir.l):
                return False
            return ir.l <= ir_out.l + remaining * max_l_in

        coupled = _couple_once(paths, irreps, keep)
        if reduced:
            paths = {}
            for ir, blocks in coupled.items():
                candidates = torch.cat(blocks)
                norms = candidates.flatten(1).pow(2).sum(1)
                paths[ir] = _independent_basis(_symmetrise(candidates, order, dimension), norms)
        else:
            paths = {ir: torch.cat(blocks) for ir, blocks in coupled.items()}
    basis = paths.get(ir_out, torch.zeros(0, ir_out.dim, dimension**correlation, dtype=torch.float64))
    if reduced:
        # the scale of one Clebsch-Gordan coupling (component normalisation)
        basis = basis * math.sqrt(ir_out.dim)
    return basis


#: A monomial coefficient at most this fraction of the largest one is rounding noise of an exact zero.
MONOMIAL_TOLERANCE = 1e-9

KERNELS = ("sparse", "dense")


def monomial_couplings(basis: torch.Tensor, order: int, dimension: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``basis`` [K, d, D^order] as polynomials in A: (values [K, d, M], monomials [M, order]).

    U(A, ..., A) = sum over monomials m of values[..., m] * prod_s A[monomials[m, s]]:
    each monomial (a sorted tuple of components) collects the entries of every
    ordering of its components.
    """
    slots = torch.cartesian_prod(*[torch.arange(dimension)] * order).view(-1, order)
    monomials, which = torch.unique(slots.sort(dim=1).values, dim=0, return_inverse=True)
    values = basis.new_zeros(*basis.shape[:2], monomials.shape[0]).index_add_(2, which, basis)
    return values, monomials


class SymmetricContraction(nn.Module):
    """B = sum_nu w_nu(type) U_nu(A^nu) per channel, evaluated Horner-like from the highest power down.

    Input: node_feats [N, C x V] in e3nn's layout (C copies of each irrep of
    V), node_attrs [N, E] (one-hot types, optionally with extra features) that
    mix the E sets of weights. Output: [N, C x irreps_out] in e3nn's layout.
    An output irrep that no power of A can couple to (odd scalars from the
    first layer's natural-parity basis, say) is zero, as in mace-torch.
    """

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_out: o3.Irreps,
        correlation: int,
        num_node_attrs: int,
        reduced: bool = True,
        kernel: str = "sparse",
    ):
        super().__init__()
        irreps_in, irreps_out = o3.Irreps(irreps_in), o3.Irreps(irreps_out)
        channels = {mul for mul, _ in irreps_in} | {mul for mul, _ in irreps_out}
        if len(channels) != 1:
            raise ValueError(f"a symmetric contraction needs one multiplicity throughout, got {irreps_in} -> {irreps_out}")
        (self.num_channels,) = channels
        self.dimension = sum(ir.dim for _, ir in irreps_in)
        self.in_dims = [ir.dim for _, ir in irreps_in]
        self.correlation = correlation
        self.irreps_out = irreps_out
        self.out_dims = [ir.dim for _, ir in irreps_out]
        self.num_couplings: list[list[int]] = []
        if kernel not in KERNELS:
            raise ValueError(f"symmetric contraction kernel {kernel!r} is unknown; choose one of {list(KERNELS)}")
        self.kernel = kernel
        #: the sparse kernel's terms (see ops.channelwise_polynomial); output rows are irreps_out's components
        self.terms: list[int] = []
        self.num_monomial_terms = 0
        #: multiplies and adds per node of the sparse forward and of its derivative by the features
        self.flops_per_node = 0
        dtype = torch.get_default_dtype()
        out_row = 0
        for index, (_, ir_out) in enumerate(irreps_out):
            counts = []
            for order in range(1, correlation + 1):
                basis = coupling_basis(irreps_in, ir_out, order, reduced)
                count = basis.shape[0]
                counts.append(count)
                if count == 0:
                    continue
                self._add_monomial_terms(basis, index, order, out_row)
                if order == correlation:
                    # [(last slot, coupling), (out component, remaining slots)]: contracted with A (x) w at once
                    shaped = basis.reshape(count, ir_out.dim, -1, self.dimension).permute(3, 0, 1, 2)
                    shaped = shaped.reshape(self.dimension * count, -1)
                else:
                    shaped = basis.reshape(count, -1)
                self.register_buffer(f"coupling_{index}_{order}", shaped.to(dtype), persistent=False)
                weight = torch.randn(num_node_attrs, count, self.num_channels, dtype=dtype) / count
                self.register_parameter(f"weight_{index}_{order}", nn.Parameter(weight))
            self.num_couplings.append(counts)
            out_row += ir_out.dim
        self.register_buffer("in_columns", component_major_columns(irreps_in), persistent=False)
        self.register_buffer("out_columns", torch.argsort(component_major_columns(irreps_out)), persistent=False)

    def _add_monomial_terms(self, basis: torch.Tensor, index: int, order: int, out_row: int) -> None:
        """The couplings' non-zero monomials: a term each, reading the coefficient row it adds."""
        values, monomials = monomial_couplings(basis, order, self.dimension)
        magnitude = values.abs().amax(dim=0)
        components, kept = torch.nonzero(magnitude > MONOMIAL_TOLERANCE * magnitude.max(), as_tuple=True)
        self.register_buffer(
            f"monomial_coupling_{index}_{order}",
            values[:, components, kept].to(torch.get_default_dtype()),
            persistent=False,
        )
        for component, monomial in zip(components.tolist(), monomials[kept].tolist()):
            unused = [-1] * (4 - order)
            self.terms += [out_row + component, self.num_monomial_terms, 1, order, *monomial, *unused]
            self.num_monomial_terms += 1
            # a term costs order + 1 per channel; its derivative one such term per distinct factor
            self.flops_per_node += self.num_channels * (order + 1) * (1 + len(set(monomial)))

    def forward(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        if self.kernel == "sparse" and ops.has_kernels(node_feats.device):
            return self._sparse(node_feats, node_attrs)
        return self._dense(node_feats, node_attrs)

    def _sparse(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        """Each type's weights folded into the monomial couplings, then one channelwise polynomial."""
        num_nodes, channels = node_feats.shape[0], self.num_channels
        coefficients = [
            torch.einsum(
                "ekc,kj->ejc", getattr(self, f"weight_{index}_{order}"), getattr(self, f"monomial_coupling_{index}_{order}")
            )
            for index, counts in enumerate(self.num_couplings)
            for order in range(1, self.correlation + 1)
            if counts[order - 1]
        ]
        coefficients = (
            torch.cat(coefficients, dim=1) if coefficients else node_feats.new_zeros(node_attrs.shape[1], 0, channels)
        )
        features = node_feats.index_select(1, self.in_columns).view(num_nodes, self.dimension, channels)
        num_outputs = sum(self.out_dims)
        out = ops.channelwise_polynomial(features, node_attrs, coefficients, self.terms, num_outputs)
        return out.view(num_nodes, num_outputs * channels).index_select(1, self.out_columns)

    def _dense(self, node_feats: torch.Tensor, node_attrs: torch.Tensor) -> torch.Tensor:
        num_nodes, channels, dimension = node_feats.shape[0], self.num_channels, self.dimension
        blocks = node_feats.split([channels * d for d in self.in_dims], dim=1)
        rows = torch.cat([block.reshape(num_nodes, channels, d) for block, d in zip(blocks, self.in_dims)], dim=2)
        rows = rows.reshape(num_nodes * channels, dimension)
        outputs = []
        for index, counts in enumerate(self.num_couplings):
            product = None
            for order in range(self.correlation, 0, -1):
                count = counts[order - 1]
                if count:
                    weight = getattr(self, f"weight_{index}_{order}")
                    weight = torch.einsum("ne,ekc->nck", node_attrs, weight).reshape(num_nodes * channels, count)
                    coupling = getattr(self, f"coupling_{index}_{order}")
                    if order == self.correlation:
                        product = (rows.unsqueeze(2) * weight.unsqueeze(1)).reshape(rows.shape[0], -1) @ coupling
                    else:
                        term = weight @ coupling
                        product = term if product is None else product + term
                if product is not None and order < self.correlation:
                    product = (product.reshape(rows.shape[0], -1, dimension) @ rows.unsqueeze(2)).squeeze(2)
            if product is None:
                product = rows.new_zeros(rows.shape[0], self.out_dims[index])
            outputs.append(product.reshape(num_nodes, channels * self.out_dims[index]))
        return torch.cat(outputs, dim=1)
