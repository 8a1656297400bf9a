"""mlipkit demo: build a NequIP potential for Cu, save it, compile it, run it through ASE.

Run with ``bash tools/setup.sh demo``. Until training lands, the model's
physics comes from a per-type energy shift (the EMT energy per atom of Cu)
plus a randomly initialised NequIP network scaled down to 0.01 eV. The demo
model is smaller than the default (2 layers, 16 features) so that its
AOTInductor compile takes about a minute.
"""

import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import thermalize_momenta
from ase.md.verlet import VelocityVerlet
from ase import units

import mlipkit
from mlipkit.calculators import MLIPCalculator
from mlipkit.compile import compile_checkpoint

OUT = Path("out")


def main() -> None:
    cu = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    cu.rattle(0.05, seed=0)
    reference = cu.copy()
    reference.calc = EMT()
    shift = reference.get_potential_energy() / len(reference)

    started = time.perf_counter()
    model = mlipkit.build_model(
        "nequip",
        type_names=["Cu"],
        r_max=5.0,
        num_layers=2,
        num_features=16,
        seed=0,
        per_type_energy_shifts=shift,
        per_type_energy_scales=0.01,
    )
    parameters = sum(p.numel() for p in model.parameters())
    print(f"built NequIP ({model.config.num_layers} layers, l_max={model.config.max_ell}, "
          f"{model.config.num_features} features): {parameters:,} parameters in {time.perf_counter() - started:.1f} s")

    cu.calc = MLIPCalculator(model)
    print(f"{len(cu)}-atom periodic Cu cell, float64:")
    print(f"  energy          {cu.get_potential_energy(): .6f} eV  ({cu.get_potential_energy() / len(cu):.4f} eV/atom)")
    print(f"  max |force|     {np.abs(cu.get_forces()).max(): .6f} eV/Å")
    print(f"  stress (Voigt)  {np.array2string(cu.get_stress(), precision=6)} eV/Å³")

    OUT.mkdir(exist_ok=True)
    path = mlipkit.save_checkpoint(model, OUT / "demo_nequip.ckpt")
    reloaded = cu.copy()
    reloaded.calc = MLIPCalculator(path)
    difference = abs(reloaded.get_potential_energy() - cu.get_potential_energy())
    print(f"saved {path} and reloaded it: energy difference {difference:.1e} eV")

    print("mlip-compile (AOTInductor, float64, verified against the eager model):")
    report = compile_checkpoint(path, OUT / "demo_nequip.pt2", log=print)
    compiled = cu.copy()
    compiled.calc = MLIPCalculator(report.path)
    difference = abs(compiled.get_potential_energy() - cu.get_potential_energy())
    force_difference = np.abs(compiled.get_forces() - cu.get_forces()).max()
    print(f"wrote {report.path}: energy difference to the checkpoint {difference:.1e} eV, forces {force_difference:.1e} eV/Å")

    thermalize_momenta(compiled, temperature_K=300, rng=np.random.default_rng(1))
    start = compiled.get_total_energy()
    started = time.perf_counter()
    VelocityVerlet(compiled, timestep=1.0 * units.fs).run(50)
    print(
        f"50 NVE steps of 1 fs in ASE with the compiled model ({time.perf_counter() - started:.1f} s): "
        f"total energy drift {compiled.get_total_energy() - start:+.2e} eV"
    )


if __name__ == "__main__":
    main()
