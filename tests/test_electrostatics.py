"""Partial charges, total-charge embedding and the Coulomb term: exact numbers, neutrality, gradients, invariance."""

import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from conftest import build_small, coulomb_options, cu_au_triclinic, ethanol, relative_error

from mlipkit.data import batch_graphs, graph_from_atoms, keys
from mlipkit.data.extxyz import Configuration
from mlipkit.data.graph import LongRangeInputs, long_range_fields
from mlipkit.nn.electrostatics import Coulomb, ewald_alpha, ewald_k_max, short_range_damping
from mlipkit.nn.zbl import COULOMB_CONSTANT

KE = COULOMB_CONSTANT["metal"]
NACL_MADELUNG = 1.747565
CSCL_MADELUNG = 1.762675


def coulomb_energy(method, atoms, charges, cutoff, alpha=0.0, damping_radius=None, accuracy=1e-8):
    """The Coulomb module's energy of fixed charges, with the long-range inputs the data pipeline builds."""
    k_max = 0.0
    if method == "ewald":
        alpha = ewald_alpha(cutoff, accuracy)
        k_max = ewald_k_max(alpha, accuracy)
    configuration = Configuration(
        symbols=atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc
    )
    fields = long_range_fields(configuration, LongRangeInputs(cutoff, method == "ewald", k_max), torch.float64)
    positions = torch.tensor(atoms.positions)
    cell = torch.tensor(atoms.cell.array).unsqueeze(0)
    sender, receiver = fields[keys.LR_EDGE_INDEX]
    vectors = positions[receiver] - positions[sender] + fields[keys.LR_EDGE_CELL_SHIFTS] @ cell[0]
    periodic = torch.tensor([bool(np.all(atoms.pbc))])
    batch = torch.zeros(len(atoms), dtype=torch.long)
    module = Coulomb(method, cutoff, alpha, damping_radius, KE)
    energies = module(
        torch.tensor(charges, dtype=torch.float64), fields[keys.LR_EDGE_INDEX], torch.linalg.norm(vectors, dim=1), batch, 1,
        periodic, positions, cell, fields[keys.K_INDICES], fields[keys.K_BATCH],
    )
    return float(energies.sum())


def dimer(distance=3.0):
    return Atoms("NaCl", positions=[[0, 0, 0], [distance, 0, 0]])


def test_dimer_energies_and_their_derivative():
    assert coulomb_energy("ewald", dimer(), [1, -1], 8.0) == pytest.approx(-4.799882, abs=2e-6)
    assert coulomb_energy("ewald", dimer(), [1, -1], 8.0, damping_radius=5.0) == pytest.approx(-4.721692, abs=2e-6)
    assert coulomb_energy("mlip_parity", dimer(), [1, -1], 8.0, damping_radius=5.0) == pytest.approx(-9.443384, abs=2e-6)
    # dE/dr of k q q chi(r) against its closed form, phi(x) = 1 - 6x^5 + 15x^4 - 10x^3, x = r / 5
    r = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    chi = 1.0 / r + short_range_damping(r, 5.0)
    (derivative,) = torch.autograd.grad(chi.sum(), r)
    x = 3.0 / 5.0
    phi = 1 - 6 * x**5 + 15 * x**4 - 10 * x**3
    dphi = (-30 * x**4 + 60 * x**3 - 30 * x**2) / 5.0
    closed_form = dphi * (1 / math.sqrt(10) - 1 / 3) + phi * (-3 / 10**1.5 + 1 / 9) - 1 / 9
    assert float(derivative) == pytest.approx(closed_form, rel=1e-12)


def rock_salt(a=5.64, repeat=1):
    atoms = bulk("NaCl", "rocksalt", a=a, cubic=True).repeat(repeat)
    return atoms, [1.0 if s == "Na" else -1.0 for s in atoms.get_chemical_symbols()]


