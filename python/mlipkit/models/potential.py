"""The model every registry entry builds: a core network plus everything models share.

The core maps a graph, its edge vectors and their lengths to per-atom energies
(one column per readout head, zero for an atom without neighbours) and final
node features.
Around it: per-type scale and shift, ZBL, the sum to graph energies, extra
output heads, and forces/virial/stress from edge forces -dE/d(edge_vectors).
"""

from __future__ import annotations

import contextlib

import torch
from e3nn import o3
from torch import nn

from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, batch_layout, compute_edge_vectors
from mlipkit.models.config import PotentialConfig
from mlipkit.nn.derivatives import graph_energies, outputs_from_edge_forces
from mlipkit.nn.readout import ScalarHead, VectorHead
from mlipkit.nn.scale_shift import PerTypeScaleShift
from mlipkit.nn.scatter import sum_into_segments
from mlipkit.nn.uncertainty import energy_uncertainty
from mlipkit.nn.zbl import ZBL

_HEAD_OUTPUTS = {
    "y_node_scalars": keys.NODE_SCALARS,
    "y_node_vector": keys.NODE_VECTORS,
    "y_graph_scalars": keys.GRAPH_SCALARS,
    "y_graph_vector": keys.GRAPH_VECTORS,
}


class Potential(nn.Module):
    def __init__(self, model_name: str, config: PotentialConfig, core: nn.Module, mlp_irreps: o3.Irreps):
        super().__init__()
        self.model_name = model_name
        self.config = config
        self.core = core
        self.scale_shift = PerTypeScaleShift(
            config.energy_shifts,
            config.energy_scales,
            config.per_type_energy_shifts_trainable and config.add_atomic_energies,
            config.per_type_energy_scales_trainable,
        )
        self.zbl = (
            ZBL(config.pair_species, config.r_max, config.units)
            if config.pair_potential is not None
            else None
        )
        self.heads = nn.ModuleDict()
        for option, output in _HEAD_OUTPUTS.items():
            head_config = getattr(config, option)
            if head_config is None:
                continue
            if output in (keys.NODE_VECTORS, keys.GRAPH_VECTORS):
                self.heads[output] = VectorHead(core.feature_irreps, head_config.num_tasks)
            else:
                self.heads[output] = ScalarHead(core.feature_irreps, mlp_irreps, head_config.num_tasks)
        #: non-conservative models (GemNet-OC's direct forces): the core returns per-atom forces, nothing is differentiated
        self.direct_forces = bool(getattr(core, "direct_forces", False))
        self.do_derivatives = config.do_derivatives and not self.direct_forces
        #: mean-variance variants: a readout of the core's form whose terms give the energy's std
        self.energy_uncertainty_readout: nn.Module | None = None

    @property
    def type_names(self) -> list[str]:
        return list(self.config.type_names)

    @property
    def r_max(self) -> float:
        return float(self.config.r_max)

    @property
    def num_message_passing_layers(self) -> int:
        """How many hops information travels: callers with ghost atoms need this many cutoffs of them."""
        return self.core.num_message_passing_layers

    @property
    def extra_input_fields(self) -> list[str]:
        return self.core.extra_input_fields

    def forward(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        atom_types = graph[keys.ATOM_TYPES]
        edge_index = graph[keys.EDGE_INDEX]
        batch, num_graphs = batch_layout(graph)
        edge_vectors = graph[keys.EDGE_VECTORS] if keys.EDGE_VECTORS in graph else compute_edge_vectors(graph)
        # outputs stay differentiable when training or when the caller differentiates through the inputs
        keep_graph = self.training or edge_vectors.requires_grad
        if self.do_derivatives and not edge_vectors.requires_grad:
            edge_vectors = edge_vectors.detach().requires_grad_(True)

        with torch.enable_grad() if self.do_derivatives else contextlib.nullcontext():
            edge_lengths = torch.linalg.norm(edge_vectors, dim=1)
            head_energies, node_features, *core_forces = self.core(graph, edge_vectors, edge_lengths)
            node_energies = self.scale_shift(self._select_head(head_energies, graph, batch), atom_types)
            if self.zbl is not None:
                node_energies = node_energies + self.zbl(atom_types, edge_index, edge_lengths)
            energy = graph_energies(node_energies, graph, batch, num_graphs)

        outputs = {keys.NODE_ENERGIES: node_energies, keys.ENERGY: energy}
        if core_forces:
            outputs[keys.FORCES] = core_forces[0] if keep_graph else core_forces[0].detach()
        if self.energy_uncertainty_readout is not None:
            terms = self.core.read_out(self.energy_uncertainty_readout, node_features)[:, 0]
            terms = terms * self.scale_shift.scales.index_select(0, atom_types)
            if not keep_graph:
                terms = terms.detach()
            outputs[keys.NODE_ENERGY_UNCERTAINTY] = terms
            outputs[keys.ENERGY_UNCERTAINTY] = energy_uncertainty(terms, graph, batch, num_graphs)
        for output, head in self.heads.items():
            values = head(node_features)
            if output in (keys.GRAPH_SCALARS, keys.GRAPH_VECTORS):
                values = sum_into_segments(values, batch, num_graphs)
            outputs[output] = values

        if self.do_derivatives:
            if energy.requires_grad:
                (gradient,) = torch.autograd.grad(
                    energy.sum(), edge_vectors, create_graph=keep_graph, materialize_grads=True
                )
            else:
                gradient = torch.zeros_like(edge_vectors)
            edge_forces = -gradient
            geometry = edge_vectors if keep_graph else edge_vectors.detach()
            outputs.update(outputs_from_edge_forces(graph, geometry, edge_forces, batch, num_graphs))
        return outputs

    def _select_head(self, head_energies: torch.Tensor, graph: AtomicGraph, batch: torch.Tensor) -> torch.Tensor:
        num_heads = head_energies.shape[1]
        if keys.HEAD not in graph or num_heads == 1:
            return head_energies[:, 0]
        heads = graph[keys.HEAD]
        if int(heads.min()) < 0 or int(heads.max()) >= num_heads:
            raise ValueError(f"graph field '{keys.HEAD}' selects heads {heads.tolist()}, the model has {num_heads}")
        return head_energies.gather(1, heads.index_select(0, batch).unsqueeze(1)).squeeze(1)
