"""ASE calculator for an mlipkit model object, checkpoint or compiled artifact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from mlipkit.compile.artifact import Artifact, load_model_or_artifact
from mlipkit.data import keys
from mlipkit.data.graph import graph_from_atoms
from mlipkit.models.checkpoint import model_dtype
from mlipkit.models.potential import Potential


class MLIPCalculator(Calculator):
    """Energy, forces, stress, per-atom energies and per-atom stresses from an mlipkit model.

    ``model`` is a model object, the path of a ``.ckpt`` checkpoint, or the path
    of a compiled artifact (``.pt2`` or ``.pt``, any target but ``energy`` for
    forces). Computation runs in the model's dtype on ``device`` (an artifact
    runs on the device it was compiled for); results are float64 numpy arrays
    in the model's units (eV and Å for ``units: metal``). Per-atom stresses
    ("stresses", Voigt order like "stress") are -per-atom virial / cell volume
    and sum to the stress. Mean-variance models add "energy_uncertainty": the
    predicted std of the energy per atom (the total energy's is N times it).
    Models with partial charges add "charges" (e) and, for structures periodic
    in no direction, "dipole" (e Å, about the origin); the total charge is
    ``atoms.info["charge"]`` (or "total_charge", else the initial charges' sum).
    """

    implemented_properties = [
        "energy", "free_energy", "energies", "forces", "stress", "stresses", "energy_uncertainty", "charges", "dipole",
    ]

    def __init__(self, model: Potential | Artifact | str | Path, device: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.model = load_model_or_artifact(model, device)
        if isinstance(self.model, Artifact):
            self.device, self.dtype = self.model.device, self.model.dtype
        else:
            self.device, self.dtype = torch.device(device or "cpu"), model_dtype(self.model)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        direct_forces = self.model.direct_forces
        if not (self.model.do_derivatives or direct_forces) and {"forces", "stress"} & set(properties):
            raise PropertyNotImplementedError(
                "this model is energy-only (do_derivatives=False): it gives no forces or stress"
            )
        if direct_forces and {"stress", "stresses"} & set(properties):
            raise PropertyNotImplementedError(
                "this model predicts forces directly (direct_forces: true): they are not the gradient of its energy, "
                "so there is no stress; run constant-volume dynamics, or train a conservative model for NPT and cell relaxation"
            )
        periodic = bool(np.all(self.atoms.pbc))
        if {"stress", "stresses"} & set(properties) and not periodic:
            raise PropertyNotImplementedError(
                f"stress needs a cell periodic in all three directions; these atoms have pbc={self.atoms.pbc.tolist()}"
            )
        if {"charges", "dipole"} & set(properties) and not self.model.predicts_charges:
            raise PropertyNotImplementedError("this model predicts no partial charges (predict_partial_charges: false)")
        if "dipole" in properties and np.any(self.atoms.pbc):
            raise PropertyNotImplementedError(f"the dipole is defined for structures without periodic directions, not pbc={self.atoms.pbc.tolist()}")
        graph = graph_from_atoms(self.atoms, self.model.r_max, self.model.type_names, self.dtype, self.model.long_range_inputs)
        graph = {name: tensor.to(self.device) for name, tensor in graph.items()}
        # no graph to the weights (direct-force and energy-only models would record one); forces still come from autograd
        with torch.no_grad():
            outputs = self.model(graph)
        energy = float(outputs[keys.ENERGY].detach()[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "energies": outputs[keys.NODE_ENERGIES].detach().cpu().double().numpy(),
        }
        if keys.CHARGES in outputs:
            self.results["charges"] = outputs[keys.CHARGES].detach().cpu().double().numpy()
            if not np.any(self.atoms.pbc):
                self.results["dipole"] = outputs[keys.DIPOLE].detach().cpu().double().numpy()[0]
        if keys.ENERGY_UNCERTAINTY in outputs:
            self.results["energy_uncertainty"] = float(outputs[keys.ENERGY_UNCERTAINTY].detach()[0])
        elif "energy_uncertainty" in properties:
            raise PropertyNotImplementedError("energy_uncertainty needs a mean-variance model (mean_var_nequip, mean_var_mace)")
        if self.model.do_derivatives or direct_forces:
            self.results["forces"] = outputs[keys.FORCES].detach().cpu().double().numpy()
            if periodic and not direct_forces:
                stress = outputs[keys.STRESS].detach().cpu().double().numpy()[0]
                self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
                node_virials = outputs[keys.NODE_VIRIALS].detach().cpu().double().numpy()
                self.results["stresses"] = full_3x3_to_voigt_6_stress(-node_virials / self.atoms.get_volume())
