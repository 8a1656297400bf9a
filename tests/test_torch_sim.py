"""torch-sim runs mlipkit models and artifacts: its own interface check, batches equal single systems, ASE's numbers."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule

import torch_sim as ts
from torch_sim.models.interface import validate_model_outputs

import mlipkit
from conftest import relative_error
from mlipkit.calculators import MLIPCalculator
from mlipkit.integrations.torch_sim import MLIPKitModel


@pytest.fixture(scope="module")
def si_fe_checkpoint(tmp_path_factory):
    """torch-sim's check builds Si and Fe cells."""
    model = mlipkit.build_model("nequip", type_names=["Si", "Fe"], r_max=4.0, num_layers=2, max_ell=1, num_features=8,
                                radial_mlp_hidden=[8], seed=0, per_type_energy_shifts=[-1.0, -2.0])
    return mlipkit.save_checkpoint(model, tmp_path_factory.mktemp("torch_sim") / "si_fe.ckpt")


def test_checkpoint_and_artifact_pass_torch_sims_validation(si_fe_checkpoint, tmp_path):
    from mlipkit.compile import compile_checkpoint

    validate_model_outputs(MLIPKitModel(si_fe_checkpoint), torch.device("cpu"), torch.float64)
    artifact = compile_checkpoint(si_fe_checkpoint, tmp_path / "si_fe.pt", mode="torchscript").path
    validate_model_outputs(MLIPKitModel(artifact), torch.device("cpu"), torch.float64)


def cu_au_cells() -> list[Atoms]:
    """Periodic Cu/Au cells of 4, 32 and 36 atoms (one triclinic)."""
    cells = []
    for seed, repeats in enumerate([(1, 1, 1), (2, 2, 2), (3, 1, 3)]):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(repeats)
        if seed == 2:
            atoms.set_cell(atoms.cell.array + [[0, 0, 0], [0.5, 0, 0], [0.3, -0.2, 0]], scale_atoms=True)
        atoms.symbols[np.random.default_rng(seed).permutation(len(atoms))[: len(atoms) // 3]] = "Au"
        atoms.rattle(0.08, seed=seed)
        cells.append(atoms)
    return cells


def molecules() -> list[Atoms]:
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=1)
    cluster = Atoms("Cu3Au", positions=[[0, 0, 0], [2.5, 0, 0], [0.3, 2.4, 0], [1.1, 0.9, 2.2]])
    return [ethanol, cluster]


@pytest.mark.parametrize("name, structures", [("torchscript_float64", "periodic"), ("torchscript_float64", "molecules"),
                                              ("torchscript_float32", "periodic"), ("checkpoint", "periodic")])
def test_a_batch_equals_each_system_alone_and_ase(artifacts, small_checkpoint, name, structures):
    """Systems of different sizes in one state: each one's energy, forces (and stress) as alone and as ASE gives."""
    path, dtype = (small_checkpoint, torch.float64) if name == "checkpoint" else artifacts[name]
    model = MLIPKitModel(path)
    atoms_list = cu_au_cells() if structures == "periodic" else molecules()
    batch = model(ts.io.atoms_to_state(atoms_list, model.device, model.dtype))
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    offset = 0
    for index, atoms in enumerate(atoms_list):
        alone = model(ts.io.atoms_to_state([atoms], model.device, model.dtype))
        rows = slice(offset, offset + len(atoms))
        offset += len(atoms)
        assert relative_error(batch["energy"][index], alone["energy"][0]) <= 1e-12
        assert relative_error(batch["forces"][rows], alone["forces"]) <= 1e-12
        reference = atoms.copy()
        reference.calc = MLIPCalculator(path)
        assert relative_error(batch["energy"][index], reference.get_potential_energy()) <= tolerance
        assert relative_error(batch["forces"][rows], torch.from_numpy(reference.get_forces())) <= tolerance
        if structures == "periodic":
            expected = torch.from_numpy(reference.get_stress(voigt=False))
            assert relative_error(batch["stress"][index], expected) <= tolerance
        else:
            assert "stress" not in batch


def test_a_charge_models_total_charge_is_honoured(artifacts):
    """total_charge reaches a charge model (categorical total-charge embedding, Coulomb term) in a batch."""
    from conftest import artifact_model

    model = MLIPKitModel(artifact_model("charges_torchscript_float64"), compute_stress=False, total_charge=[-1.0, 1.0])
    atoms_list = molecules()
    batch = model(ts.io.atoms_to_state(atoms_list, model.device, model.dtype))
    for index, (atoms, charge) in enumerate(zip(atoms_list, (-1.0, 1.0))):
        reference = atoms.copy()
        reference.info["charge"] = charge
        reference.calc = MLIPCalculator(artifacts["charges_torchscript_float64"][0])
        assert relative_error(batch["energy"][index], reference.get_potential_energy()) <= 1e-10
    neutral = MLIPKitModel(artifact_model("charges_torchscript_float64"), compute_stress=False)
    assert abs(float(neutral(ts.io.atoms_to_state(atoms_list, model.device, model.dtype))["energy"][0] - batch["energy"][0])) > 1e-4


def test_runners_drive_the_model_and_unknown_elements_are_named(artifacts):
    """torch-sim's NVT runner and FIRE optimiser on a batch; a system with an element the model lacks is refused."""
    model = MLIPKitModel(artifacts["torchscript_float64"][0])
    state = ts.io.atoms_to_state(cu_au_cells()[:2], model.device, model.dtype)
    final = ts.integrate(system=state, model=model, integrator=ts.nvt_langevin, n_steps=5, temperature=300.0, timestep=0.001)
    assert torch.isfinite(model(final)["energy"]).all()
    relaxed = ts.optimize(system=state, model=model, optimizer=ts.unit_cell_fire, max_steps=5)
    assert relaxed.n_systems == 2
    with pytest.raises(ValueError, match=r"system 1 has element\(s\) \['Fe'\] that the model lacks"):
        model(ts.io.atoms_to_state([bulk("Cu", "fcc", a=3.61), bulk("Fe", "bcc", a=2.87)], model.device, model.dtype))
