"""mlipkit models and artifacts as torch-sim models (``pip install mlipkit[torch-sim]``).

torch-sim batches many systems into one ``SimState`` (atoms of all systems,
``system_idx`` saying which is whose, one cell per system, one ``pbc`` for
all); ``MLIPKitModel`` turns it into one batched atomic graph, runs the model
or compiled artifact once, and returns what torch-sim's integrators and
optimisers read: energy per system, forces, and (periodic states) stress in
ASE's convention, in the model's units (eV and Å for ``units: metal``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import ase
import torch
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from mlipkit.compile.artifact import Artifact, load_model_or_artifact
from mlipkit.data import keys
from mlipkit.data.graph import batch_graphs, graph_from_atoms
from mlipkit.models.checkpoint import model_dtype
from mlipkit.models.potential import Potential


class MLIPKitModel(ModelInterface):
    """A model object, checkpoint (``.ckpt``) or compiled artifact (``.pt2``/``.pt``) for torch-sim.

    Computation runs in the model's dtype (``dtype``) on its device; the
    state's positions and cells are converted to it and the outputs returned
    in it. ``compute_stress`` needs a model that differentiates its energy
    (not an energy-only or direct-forces one) and periodic states.
    ``total_charge`` (one value, or one per system) is what charge models
    read (torch-sim's states carry no charge); default neutral.
    """

    def __init__(
        self,
        model: Potential | Artifact | str | Path,
        device: str | torch.device | None = None,
        compute_stress: bool = True,
        total_charge: float | Sequence[float] | None = None,
    ):
        super().__init__()
        self.total_charge = total_charge
        self.model = load_model_or_artifact(model, device)
        if isinstance(self.model, Artifact):
            self._device, self._dtype = self.model.device, self.model.dtype
        else:
            self._device, self._dtype = torch.device(device or "cpu"), model_dtype(self.model)
        conservative = self.model.do_derivatives and not self.model.direct_forces
        if compute_stress and not conservative:
            raise ValueError("this model gives no stress (energy-only or direct forces); use compute_stress=False")
        self._compute_forces = bool(self.model.do_derivatives or self.model.direct_forces)
        self._compute_stress = compute_stress
        self._memory_scales_with = "n_atoms_x_density"
        self.type_names = list(self.model.type_names)

    @ModelInterface.compute_stress.setter
    def compute_stress(self, compute_stress: bool) -> None:
        if compute_stress and not (self.model.do_derivatives and not self.model.direct_forces):
            raise NotImplementedError("this model gives no stress (energy-only or direct forces)")
        self._compute_stress = compute_stress

    def graph(self, state: SimState) -> dict[str, torch.Tensor]:
        """One atomic graph of every system in the state (the neighbour lists built per system)."""
        positions = state.positions.detach().to("cpu", torch.float64).numpy()
        cells = state.row_vector_cell.detach().to("cpu", torch.float64).numpy()
        numbers = state.atomic_numbers.detach().cpu().numpy()
        system_idx = state.system_idx.detach().cpu()
        known = set(self.type_names)
        graphs = []
        for system in range(int(state.n_systems)):
            rows = (system_idx == system).numpy()
            atoms = ase.Atoms(numbers=numbers[rows], positions=positions[rows], cell=cells[system], pbc=bool(state.pbc))
            if self.total_charge is not None:
                charges = [self.total_charge] * int(state.n_systems) if isinstance(self.total_charge, (int, float)) else self.total_charge
                atoms.info["charge"] = float(charges[system])
            unknown = sorted(set(atoms.get_chemical_symbols()) - known)
            if unknown:
                raise ValueError(f"system {system} has element(s) {unknown} that the model lacks (it knows {self.type_names})")
            graphs.append(graph_from_atoms(atoms, self.model.r_max, self.type_names, self._dtype, self.model.long_range_inputs))
        graph = batch_graphs(graphs)
        return {name: tensor.to(self._device) for name, tensor in graph.items()}

    def forward(self, state: SimState | dict, **kwargs) -> dict[str, torch.Tensor]:
        if isinstance(state, dict):
            state = SimState(**state, masses=torch.ones_like(state["positions"][:, 0]))
        outputs = self.model(self.graph(state))
        results = {"energy": outputs[keys.ENERGY].detach()}
        if self._compute_forces:
            results["forces"] = outputs[keys.FORCES].detach()
        if self._compute_stress and bool(state.pbc):
            results["stress"] = outputs[keys.STRESS].detach().reshape(-1, 3, 3)
        return {name: value.to(self._dtype) for name, value in results.items()}
