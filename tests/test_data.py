from pathlib import Path

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.singlepoint import SinglePointCalculator
from ase.neighborlist import neighbor_list as ase_neighbor_list

from conftest import STRUCTURES, TYPE_NAMES, cu_au_triclinic, ethanol
from mlipkit.data import (
    batch_graphs,
    compute_edge_vectors,
    compute_statistics,
    graph_from_atoms,
    graph_from_configuration,
    keys,
    read_extxyz,
)


def edge_set(edge_index, shifts):
    return sorted(zip(edge_index[0].tolist(), edge_index[1].tolist(), map(tuple, np.asarray(shifts).astype(int).tolist())))


SMALL_CELL = bulk("Cu", "fcc", a=3.6)  # one atom, cell far smaller than the cutoff


@pytest.mark.parametrize(
    "atoms",
    [*(make() for make in STRUCTURES.values()), SMALL_CELL, Atoms("Cu2", positions=[[0, 0, 0], [10, 0, 0]])],
    ids=[*STRUCTURES, "small_cell", "isolated_pair"],
)
def test_neighbour_list_matches_ase(atoms):
    r_max = 4.0
    graph = graph_from_atoms(atoms, r_max, TYPE_NAMES)
    i, j, shifts = ase_neighbor_list("ijS", atoms, r_max)
    assert edge_set(graph[keys.EDGE_INDEX], graph[keys.EDGE_CELL_SHIFTS]) == edge_set(np.stack([i, j]), shifts)
    receivers = graph[keys.EDGE_INDEX][1]
    assert torch.all(receivers[1:] >= receivers[:-1]), "edges must be sorted by receiver"
    vectors = compute_edge_vectors(graph)
    if len(i):
        assert float(vectors.norm(dim=1).max()) < r_max
    expected = atoms.positions[j] - atoms.positions[i] + shifts @ atoms.cell.array
    assert np.allclose(np.sort(vectors.numpy(), axis=0), np.sort(expected, axis=0), atol=1e-10)


def test_isolated_atoms_have_no_edges():
    graph = graph_from_atoms(Atoms("Cu2", positions=[[0, 0, 0], [10, 0, 0]]), 4.0, TYPE_NAMES)
    assert graph[keys.EDGE_INDEX].shape == (2, 0)


def test_atoms_on_top_of_each_other_are_rejected():
    with pytest.raises(ValueError, match="atoms 0 and 1 are .* apart"):
        graph_from_atoms(Atoms("Cu2", positions=[[1, 1, 1], [1, 1, 1]]), 4.0, TYPE_NAMES)


def test_unknown_species_named():
    with pytest.raises(ValueError, match=r"\['Fe', 'Zn'\] are not known to the model"):
        graph_from_atoms(Atoms("FeZnCu", positions=[[0, 0, 0], [2, 0, 0], [0, 2, 0]]), 4.0, TYPE_NAMES)


def test_periodic_cell_without_volume_rejected():
    with pytest.raises(ValueError, match="non-zero volume"):
        graph_from_atoms(Atoms("Cu", positions=[[0, 0, 0]], cell=np.zeros((3, 3)), pbc=True), 4.0, TYPE_NAMES)


def test_batching_offsets_and_fields():
    structures = [cu_au_triclinic(), ethanol(), SMALL_CELL]
    graphs = [graph_from_atoms(a, 4.0, TYPE_NAMES) for a in structures]
    batched = batch_graphs(graphs)
    sizes = [len(a) for a in structures]
    assert batched[keys.BATCH].tolist() == sum(([i] * n for i, n in enumerate(sizes)), [])
    assert batched[keys.NUM_ATOMS].tolist() == sizes
    assert batched[keys.CELL].shape == (3, 3, 3)
    receivers = batched[keys.EDGE_INDEX][1]
    assert torch.all(receivers[1:] >= receivers[:-1])
    assert torch.allclose(compute_edge_vectors(batched), torch.cat([compute_edge_vectors(g) for g in graphs]))


def test_batching_mismatched_fields_rejected():
    a = graph_from_atoms(SMALL_CELL, 4.0, TYPE_NAMES)
    b = dict(a, energy=torch.zeros(1))
    with pytest.raises(ValueError, match="energy"):
        batch_graphs([a, b])


def labelled(atoms: Atoms, seed: int) -> Atoms:
    rng = np.random.default_rng(seed)
    atoms = atoms.copy()
    atoms.calc = SinglePointCalculator(
        atoms,
        energy=float(rng.normal()) * len(atoms),
        forces=rng.normal(size=(len(atoms), 3)),
        stress=rng.normal(size=6) if atoms.pbc.all() else None,
    )
    atoms.info["config_type"] = "bulk"
    atoms.arrays["charges"] = rng.normal(size=len(atoms))
    return atoms


@pytest.fixture
def dataset_file(tmp_path) -> Path:
    frames = [labelled(cu_au_triclinic(), 0), labelled(bulk("Cu", "fcc", a=3.62).repeat(2), 1)]
    isolated = Atoms("Cu", positions=[[0, 0, 0]])
    isolated.calc = SinglePointCalculator(isolated, energy=-0.25)
    isolated.info["config_type"] = "IsolatedAtom"
    path = tmp_path / "data.xyz"
    ase.io.write(path, frames + [isolated], format="extxyz")
    return path


