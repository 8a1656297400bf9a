import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.calculator import PropertyNotImplementedError
from ase.calculators.fd import calculate_numerical_stress

from conftest import STRUCTURES, build_small, evaluate, relative_error
from mlipkit.calculators import MLIPCalculator
from mlipkit.data import keys
from mlipkit.models import save_checkpoint


@pytest.mark.parametrize("source", ["model", "checkpoint"])
def test_calculator_matches_model(model_name, source, tmp_path):
    model = build_small(model_name)
    calculator = MLIPCalculator(model if source == "model" else save_checkpoint(model, tmp_path / "m.ckpt"))
    atoms = STRUCTURES["triclinic"]()
    atoms.calc = calculator
    reference = evaluate(model, atoms)
    assert atoms.get_potential_energy() == pytest.approx(float(reference[keys.ENERGY].detach()[0]), rel=1e-13)
    assert atoms.get_potential_energy(force_consistent=True) == atoms.get_potential_energy()
    assert np.allclose(atoms.get_forces(), reference[keys.FORCES].numpy(), rtol=0, atol=1e-13)
    assert np.allclose(atoms.get_potential_energies().sum(), atoms.get_potential_energy(), atol=1e-12)
    stress = reference[keys.STRESS][0].numpy()
    assert np.allclose(atoms.get_stress(voigt=False), stress, atol=1e-13)
    assert np.allclose(atoms.get_stress(), stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], atol=1e-13)
    assert np.allclose(atoms.get_stresses().sum(0), atoms.get_stress(), atol=1e-13)


def test_calculator_stress_matches_ase_finite_differences():
    atoms = STRUCTURES["triclinic"]()
    atoms.calc = MLIPCalculator(build_small("nequip"))
    numerical = calculate_numerical_stress(atoms, eps=1e-5)
    assert np.abs(numerical - atoms.get_stress()).max() <= 1e-8


def test_calculator_rejects_unknown_species():
    atoms = Atoms("CuFe", positions=[[0, 0, 0], [2, 0, 0]])
    atoms.calc = MLIPCalculator(build_small("nequip"))
    with pytest.raises(ValueError, match=r"\['Fe'\] are not known to the model"):
        atoms.get_potential_energy()


def test_stress_of_non_periodic_system_is_refused():
    atoms = STRUCTURES["molecule"]()
    atoms.calc = MLIPCalculator(build_small("nequip"))
    assert np.isfinite(atoms.get_forces()).all()
    with pytest.raises(PropertyNotImplementedError, match="periodic in all three directions"):
        atoms.get_stress()


def test_energy_only_model_gives_no_forces():
    atoms = STRUCTURES["triclinic"]()
    atoms.calc = MLIPCalculator(build_small("nequip", do_derivatives=False))
    assert np.isfinite(atoms.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError, match="energy-only"):
        atoms.get_forces()


def test_float32_model_in_calculator():
    atoms = STRUCTURES["triclinic"]()
    atoms.calc = MLIPCalculator(build_small("nequip", dtype=torch.float32))
    e32 = atoms.get_potential_energy()
    atoms.calc = MLIPCalculator(build_small("nequip"))
    assert relative_error(e32, atoms.get_potential_energy()) <= 1e-5


def test_md_with_calculator_conserves_energy():
    from ase import units
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import thermalize_momenta

    atoms = STRUCTURES["triclinic"]().repeat((1, 2, 2))
    atoms.calc = MLIPCalculator(build_small("nequip", pair_potential={"kind": "zbl"}))
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    start = atoms.get_total_energy()
    dynamics = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dynamics.run(40)
    assert abs(atoms.get_total_energy() - start) / len(atoms) <= 1e-4
