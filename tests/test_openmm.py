"""OpenMM runs mlipkit models through openmm-ml: MLPotential("mlipkit", modelPath=...)."""

import numpy as np
import openmm
import pytest
from ase.build import bulk, molecule
from openmm import app, unit
from openmmml import MLPotential

from mlipkit.calculators import MLIPCalculator
from mlipkit.integrations.openmm import KJ_PER_MOL


def topology_of(atoms, periodic: bool) -> app.Topology:
    topology = app.Topology()
    chain = topology.addChain()
    residue = topology.addResidue("MOL", chain)
    for symbol in atoms.get_chemical_symbols():
        topology.addAtom(symbol, app.Element.getBySymbol(symbol), residue)
    if periodic:
        topology.setPeriodicBoxVectors(atoms.cell.array * unit.angstrom)
    return topology


def openmm_energy_forces(system, atoms, periodic: bool):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    if periodic:
        context.setPeriodicBoxVectors(*(atoms.cell.array * unit.angstrom))
    context.setPositions(atoms.positions * unit.angstrom)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def cu_au_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.symbols[[1, 4, 9, 20]] = "Au"
    atoms.rattle(0.05, seed=3)
    return atoms


@pytest.mark.parametrize("name, structure", [("torchscript_float64", "periodic"), ("torchscript_float64", "molecule"),
                                             ("torchscript_float32", "periodic")])
def test_openmm_gives_ases_numbers_in_its_units(artifacts, name, structure):
    path, dtype = artifacts[name]
    atoms = cu_au_cell() if structure == "periodic" else molecule("CH3CH2OH")
    periodic = structure == "periodic"
    system = MLPotential("mlipkit", modelPath=str(path)).createSystem(topology_of(atoms, periodic), removeCMMotion=False)
    energy, forces = openmm_energy_forces(system, atoms, periodic)
    reference = atoms.copy()
    reference.calc = MLIPCalculator(path)
    tolerance = 1e-10 if name.endswith("float64") else 1e-5
    assert energy == pytest.approx(reference.get_potential_energy() * KJ_PER_MOL["metal"], rel=tolerance)
    expected = reference.get_forces() * 10 * KJ_PER_MOL["metal"]
    assert np.abs(forces - expected).max() <= tolerance * np.abs(expected).max()


def test_a_mixed_system_applies_the_model_to_its_ml_atoms_only(artifacts):
    """An ethanol molecule (ML) beside a water molecule (MM, no forces here): the model sees the ethanol alone."""
    path = artifacts["torchscript_float64"][0]
    ethanol = molecule("CH3CH2OH")
    atoms = ethanol + molecule("H2O")
    atoms.positions[len(ethanol):] += [6.0, 0.0, 0.0]
    topology = topology_of(atoms, periodic=False)
    mm_system = openmm.System()
    for atom in topology.atoms():
        mm_system.addParticle(atom.element.mass)
    ml_atoms = list(range(len(ethanol)))
    system = MLPotential("mlipkit", modelPath=str(path)).createMixedSystem(topology, mm_system, ml_atoms)
    energy, forces = openmm_energy_forces(system, atoms, periodic=False)
    reference = ethanol.copy()
    reference.calc = MLIPCalculator(path)
    assert energy == pytest.approx(reference.get_potential_energy() * KJ_PER_MOL["metal"], rel=1e-10)
    expected = reference.get_forces() * 10 * KJ_PER_MOL["metal"]
    assert np.abs(forces[ml_atoms] - expected).max() <= 1e-10 * np.abs(expected).max()
    assert np.all(forces[len(ethanol):] == 0.0)


def test_a_charge_models_total_charge_is_honoured(artifacts):
    """totalCharge reaches the model (its categorical total-charge embedding and charge correction)."""
    path = artifacts["charges_torchscript_float64"][0]
    atoms = molecule("CH3CH2OH")
    energies = {}
    for charge in (-1.0, 0.0):
        system = MLPotential("mlipkit", modelPath=str(path)).createSystem(topology_of(atoms, False), totalCharge=charge)
        energies[charge] = openmm_energy_forces(system, atoms, periodic=False)[0]
        reference = atoms.copy()
        reference.info["charge"] = charge
        reference.calc = MLIPCalculator(path)
        assert energies[charge] == pytest.approx(reference.get_potential_energy() * KJ_PER_MOL["metal"], rel=1e-10)
    assert abs(energies[-1.0] - energies[0.0]) > 1e-3


def test_nve_conserves_energy(artifacts, tmp_path):
    """Velocity Verlet, 200 steps of 1 fs from 300 K, on the smooth Cu/Au model of the LAMMPS NVE test: no drift
    beyond that test's bound (1e-5 eV/atom/ps)."""
    from conftest import build_small
    from mlipkit.compile import compile_model

    path = tmp_path / "smooth.pt"
    compile_model(build_small("nequip", type_names=["Cu", "Au"], per_type_energy_shifts=[-3.5, -3.8],
                              per_type_energy_scales=0.1), path, mode="torchscript")
    atoms = cu_au_cell()
    system = MLPotential("mlipkit", modelPath=str(path)).createSystem(topology_of(atoms, True), removeCMMotion=False)
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPeriodicBoxVectors(*(atoms.cell.array * unit.angstrom))
    context.setPositions(atoms.positions * unit.angstrom)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    totals = []
    for _ in range(20):
        integrator.step(10)
        state = context.getState(getEnergy=True)
        totals.append((state.getPotentialEnergy() + state.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole))
    totals = np.array(totals) / KJ_PER_MOL["metal"]  # eV
    drift_per_atom_per_ps = np.polyfit(np.arange(1, 21) * 0.01, totals, 1)[0] / len(atoms)
    assert abs(drift_per_atom_per_ps) <= 1e-5, drift_per_atom_per_ps


def test_elements_the_model_lacks_are_named(artifacts):
    atoms = bulk("Fe", "bcc", a=2.87, cubic=True)
    with pytest.raises(ValueError, match=r"element\(s\) \['Fe'\] that the model lacks"):
        MLPotential("mlipkit", modelPath=str(artifacts["torchscript_float64"][0])).createSystem(topology_of(atoms, True))


def test_the_adapter_imports_before_openmm_ml():
    """openmm-ml's import loads this entry point; importing the adapter first must not meet a half-loaded module."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", "import mlipkit.integrations.openmm as m; from openmmml import MLPotential; "
                          "print(type(MLPotential._implFactories['mlipkit']).__name__)"], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "MLIPKitPotentialImplFactory", run.stderr
