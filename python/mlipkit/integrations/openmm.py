"""mlipkit models and artifacts as openmm-ml potentials (``pip install mlipkit[openmm]``).

Registered under the name ``mlipkit`` (entry point ``openmmml.potentials``):

    potential = MLPotential("mlipkit", modelPath="model.pt2")
    system = potential.createSystem(topology)                    # every atom ML
    system = potential.createMixedSystem(topology, mm_system, ml_atoms)   # ML/MM

The force is an ``openmm.PythonForce`` that evaluates the checkpoint or
artifact on the atoms it covers (all, or ``atoms``) through mlipkit's ASE
calculator, in OpenMM's units: kJ/mol and kJ/(mol nm), from the model's eV
(``units: metal``) or kcal/mol (``units: real``). Periodic topologies pass
their box; ``totalCharge`` sets a charge model's total charge.
"""

from __future__ import annotations

from functools import partial
from typing import Iterable

import ase
import ase.units
import numpy as np


class MLIPKitPotentialImplFactory:
    """openmm-ml's factory for ``MLPotential("mlipkit", ...)`` (its ``createImpl`` is all openmm-ml calls).

    Defined before openmm-ml is imported: importing openmm-ml loads its entry points, this factory among them, so
    a program that imports this module first must find the factory here while the module is still loading.
    """

    def createImpl(self, name: str, modelPath: str | None = None, device: str = "cpu", **args) -> "MLIPKitPotentialImpl":
        if modelPath is None:
            raise ValueError("MLPotential('mlipkit') needs modelPath: a checkpoint (.ckpt) or artifact (.pt2/.pt)")
        return MLIPKitPotentialImpl(name, modelPath, device)


import openmm  # noqa: E402
from openmm import unit  # noqa: E402
from openmmml.mlpotential import MLPotentialImpl  # noqa: E402

from mlipkit.calculators import MLIPCalculator  # noqa: E402
from mlipkit.compile.artifact import model_units  # noqa: E402

#: kJ/mol per the model's energy unit
KJ_PER_MOL = {"metal": 1.0 / (ase.units.kJ / ase.units.mol), "real": 4.184}


class MLIPKitPotentialImpl(MLPotentialImpl):
    """``MLPotential("mlipkit", modelPath=...)``: a checkpoint (.ckpt) or compiled artifact (.pt2/.pt)."""

    def __init__(self, name: str, modelPath: str, device: str):
        self.name, self.model_path, self.device = name, modelPath, device

    def addForces(self, topology: openmm.app.Topology, system: openmm.System, atoms: Iterable[int] | None,
                  forceGroup: int, totalCharge: float | None = None, **args):
        modelPath = self.model_path
        calculator = MLIPCalculator(modelPath, device=self.device)
        model = calculator.model
        included = list(topology.atoms())
        if atoms is not None:
            included = [included[index] for index in atoms]
        if any(atom.element is None for atom in included):
            raise ValueError("every ML atom of the Topology needs an element")
        symbols = [atom.element.symbol for atom in included]
        unknown = sorted(set(symbols) - set(model.type_names))
        if unknown:
            raise ValueError(f"{modelPath}: the ML atoms include element(s) {unknown} that the model lacks (it knows {list(model.type_names)})")
        periodic = topology.getPeriodicBoxVectors() is not None
        structure = ase.Atoms(symbols=symbols, pbc=periodic, calculator=calculator)
        if totalCharge is not None:
            structure.info["charge"] = float(totalCharge)
        force = openmm.PythonForce(partial(_compute, structure=structure, kj_per_mol=KJ_PER_MOL[model_units(model)]))
        force.setForceGroup(forceGroup)
        force.setUsesPeriodicBoundaryConditions(periodic)
        if atoms is not None:
            force.setParticles(list(atoms))
        system.addForce(force)


def _compute(state, structure: ase.Atoms, kj_per_mol: float):
    structure.set_positions(state.getPositions(asNumpy=True).value_in_unit(unit.angstrom))
    if np.all(structure.pbc):
        structure.set_cell(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.angstrom))
    energy = structure.get_potential_energy()
    forces = structure.get_forces()
    # per Å to per nm: x 10
    return energy * kj_per_mol, forces * (10.0 * kj_per_mol)