@pytest.mark.parametrize("cutoff", [7.0, 10.0, 13.0])
def test_ewald_gives_madelung_constants_for_any_splitting(cutoff):
    atoms, charges = rock_salt()
    nearest = 5.64 / 2
    assert -coulomb_energy("ewald", atoms, charges, cutoff) / 4 * nearest / KE == pytest.approx(NACL_MADELUNG, abs=1e-6)
    cscl = bulk("CsCl", "cesiumchloride", a=4.1)
    nearest = 4.1 * math.sqrt(3) / 2
    assert -coulomb_energy("ewald", cscl, [1.0, -1.0], cutoff) * nearest / KE == pytest.approx(CSCL_MADELUNG, abs=1e-6)


def test_ewald_supercell_and_damped_shifted_force_and_the_truncated_sum():
    atoms, charges = rock_salt()
    energy = coulomb_energy("ewald", atoms, charges, 9.0)
    supercell, supercell_charges = rock_salt(repeat=2)
    assert coulomb_energy("ewald", supercell, supercell_charges, 9.0) == pytest.approx(8 * energy, rel=1e-9)
    madelung = -energy / 4 * 2.82 / KE
    damped_shifted = -coulomb_energy("damped_shifted", atoms, charges, 12.0, alpha=0.2) / 4 * 2.82 / KE
    assert abs(damped_shifted - madelung) / madelung < 2e-3
    # guard: the plain truncated lattice sum (mlip's, once) is nowhere near, and changes sign with the cutoff
    truncated = [coulomb_energy("mlip_parity", atoms, charges, cutoff) / 2 / 4 for cutoff in (8.0, 10.0)]
    assert truncated[0] == pytest.approx(21.31, abs=0.05) and truncated[1] == pytest.approx(-16.15, abs=0.05)
    assert all(abs(-e * 2.82 / KE - madelung) > 1.0 for e in truncated)


@pytest.mark.parametrize("total_charge", [0.0, 0.5])
def test_ewald_agrees_with_torch_pme(total_charge):
    """torch-pme's EwaldCalculator (Gaussian smearing s = 1 / (sqrt(2) a)) on a triclinic cell of random charges;
    its reciprocal cutoff is pi / lr_wavelength, so a wavelength of pi / k_max keeps every k vector ours has."""
    import torchpme

    atoms = cu_au_triclinic().repeat((2, 2, 2))
    charges = np.random.default_rng(0).normal(size=len(atoms))
    charges += (total_charge - charges.sum()) / len(atoms)
    cutoff, accuracy = 8.0, 1e-12
    ours = coulomb_energy("ewald", atoms, charges, cutoff, accuracy=accuracy)
    alpha = ewald_alpha(cutoff, accuracy)
    configuration = Configuration(symbols=atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell.array, pbc=atoms.pbc)
    fields = long_range_fields(configuration, LongRangeInputs(cutoff), torch.float64)
    positions, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    sender, receiver = fields[keys.LR_EDGE_INDEX]
    distances = torch.linalg.norm(positions[receiver] - positions[sender] + fields[keys.LR_EDGE_CELL_SHIFTS] @ cell, dim=1)
    calculator = torchpme.EwaldCalculator(
        torchpme.CoulombPotential(smearing=1.0 / (math.sqrt(2.0) * alpha)),
        lr_wavelength=math.pi / ewald_k_max(alpha, accuracy),
        full_neighbor_list=True,
    ).to(torch.float64)
    q = torch.tensor(charges).unsqueeze(1)
    potentials = calculator(q, cell, positions, torch.stack([sender, receiver], 1), distances)
    theirs = KE * float((q * potentials).sum())
    assert ours == pytest.approx(theirs, rel=1e-10)


def test_damped_shifted_force_is_continuous_at_the_cutoff():
    cutoff = 6.0
    energies = {d: coulomb_energy("damped_shifted", dimer(d), [1, -1], cutoff, alpha=0.2, damping_radius=3.0) for d in
                (cutoff - 2e-4, cutoff - 1e-4, cutoff + 1e-4, cutoff + 1.0)}
    # beyond the cutoff only the self terms are left; inside, the pair term vanishes quadratically
    assert energies[cutoff + 1e-4] == energies[cutoff + 1.0]
    assert abs(energies[cutoff - 1e-4] - energies[cutoff + 1.0]) < 1e-7
    force = (energies[cutoff - 1e-4] - energies[cutoff - 2e-4]) / 1e-4
    assert abs(force) < 1e-3


