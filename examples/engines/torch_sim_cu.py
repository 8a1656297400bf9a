"""torch-sim runs an mlipkit artifact on many Cu cells at once: batched NVT (Langevin) and a batched FIRE relaxation.

    .venv/bin/python examples/engines/torch_sim_cu.py MODEL

MODEL: a checkpoint or compiled artifact of a Cu model (the demo's
out/demo_nequip.pt2 after `bash tools/setup.sh demo`). Needs
`pip install mlipkit[torch-sim]` (tools/setup.sh installs it).
"""

import sys

import torch
import torch_sim as ts
from ase.build import bulk

from mlipkit.integrations.torch_sim import MLIPKitModel


def cells():
    """Eight rattled fcc Cu cells of 4 to 108 atoms."""
    structures = []
    for index, repeats in enumerate([(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3), (2, 2, 3)]):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeats)
        atoms.rattle(0.05, seed=index)
        structures.append(atoms)
    return structures


def main(path: str) -> None:
    model = MLIPKitModel(path)
    structures = cells()
    sizes = [len(atoms) for atoms in structures]
    state = ts.io.atoms_to_state(structures, model.device, model.dtype)
    kT = 300.0 * ts.units.MetalUnits.temperature
    final = ts.integrate(system=state, model=model, integrator=ts.nvt_langevin, n_steps=50, temperature=300.0,
                         timestep=0.002)
    energies = model(final)["energy"]
    print(f"NVT, 50 steps of 2 fs at 300 K, {len(sizes)} cells of {sizes} atoms in one batch (kT {float(kT):.4f} eV):")
    print("  potential energy per atom after:", [round(float(e) / n, 4) for e, n in zip(energies, sizes)], "eV")
    relaxed = ts.optimize(system=state, model=model, optimizer=ts.unit_cell_fire, max_steps=200,
                          convergence_fn=ts.runners.generate_force_convergence_fn(force_tol=0.01))
    forces = model(relaxed)["forces"]
    stress = model(relaxed)["stress"]
    print(f"FIRE (unit-cell), all {len(sizes)} cells together: largest force {float(forces.abs().max()):.4f} eV/Å, "
          f"largest stress {float(stress.abs().max()):.5f} eV/Å³")
    print("  lattice constants after (Å):",
          [round(float(torch.linalg.det(cell)) ** (1 / 3) / round(n / 4) ** (1 / 3), 4)
           for cell, n in zip(relaxed.row_vector_cell, sizes)])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "out/demo_nequip.pt2")
