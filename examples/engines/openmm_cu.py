"""OpenMM runs an mlipkit artifact through openmm-ml: NVE of a periodic Cu cell.

    .venv/bin/python examples/engines/openmm_cu.py [MODEL]

MODEL: a checkpoint or compiled artifact of a Cu model (default: the demo's
out/demo_nequip.pt2). Needs `pip install mlipkit[openmm]` (tools/setup.sh installs it).
"""

import sys
import time

import openmm
from ase.build import bulk
from openmm import app, unit
from openmmml import MLPotential


def main(path: str) -> None:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    topology = app.Topology()
    residue = topology.addResidue("CU", topology.addChain())
    for _ in atoms:
        topology.addAtom("Cu", app.Element.getBySymbol("Cu"), residue)
    topology.setPeriodicBoxVectors(atoms.cell.array * unit.angstrom)
    system = MLPotential("mlipkit", modelPath=path).createSystem(topology, removeCMMotion=False)
    integrator = openmm.VerletIntegrator(1.0 * unit.femtosecond)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(atoms.positions * unit.angstrom)
    context.setVelocitiesToTemperature(300 * unit.kelvin, 1)
    started = time.perf_counter()
    print(f"OpenMM NVE, {len(atoms)} Cu atoms, 1 fs steps (kJ/mol):")
    print(" step   potential      kinetic        total")
    for step in range(0, 201, 50):
        if step:
            integrator.step(50)
        state = context.getState(getEnergy=True)
        potential = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        kinetic = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        print(f" {step:4d}  {potential:12.4f}  {kinetic:12.4f}  {potential + kinetic:12.4f}")
    print(f"200 steps in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/demo_nequip.pt2")