def charge_model(name="nequip", method="damped_shifted", **coulomb):
    return build_small(name, **coulomb_options(method, **coulomb))


def charged_graph(model, atoms, total_charge):
    atoms = atoms.copy()
    atoms.info["charge"] = total_charge
    return graph_from_atoms(atoms, model.r_max, model.type_names, torch.float64, model.long_range_inputs)


@pytest.mark.parametrize("correction", ["uniform", "weighted"])
def test_charges_add_up_to_the_total_charge_in_a_batch(correction):
    model = charge_model(charge_correction=correction)
    structures = [ethanol(), cu_au_triclinic(), ethanol()]
    batch = batch_graphs([charged_graph(model, atoms, q) for atoms, q in zip(structures, (-1.0, 0.0, 1.0))])
    outputs = model(batch)
    sums = torch.zeros(3, dtype=torch.float64).index_add_(0, batch[keys.BATCH], outputs[keys.CHARGES])
    assert torch.allclose(sums, torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64), rtol=0, atol=1e-12)
    assert not torch.allclose(outputs[keys.RAW_TOTAL_CHARGE], sums, atol=1e-6)
    assert float(outputs[keys.CHARGES][:9].std()) > 1e-4


def test_without_correction_charges_are_the_raw_ones():
    model = charge_model(charge_correction="none")
    outputs = model(charged_graph(model, ethanol(), 1.0))
    assert float(outputs[keys.CHARGES].sum()) == pytest.approx(float(outputs[keys.RAW_TOTAL_CHARGE][0]), abs=1e-14)


def test_an_unseen_total_charge_is_an_error_naming_it():
    model = charge_model()
    with pytest.raises(ValueError, match=r"total charge \[2.0\] was not seen in training.*\[-1.0, 0.0, 1.0\]"):
        model(charged_graph(model, ethanol(), 2.0))
    continuous = build_small("nequip", use_total_charge_embedding="continuous", predict_partial_charges=True)
    energies = [float(continuous(charged_graph(continuous, ethanol(), q))[keys.ENERGY]) for q in (0.0, 2.0)]
    assert abs(energies[0] - energies[1]) > 1e-6


def finite_difference_forces_and_stress(model, atoms, total_charge, components, h=1e-5):
    def energy(candidate):
        return float(model(charged_graph(model, candidate, total_charge))[keys.ENERGY].detach()[0])

    forces = []
    for atom, axis in components:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        forces.append(-(energy(plus) - energy(minus)) / (2 * h))
    stress = None
    if atoms.pbc.all():
        stress = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                values = []
                for sign in (1, -1):
                    strain = np.eye(3)
                    strain[a, b] += sign * h
                    strained = atoms.copy()
                    strained.set_cell(atoms.cell.array @ strain, scale_atoms=True)
                    values.append(energy(strained))
                stress[a, b] = (values[0] - values[1]) / (2 * h) / atoms.get_volume()
    return np.array(forces), stress


COMPONENTS = [(0, 0), (1, 1), (3, 2), (5, 0)]