def test_read_extxyz_labels(dataset_file):
    configurations = read_extxyz(dataset_file, required=("energy", "forces"))
    assert len(configurations) == 3
    first = ase.io.read(dataset_file, index=0)
    assert configurations[0].energy == pytest.approx(first.get_potential_energy())
    assert np.allclose(configurations[0].forces, first.get_forces())
    assert configurations[0].stress.shape == (3, 3)
    assert np.allclose(configurations[0].stress[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]], first.get_stress())
    assert configurations[0].charges.shape == (len(first),)
    assert configurations[0].info["config_type"] == "bulk"
    assert configurations[2].is_isolated_atom
    graph = graph_from_configuration(configurations[0], 4.0, TYPE_NAMES)
    assert graph[keys.ENERGY].shape == (1,) and graph[keys.STRESS].shape == (1, 3, 3)


def test_read_extxyz_errors(tmp_path, dataset_file):
    with pytest.raises(FileNotFoundError, match="dataset file not found"):
        read_extxyz(tmp_path / "missing.xyz")
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is\nnot xyz at all\n")
    with pytest.raises(ValueError, match="not a readable extended-XYZ file"):
        read_extxyz(garbage)
    with pytest.raises(ValueError, match="frame 0: missing required label.*stress"):
        read_extxyz(_without_stress(tmp_path), required=("stress",))
    with pytest.raises(ValueError, match="unknown label"):
        read_extxyz(dataset_file, required=("enrgy",))


def _without_stress(tmp_path) -> Path:
    atoms = ethanol()
    atoms.calc = SinglePointCalculator(atoms, energy=1.0, forces=np.zeros((len(atoms), 3)))
    path = tmp_path / "molecule.xyz"
    ase.io.write(path, [atoms], format="extxyz")
    return path


def test_malformed_forces_named(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text(
        '2\nProperties=species:S:1:pos:R:3:REF_forces:R:2 REF_energy=1.0 pbc="F F F"\n'
        "Cu 0 0 0 1 1\nCu 2 0 0 1 1\n"
    )
    with pytest.raises(ValueError, match=r"frame 0: forces 'REF_forces' has shape \(2, 2\), expected \(2, 3\)"):
        read_extxyz(path, energy_key="REF_energy", forces_key="REF_forces")
    path.write_text('1\nProperties=species:S:1:pos:R:3 REF_energy=nan pbc="F F F"\nCu 0 0 0\n')
    with pytest.raises(ValueError, match="NaN"):
        read_extxyz(path, energy_key="REF_energy")


def test_statistics_against_hand_computed(dataset_file):
    configurations = read_extxyz(dataset_file)
    stats = compute_statistics(configurations, 4.0, TYPE_NAMES)
    frames = [c for c in configurations if not c.is_isolated_atom]
    per_atom = [c.energy / len(c.symbols) for c in frames]
    assert stats.num_configurations == 3 and stats.num_atoms == sum(len(c.symbols) for c in frames)
    assert stats.per_atom_energy_mean == pytest.approx(np.mean(per_atom), rel=1e-12)
    assert stats.per_atom_energy_std == pytest.approx(np.std(per_atom), rel=1e-12)
    assert stats.total_energy_std == pytest.approx(np.std([c.energy for c in frames]), rel=1e-12)
    all_forces = np.concatenate([c.forces for c in frames])
    assert stats.forces_rms == pytest.approx(np.sqrt(np.mean(all_forces**2)), rel=1e-12)
    symbols = sum((c.symbols for c in frames), [])
    for t, name in enumerate(TYPE_NAMES):
        mask = np.array([s == name for s in symbols])
        expected = np.sqrt(np.mean(all_forces[mask] ** 2)) if mask.any() else None
        assert stats.per_type_forces_rms[t] == (pytest.approx(expected, rel=1e-12) if expected else None)
    edges = sum(len(ase_neighbor_list("i", ase.io.read(dataset_file, index=k), 4.0)) for k in range(2))
    assert stats.num_neighbors_mean == pytest.approx(edges / stats.num_atoms, rel=1e-12)
    assert stats.isolated_atom_energies == {"Cu": -0.25}
    distances = [ase_neighbor_list("d", ase.io.read(dataset_file, index=k), 4.0).min() for k in range(2)]
    assert stats.avg_r_min == pytest.approx(np.mean(distances), rel=1e-12)


def test_statistics_energy_only_dataset(tmp_path):
    atoms = ethanol()
    atoms.calc = SinglePointCalculator(atoms, energy=-3.0)
    path = tmp_path / "e.xyz"
    ase.io.write(path, [atoms], format="extxyz")
    stats = compute_statistics(read_extxyz(path), 4.0, TYPE_NAMES)
    assert stats.forces_rms is None and stats.per_type_forces_rms is None
    assert stats.per_atom_energy_mean == pytest.approx(-3.0 / len(atoms))


def test_least_squares_atomic_energies_recover_per_type_energies(tmp_path):
    """Energies that are sums of per-type values plus noise give those values back (mace-torch's E0s "average");
    a type no structure has gets none."""
    rng = np.random.default_rng(0)
    true_energies = {"H": -13.6, "C": -1030.0, "O": -2040.0}
    frames = []
    for _ in range(12):
        symbols = list(rng.choice(list(true_energies), size=int(rng.integers(3, 9))))
        atoms = Atoms(symbols, positions=rng.uniform(0, 6, (len(symbols), 3)))
        atoms.calc = SinglePointCalculator(atoms, energy=sum(true_energies[s] for s in symbols) + rng.normal(scale=1e-3))
        frames.append(atoms)
    path = tmp_path / "molecules.xyz"
    ase.io.write(path, frames, format="extxyz")
    stats = compute_statistics(read_extxyz(path), 4.0, TYPE_NAMES)
    assert set(stats.least_squares_atomic_energies) == set(true_energies) < set(TYPE_NAMES)
    for name, value in true_energies.items():
        assert stats.least_squares_atomic_energies[name] == pytest.approx(value, abs=2e-3)
