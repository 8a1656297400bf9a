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

from mlipkit import ops
from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, LongRangeInputs, batch_layout, compute_edge_vectors, graph_total_charges
from mlipkit.models.config import PotentialConfig
from mlipkit.nn.derivatives import graph_energies, outputs_from_edge_forces
from mlipkit.nn.electrostatics import Coulomb, PartialCharges, counted_charge_sums, dipole_moments, finite_or_zero
from mlipkit.nn.readout import ScalarHead, VectorHead
from mlipkit.nn.scale_shift import PerTypeScaleShift
from mlipkit.nn.scatter import sum_into_segments
from mlipkit.nn.tracing import is_eager
from mlipkit.nn.uncertainty import energy_uncertainty
from mlipkit.nn.zbl import COULOMB_CONSTANT, ZBL

_HEAD_OUTPUTS = {
    "y_node_scalars": keys.NODE_SCALARS,
    "y_node_vector": keys.NODE_VECTORS,
    "y_graph_scalars": keys.GRAPH_SCALARS,
    "y_graph_vector": keys.GRAPH_VECTORS,
}


class Potential(nn.Module):
    """Every registered model: a core that maps a graph to per-atom energies, wrapped once with what all share.

    The wrapper adds the per-type scale and shift, ZBL, charges and the Coulomb
    term, the extra heads, and the derivatives of the energy by the edge vectors
    (forces, virial, per-atom virials, stress), so a new model only writes its core.
    """

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
        self.partial_charges: PartialCharges | None = None
        self.coulomb: Coulomb | None = None
        if getattr(config, "predict_partial_charges", False):
            correction = config.coulomb.charge_correction
            readout = core.build_energy_readout(PartialCharges.num_channels(correction))
            self.partial_charges = PartialCharges(readout, correction)
        if getattr(config, "use_coulomb_term", False):
            coulomb = config.coulomb
            self.coulomb = Coulomb(
                coulomb.method,
                coulomb.long_range_cutoff,
                coulomb.resolved_alpha,
                coulomb.damping_radius,
                float(COULOMB_CONSTANT[config.units]),
            )

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

    @property
    def depends_on_atom_order(self) -> bool:
        """Whether renumbering the atoms changes the prediction (GemNet-OC with fairchem's neighbour-cap rule)."""
        return bool(getattr(self.core, "lower_index_caps", False))

    @property
    def can_exchange_halos(self) -> bool:
        """Whether a LAMMPS rank can evaluate only its own atoms and exchange node features between layers: the
        messages are node features (not GemNet-OC's edge messages) and every atom's electrostatics is local."""
        return hasattr(self.core, "halo_exchange") and not self.direct_forces and (self.coulomb is None or self.coulomb.method != "ewald")

    def enable_halo_exchange(self) -> int:
        """Switch the halo exchange on (for a LAMMPS artifact); returns the widest rows it carries."""
        self.core.halo_exchange = True
        return max(self.core.halo_exchange_width, 1 if self.coulomb is not None else 0)

    def _halo_charges(self, charges: torch.Tensor) -> torch.Tensor:
        """The charges the Coulomb sum reads: with the halo exchange, ghost atoms' are their owners'."""
        if getattr(self.core, "halo_exchange", False):
            return ops.halo_exchange(charges.unsqueeze(1)).squeeze(1)
        return charges

    @property
    def graph_input_fields(self) -> tuple[str, ...]:
        """Graph fields beyond the geometry that this model reads: total charges, the long-range edge list."""
        fields = ()
        if self.partial_charges is not None or self.core_reads_total_charge:
            fields += (keys.TOTAL_CHARGE,)
        if self.coulomb is not None:
            fields += (keys.LR_EDGE_INDEX, keys.LR_EDGE_CELL_SHIFTS, keys.K_INDICES, keys.K_BATCH)
        return fields

    @property
    def predicts_charges(self) -> bool:
        return self.partial_charges is not None

    @property
    def core_reads_total_charge(self) -> bool:
        return getattr(self.core, "total_charge_embedding", None) is not None

    @property
    def long_range_inputs(self) -> LongRangeInputs | None:
        """The second edge list (and Ewald's k vectors) the Coulomb term reads; None without one."""
        if self.coulomb is None:
            return None
        coulomb = self.config.coulomb
        return LongRangeInputs.for_coulomb(coulomb.long_range_cutoff, coulomb.method, coulomb.k_max)

    def _detached_weights_for_inference(self) -> dict[str, torch.Tensor]:
        """The trainable weights, detached, when this call is inference (eval mode under torch.no_grad); none
        otherwise. Derivatives by the geometry are still taken inside, and with weights that require grad
        autograd would also keep every layer's input for a weight gradient nobody asks for (GemNet-OC at OC20
        size, 66 atoms: 250 MB a call)."""
        if self.training or torch.is_grad_enabled() or not is_eager():
            return {}
        return {name: weight.detach() for name, weight in self.named_parameters() if weight.requires_grad}

    def forward(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """``energy`` [B] and ``node_energies`` [N]; with derivatives also ``forces``, ``edge_forces``, ``virial``,
        ``node_virials`` and ``stress`` (NaN unless periodic in all three directions); plus the configured heads,
        charges and the energy's uncertainty."""
        detached_weights = self._detached_weights_for_inference()
        if detached_weights:
            return torch.func.functional_call(self, detached_weights, (graph,))
        atom_types = graph[keys.ATOM_TYPES]
        edge_index = graph[keys.EDGE_INDEX]
        batch, num_graphs = batch_layout(graph)
        edge_vectors = graph[keys.EDGE_VECTORS] if keys.EDGE_VECTORS in graph else compute_edge_vectors(graph)
        # outputs stay differentiable when training or when the caller differentiates through the inputs
        keep_graph = self.training or edge_vectors.requires_grad
        inputs = {keys.EDGE_VECTORS: edge_vectors}
        if self.coulomb is not None:
            inputs.update(self._long_range_inputs(graph))
        if self.do_derivatives:
            inputs = {name: value if value.requires_grad else value.detach().requires_grad_(True) for name, value in inputs.items()}
        edge_vectors = inputs[keys.EDGE_VECTORS]

        charges = None
        # several LAMMPS ranks give the charge correction's shift; the derivatives of the energy by it go back to them
        shift_input = None
        if keys.CHARGE_SHIFT in graph and self.partial_charges is not None and self.partial_charges.correction != "none":
            shift_input = graph[keys.CHARGE_SHIFT].detach().requires_grad_(True)
        with torch.enable_grad() if self.do_derivatives or shift_input is not None else contextlib.nullcontext():
            edge_lengths = torch.linalg.norm(edge_vectors, dim=1)
            head_energies, node_features, *core_forces = self.core(graph, edge_vectors, edge_lengths)
            node_energies = self.scale_shift(self._select_head(head_energies, graph, batch), atom_types)
            if self.zbl is not None:
                node_energies = node_energies + self.zbl(atom_types, edge_index, edge_lengths)
            if self.partial_charges is not None:
                charges, raw_charges, charge_weights = self._charges(graph, node_features, batch, num_graphs, shift_input)
                if self.coulomb is not None:
                    node_energies = node_energies + self._coulomb_energies(graph, inputs, self._halo_charges(charges), batch, num_graphs)
            energy = graph_energies(node_energies, graph, batch, num_graphs)
            correction_terms = None
            if shift_input is not None:
                correction_terms = self._charge_correction_terms(graph, energy, shift_input, raw_charges, charge_weights, batch, num_graphs)

        outputs = {keys.NODE_ENERGIES: node_energies, keys.ENERGY: energy}
        if correction_terms is not None:
            outputs[keys.CHARGE_CORRECTION_TERMS] = correction_terms if keep_graph else correction_terms.detach()
        if core_forces:
            outputs[keys.FORCES] = core_forces[0] if keep_graph else core_forces[0].detach()
        if charges is not None:
            outputs.update(self._charge_outputs(graph, charges, raw_charges, batch, num_graphs, keep_graph))
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
            names = list(inputs)
            # the caller's grad mode (torch.no_grad in inference) must not turn the forces into zeros
            with torch.enable_grad():
                differentiated = energy.sum()
                if keys.CHARGE_SHIFT_WEIGHT in graph and charges is not None:
                    differentiated = differentiated + self._charge_shift_term(graph, raw_charges, charge_weights, batch, num_graphs)
                if differentiated.requires_grad:
                    gradients = torch.autograd.grad(
                        differentiated, [inputs[name] for name in names], create_graph=keep_graph, materialize_grads=True
                    )
                else:
                    gradients = [torch.zeros_like(inputs[name]) for name in names]
            gradient = dict(zip(names, gradients))
            geometry = {name: value if keep_graph else value.detach() for name, value in inputs.items()}
            lr_edges = None
            if keys.LR_EDGE_VECTORS in gradient:
                lr_edges = (geometry[keys.LR_EDGE_VECTORS], -gradient[keys.LR_EDGE_VECTORS])
            if keys.POSITIONS in gradient:
                outputs[keys.POSITION_FORCES] = -gradient[keys.POSITIONS]
                outputs[keys.CELL_GRADIENT] = gradient[keys.CELL]
            outputs.update(
                outputs_from_edge_forces(
                    graph,
                    geometry[keys.EDGE_VECTORS],
                    -gradient[keys.EDGE_VECTORS],
                    batch,
                    num_graphs,
                    lr_edges,
                    gradient.get(keys.POSITIONS),
                    gradient.get(keys.CELL),
                )
            )
        return outputs

    def _long_range_inputs(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """The long-range edge vectors, and for Ewald sums over periodic cells the positions and cells."""
        if keys.LR_EDGE_INDEX not in graph:
            raise ValueError(
                f"the Coulomb term needs the long-range edge list '{keys.LR_EDGE_INDEX}' (cutoff "
                f"{self.config.coulomb.long_range_cutoff} Å): build graphs with long_range=model.long_range_inputs"
            )
        if keys.LR_EDGE_VECTORS in graph:
            lr_edge_vectors = graph[keys.LR_EDGE_VECTORS]
        else:
            lr_edge_vectors = compute_edge_vectors(graph, keys.LR_EDGE_INDEX, keys.LR_EDGE_CELL_SHIFTS)
        inputs = {keys.LR_EDGE_VECTORS: lr_edge_vectors}
        if self.coulomb.method == "ewald" and keys.K_INDICES in graph:
            inputs[keys.POSITIONS] = graph[keys.POSITIONS]
            inputs[keys.CELL] = graph[keys.CELL]
        return inputs

    def _charges(
        self, graph: AtomicGraph, node_features: torch.Tensor, batch: torch.Tensor, num_graphs: int, given_shift: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values = self.core.read_out(self.partial_charges.readout, node_features)
        total_charge = graph_total_charges(graph, num_graphs, values.dtype)
        return self.partial_charges(values, total_charge, batch, num_graphs, graph.get(keys.NODE_ENERGY_MASK), given_shift)

    def _charge_correction_terms(
        self,
        graph: AtomicGraph,
        energy: torch.Tensor,
        shift: torch.Tensor,
        raw_charges: torch.Tensor,
        weights: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
    ) -> torch.Tensor:
        """[B, 4]: sum q~, sum f, dE/dc, d^2E/dc^2 of the counted atoms at the given shift c.

        The energy is quadratic in c (q = q~ - f c), so a caller holding part of
        a system gets dE/dc at any c from these, sums all parts' and finds the
        shift c = (sum q~ - Q) / sum f and the weight of the next evaluation.
        """
        raw_sums, weight_sums = counted_charge_sums(raw_charges, weights, batch, num_graphs, graph.get(keys.NODE_ENERGY_MASK))
        (first,) = torch.autograd.grad(energy.sum(), shift, create_graph=True, materialize_grads=True)
        second = torch.zeros_like(first)
        if first.requires_grad:
            (second,) = torch.autograd.grad(first.sum(), shift, retain_graph=True, materialize_grads=True)
        return torch.stack([raw_sums, weight_sums, first, second], dim=1)

    def _coulomb_energies(
        self, graph: AtomicGraph, inputs: dict[str, torch.Tensor], charges: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        lr_edge_vectors = inputs[keys.LR_EDGE_VECTORS]
        periodic = graph[keys.PBC].all(dim=1) if keys.PBC in graph else torch.zeros(num_graphs, dtype=torch.bool, device=charges.device)
        k_indices = graph.get(keys.K_INDICES)
        k_batch = graph.get(keys.K_BATCH)
        if k_indices is not None and k_batch is None:
            k_batch = torch.zeros_like(k_indices[:, 0], dtype=torch.int64)
        return self.coulomb(
            charges,
            graph[keys.LR_EDGE_INDEX],
            torch.linalg.norm(lr_edge_vectors, dim=1),
            batch,
            num_graphs,
            periodic,
            inputs.get(keys.POSITIONS),
            inputs.get(keys.CELL),
            k_indices,
            k_batch,
        )

    def _charge_shift_term(
        self, graph: AtomicGraph, raw_charges: torch.Tensor, weights: torch.Tensor, batch: torch.Tensor, num_graphs: int
    ) -> torch.Tensor:
        """sum over graphs of w (sum q~ - c sum f) over the counted atoms: with c and w = (dE/dc) / sum f given by a
        caller that holds part of a system (a LAMMPS rank), its gradient adds this part's share of dE/dc dc/dx."""
        raw_sums, weight_sums = counted_charge_sums(raw_charges, weights, batch, num_graphs, graph.get(keys.NODE_ENERGY_MASK))
        return (graph[keys.CHARGE_SHIFT_WEIGHT] * (raw_sums - finite_or_zero(graph[keys.CHARGE_SHIFT]) * weight_sums)).sum()

    def _charge_outputs(
        self,
        graph: AtomicGraph,
        charges: torch.Tensor,
        raw_charges: torch.Tensor,
        batch: torch.Tensor,
        num_graphs: int,
        keep_graph: bool,
    ) -> dict[str, torch.Tensor]:
        if not keep_graph:
            charges, raw_charges = charges.detach(), raw_charges.detach()
        outputs = {keys.CHARGES: charges, keys.RAW_TOTAL_CHARGE: sum_into_segments(raw_charges, batch, num_graphs)}
        if keys.POSITIONS in graph:
            outputs[keys.DIPOLE] = dipole_moments(charges, graph[keys.POSITIONS], batch, num_graphs, graph.get(keys.PBC))
        return outputs

    def _select_head(self, head_energies: torch.Tensor, graph: AtomicGraph, batch: torch.Tensor) -> torch.Tensor:
        num_heads = head_energies.shape[1]
        if keys.HEAD not in graph or num_heads == 1:
            return head_energies[:, 0]
        heads = graph[keys.HEAD]
        if int(heads.min()) < 0 or int(heads.max()) >= num_heads:
            raise ValueError(f"graph field '{keys.HEAD}' selects heads {heads.tolist()}, the model has {num_heads}")
        return head_energies.gather(1, heads.index_select(0, batch).unsqueeze(1)).squeeze(1)