@pytest.mark.parametrize(
    "name, method, structure, correction",
    [("nequip", "damped_shifted", "molecule", "uniform"), ("mace", "damped_shifted", "crystal", "weighted"),
     ("nequip", "ewald", "crystal", "uniform"), ("mace", "ewald", "molecule", "weighted"),
     ("nequip", "mlip_parity", "molecule", "uniform")],
)
def test_forces_and_stress_are_gradients_including_the_charges_response(name, method, structure, correction):
    model = charge_model(name, method, charge_correction=correction)
    atoms = ethanol() if structure == "molecule" else cu_au_triclinic().repeat((1, 2, 2))
    outputs = model(charged_graph(model, atoms, 1.0))
    numerical, stress = finite_difference_forces_and_stress(model, atoms, 1.0, COMPONENTS)
    analytic = np.array([float(outputs[keys.FORCES][atom, axis]) for atom, axis in COMPONENTS])
    assert np.abs(analytic - numerical).max() <= 1e-7 * max(1.0, np.abs(numerical).max())
    if stress is not None:
        assert np.abs(outputs[keys.STRESS][0].detach().numpy() - stress).max() <= 1e-7


def test_negative_control_forces_without_the_charges_response_fail(monkeypatch):
    model = charge_model()
    atoms = ethanol()
    numerical, _ = finite_difference_forces_and_stress(model, atoms, 1.0, COMPONENTS)
    forward = model.partial_charges.forward

    def detached(*args, **kwargs):
        charges, raw, weights = forward(*args, **kwargs)
        return charges.detach(), raw, weights

    monkeypatch.setattr(model.partial_charges, "forward", detached)
    outputs = model(charged_graph(model, atoms, 1.0))
    analytic = np.array([float(outputs[keys.FORCES][atom, axis]) for atom, axis in COMPONENTS])
    assert np.abs(analytic - numerical).max() > 1e-4


@pytest.mark.parametrize("method", ["damped_shifted", "ewald"])
def test_energy_and_charges_are_invariant_and_forces_equivariant(method):
    model = charge_model("nequip", method)
    atoms = cu_au_triclinic().repeat((1, 2, 1))
    outputs = model(charged_graph(model, atoms, -1.0))
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2)))[0].numpy()
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.array([0.3, -1.1, 2.0])
    moved.cell = atoms.cell.array @ rotation.T
    order = np.random.default_rng(0).permutation(len(atoms))
    moved = moved[order]
    moved_outputs = model(charged_graph(model, moved, -1.0))
    assert relative_error(moved_outputs[keys.ENERGY], outputs[keys.ENERGY]) <= 1e-10
    assert relative_error(moved_outputs[keys.CHARGES], outputs[keys.CHARGES][order]) <= 1e-10
    assert relative_error(moved_outputs[keys.FORCES], outputs[keys.FORCES][order] @ torch.tensor(rotation).T) <= 1e-9


def test_dipole_of_the_predicted_charges():
    model = charge_model()
    atoms = ethanol()
    outputs = model(charged_graph(model, atoms, 0.0))
    expected = (outputs[keys.CHARGES].unsqueeze(1) * torch.tensor(atoms.positions)).sum(0)
    assert relative_error(outputs[keys.DIPOLE][0], expected) <= 1e-12
    assert torch.isnan(model(charged_graph(model, cu_au_triclinic(), 0.0))[keys.DIPOLE]).all()


def test_ewald_refuses_partly_periodic_structures():
    model = charge_model("nequip", "ewald")
    slab = cu_au_triclinic()
    slab.pbc = [True, True, False]
    with pytest.raises(ValueError, match="periodic in all three directions or in none"):
        charged_graph(model, slab, 0.0)


def test_coulomb_options_are_checked():
    with pytest.raises(ValueError, match="mlip_parity reproduces mlip"):
        build_small("nequip", use_coulomb_term=True, coulomb=dict(method="mlip_parity", damping_radius=3.0))
    with pytest.raises(ValueError, match="needs available_total_charges"):
        build_small("nequip", use_total_charge_embedding=True)
    model = build_small("nequip", use_coulomb_term=True)
    assert model.config.predict_partial_charges and model.config.coulomb.method == "damped_shifted"


