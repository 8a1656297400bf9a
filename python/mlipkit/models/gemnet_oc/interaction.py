"""One GemNet-OC interaction block: edge-to-edge (triplets, quadruplets), atom-to-edge, edge-to-atom and
atom-to-atom messages, then the atom and edge updates."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from mlipkit.models.gemnet_oc.layers import (
    INV_SQRT_2,
    AngularBasis,
    AtomUpdateBlock,
    Dense,
    EdgeEmbedding,
    PairInteraction,
    QuadrupletInteraction,
    ResidualLayer,
    TripletInteraction,
    run,
)


class Interactions(NamedTuple):
    """Index sets and projected bases every interaction block shares (built once per forward pass).

    Edge positions are positions in the graph named: ``main`` (the embedding
    graph), ``qint`` (quadruplets), ``aeaint`` (atom-edge and edge-atom),
    ``aint`` (atom-atom). Unused interactions hold empty tensors.
    """

    num_atoms: int
    main_senders: torch.Tensor
    main_receivers: torch.Tensor
    main_reverse: torch.Tensor
    triplet_in: torch.Tensor
    rbf_triplet: torch.Tensor
    cbf_triplet: AngularBasis
    basis_atom_update: torch.Tensor
    quadruplet_triplet_in: torch.Tensor
    quadruplet_triplet_to_quadruplet: torch.Tensor
    rbf_quadruplet: torch.Tensor
    cbf_quadruplet: torch.Tensor
    sbf_quadruplet: AngularBasis | None
    aeaint_senders: torch.Tensor
    aeaint_receivers: torch.Tensor
    atom_edge_triplet_in: torch.Tensor
    rbf_atom_edge: torch.Tensor
    cbf_atom_edge: AngularBasis | None
    edge_atom_triplet_in: torch.Tensor
    rbf_edge_atom: torch.Tensor
    cbf_edge_atom: AngularBasis | None
    aint_senders: torch.Tensor
    aint_receivers: torch.Tensor
    rbf_atom_atom: torch.Tensor


class InteractionBlock(nn.Module):
    def __init__(
        self,
        emb_size_atom: int,
        emb_size_edge: int,
        emb_size_trip_in: int,
        emb_size_trip_out: int,
        emb_size_quad_in: int,
        emb_size_quad_out: int,
        emb_size_a2a_in: int,
        emb_size_a2a_out: int,
        emb_size_rbf: int,
        emb_size_cbf: int,
        emb_size_sbf: int,
        num_before_skip: int,
        num_after_skip: int,
        num_concat: int,
        num_atom: int,
        num_atom_emb_layers: int,
        quad_interaction: bool,
        atom_edge_interaction: bool,
        edge_atom_interaction: bool,
        atom_interaction: bool,
        activation: str | None,
    ):
        super().__init__()
        self.dense_ca = Dense(emb_size_edge, emb_size_edge, activation=activation)
        self.trip_interaction = TripletInteraction(
            emb_size_edge, emb_size_edge, emb_size_trip_in, emb_size_trip_out, emb_size_rbf, emb_size_cbf, True, activation
        )
        self.quad_interaction = (
            QuadrupletInteraction(emb_size_edge, emb_size_quad_in, emb_size_quad_out, emb_size_rbf, emb_size_cbf, emb_size_sbf, activation)
            if quad_interaction
            else None
        )
        self.atom_edge_interaction = (
            TripletInteraction(
                emb_size_atom, emb_size_edge, emb_size_trip_in, emb_size_trip_out, emb_size_rbf, emb_size_cbf, True, activation
            )
            if atom_edge_interaction
            else None
        )
        self.edge_atom_interaction = (
            TripletInteraction(
                emb_size_edge, emb_size_atom, emb_size_trip_in, emb_size_trip_out, emb_size_rbf, emb_size_cbf, False, activation
            )
            if edge_atom_interaction
            else None
        )
        self.atom_interaction = (
            PairInteraction(emb_size_atom, emb_size_a2a_in, emb_size_a2a_out, emb_size_rbf, activation) if atom_interaction else None
        )
        self.layers_before_skip = nn.ModuleList([ResidualLayer(emb_size_edge, activation=activation) for _ in range(num_before_skip)])
        self.layers_after_skip = nn.ModuleList([ResidualLayer(emb_size_edge, activation=activation) for _ in range(num_after_skip)])
        self.atom_emb_layers = nn.ModuleList([ResidualLayer(emb_size_atom, activation=activation) for _ in range(num_atom_emb_layers)])
        self.atom_update = AtomUpdateBlock(emb_size_atom, emb_size_edge, emb_size_rbf, num_atom, activation)
        self.concat_layer = EdgeEmbedding(emb_size_atom, emb_size_edge, emb_size_edge, activation)
        self.residual_m = nn.ModuleList([ResidualLayer(emb_size_edge, activation=activation) for _ in range(num_concat)])
        # each sum of messages is divided by the square root of its number of terms
        self.inv_sqrt_num_eint = 1.0 / math.sqrt(2.0 + quad_interaction + atom_edge_interaction)
        self.inv_sqrt_num_aint = 1.0 / math.sqrt(1.0 + edge_atom_interaction + atom_interaction)

    def forward(self, h: torch.Tensor, m: torch.Tensor, graphs: Interactions) -> tuple[torch.Tensor, torch.Tensor]:
        scale = self.inv_sqrt_num_eint
        x = self.dense_ca(m, scale) + self.trip_interaction(
            m, graphs.rbf_triplet, graphs.cbf_triplet, graphs.triplet_in, graphs.main_reverse, scale=scale
        )
        if self.quad_interaction is not None:
            x = x + self.quad_interaction(
                m,
                graphs.rbf_quadruplet,
                graphs.cbf_quadruplet,
                graphs.sbf_quadruplet,
                graphs.quadruplet_triplet_in,
                graphs.quadruplet_triplet_to_quadruplet,
                graphs.main_reverse,
                scale,
            )
        if self.atom_edge_interaction is not None:
            x = x + self.atom_edge_interaction(
                h, graphs.rbf_atom_edge, graphs.cbf_atom_edge, graphs.atom_edge_triplet_in, graphs.main_reverse,
                expand_index=graphs.aeaint_senders, scale=scale,
            )
        h_new = h
        if self.edge_atom_interaction is not None:
            h_new = h_new + self.edge_atom_interaction(
                m, graphs.rbf_edge_atom, graphs.cbf_edge_atom, graphs.edge_atom_triplet_in, None,
                second_level=(graphs.aeaint_receivers, graphs.num_atoms),
            )
        if self.atom_interaction is not None:
            h_new = h_new + self.atom_interaction(h, graphs.rbf_atom_atom, graphs.aint_senders, graphs.aint_receivers)
        h = h_new * self.inv_sqrt_num_aint

        m = torch.add(run(self.layers_before_skip, x, INV_SQRT_2), m, alpha=INV_SQRT_2)
        m = run(self.layers_after_skip, m)
        h = run(self.atom_emb_layers, h)
        h = (h + self.atom_update(m, graphs.basis_atom_update, graphs.main_receivers, graphs.num_atoms)) * INV_SQRT_2
        m2 = run(self.residual_m, self.concat_layer(h, m, graphs.main_senders, graphs.main_receivers), INV_SQRT_2)
        return h, torch.add(m2, m, alpha=INV_SQRT_2)