def charged_molecule_frames(count, seed):
    """Rattled ethanol with EMT energies and forces, and made-up charge labels that add up to a total charge of -1, 0 or 1."""
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator

    rng = np.random.default_rng(seed)
    base = {"H": 0.1, "C": -0.1, "O": -0.4}
    frames = []
    for index in range(count):
        atoms = ethanol()
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        total_charge = float(index % 3 - 1)
        charges = np.array([base[s] for s in atoms.get_chemical_symbols()]) + rng.normal(scale=0.05, size=len(atoms))
        charges += (total_charge - charges.sum()) / len(atoms)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, charges=charges, dipole=charges @ atoms.positions)
        atoms.info["charge"] = total_charge
        frames.append(atoms)
    return frames


def test_training_with_charges_coulomb_and_the_total_charge_embedding(tmp_path, capsys):
    from ase.io import write

    from mlipkit.calculators import MLIPCalculator
    from mlipkit.cli import eval as eval_cli
    from mlipkit.models.checkpoint import read_checkpoint
    from mlipkit.train import ConfigError, Trainer, parse_config

    path = tmp_path / "charged.xyz"
    write(path, charged_molecule_frames(18, 0), format="extxyz")
    values = {
        "data": {"train": str(path), "batch_size": 3, "validation_fraction": 0.34, "test_fraction": 0.0, "shuffle_seed": 1},
        "model": {
            "name": "nequip", "r_max": 3.5, "num_layers": 1, "max_ell": 1, "num_features": 4, "radial_mlp_hidden": [8],
            "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}", "use_coulomb_term": True,
            "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
            "use_total_charge_embedding": True, "coulomb": {"long_range_cutoff": 6.0, "damping_radius": 2.0},
        },
        "loss": {"energy": {"weight": 0.01}, "forces": {"weight": 0.01}, "charges": {"weight": 100.0}},
        "optimizer": {"lr": 0.01}, "ema_decay": None, "max_epochs": 6, "dtype": "float64", "output_dir": str(tmp_path / "run"),
    }
    trainer = Trainer(parse_config(values), progress=False)
    result = trainer.run()
    assert read_checkpoint(result.best_checkpoint)["config"]["available_total_charges"] == [-1.0, 0.0, 1.0]
    lines = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = lines[0].split(",")
    for column in ("train_charges_mae", "validation_charges_rmse", "validation_total_charge_mae", "validation_dipole_mae"):
        assert column in header, column
    column = lambda name: [float(line.split(",")[header.index(name)]) for line in lines[1:]]  # noqa: E731
    assert column("validation_loss")[-1] < 0.7 * column("validation_loss")[0], column("validation_loss")
    assert column("validation_charges_mae")[-1] < column("validation_charges_mae")[0], column("validation_charges_mae")
    assert trainer.losses["dipole"].weight == 0.0 and trainer.losses["charges"].weight == 100.0

    assert eval_cli.main([str(result.best_checkpoint), str(path)]) == 0
    printed = capsys.readouterr().out
    assert "charges MAE" in printed and "dipole  MAE" in printed and "total_charge MAE" in printed

    atoms = charged_molecule_frames(1, 5)[0]
    atoms.calc = MLIPCalculator(str(result.best_checkpoint))
    atoms.info["charge"] = 1.0
    charges = atoms.get_charges()
    assert charges.sum() == pytest.approx(1.0, abs=1e-12)
    assert atoms.calc.get_property("dipole", atoms) == pytest.approx(charges @ atoms.positions, abs=1e-12)

    values["data"]["validation"] = str(tmp_path / "other.xyz")
    frames = charged_molecule_frames(2, 1)
    frames[0].info["charge"] = 2.0
    write(values["data"]["validation"], frames, format="extxyz")
    with pytest.raises(ConfigError, match=r"total charges \[2.0\] that no training structure has"):
        Trainer(parse_config(values), progress=False).build()

    frames = charged_molecule_frames(2, 2)
    frames[0].set_cell(np.eye(3) * 12.0)
    frames[0].pbc = True
    write(values["data"]["validation"], frames, format="extxyz")
    values["loss"]["dipole"] = {"weight": 1.0}
    with pytest.raises(ConfigError, match="loss.dipole: the data holds periodic structures"):
        Trainer(parse_config(values), progress=False).build()
