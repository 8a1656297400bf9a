"""Models with charges compiled: artifacts = eager model, the C++ runtime, the two-pass charge correction, LAMMPS."""

import numpy as np
import pytest
import torch
from conftest import artifact_model, cu_au_triclinic, ethanol, relative_error
from test_lammps import AGREEMENT, ase_reference, largest_relative_difference, read_single_point, run_lammps, single_point_deck
from test_lammps import tilted_cu_au, write_data

from mlipkit.compile import Artifact
from mlipkit.compile.artifact import artifact_inputs
from mlipkit.data import batch_graphs, graph_from_atoms, keys
from mlipkit.data.neighbours import ewald_k_indices

CHARGE_ARTIFACTS = ["charges_torchscript_float64", "charges_aotinductor_float64", "ewald_torchscript_float64"]


def charged_graph(source, atoms, total_charge):
    atoms = atoms.copy()
    atoms.info["charge"] = total_charge
    return graph_from_atoms(atoms, source.r_max, source.type_names, torch.float64, source.long_range_inputs)


def structures():
    return {"molecule": (ethanol(), 1.0), "crystal": (cu_au_triclinic().repeat((2, 1, 2)), -1.0)}


@pytest.mark.parametrize("name", CHARGE_ARTIFACTS + ["charges_torchscript_float64_ase"])
def test_charge_artifacts_equal_the_eager_model(artifacts, name):
    path, _ = artifacts[name]
    artifact = Artifact(path)
    model = artifact_model(name)
    assert artifact.metadata.long_range_cutoff == 6.0 and artifact.metadata.available_total_charges == ["-1.0", "0.0", "1.0"]
    for structure, (atoms, total_charge) in structures().items():
        expected = model(charged_graph(model, atoms, total_charge))
        produced = artifact(charged_graph(artifact, atoms, total_charge))
        for output in (keys.ENERGY, keys.FORCES, keys.CHARGES, keys.VIRIAL):
            assert relative_error(produced[output], expected[output]) <= 1e-10, (structure, output)
        assert float(produced[keys.CHARGES].sum()) == pytest.approx(total_charge, abs=1e-12)


def test_artifact_refuses_an_unseen_total_charge(artifacts):
    from mlipkit import _runtime

    path, _ = artifacts["charges_torchscript_float64"]
    artifact = Artifact(path)
    graph = charged_graph(artifact, ethanol(), 2.0)
    with pytest.raises(ValueError, match=r"total charge 2.0 was not seen in training; the model knows \[-1.0, 0.0, 1.0\]"):
        artifact(graph)
    inputs = artifact_inputs(graph, artifact.metadata.inputs, torch.float64)
    with pytest.raises(ValueError, match="total charge 2.000000 was not seen in training"):
        _runtime.Model(str(path)).evaluate(
            inputs[keys.ATOM_TYPES], inputs[keys.EDGE_INDEX], inputs[keys.EDGE_VECTORS], total_charge=2.0,
            lr_edge_index=inputs[keys.LR_EDGE_INDEX], lr_edge_vectors=inputs[keys.LR_EDGE_VECTORS],
        )


@pytest.mark.parametrize("name", ["charges_torchscript_float64", "ewald_torchscript_float64"])
def test_cpp_runtime_equals_python(artifacts, name):
    from mlipkit import _runtime

    path, _ = artifacts[name]
    artifact = Artifact(path)
    runtime = _runtime.Model(str(path))
    for structure, (atoms, total_charge) in structures().items():
        graph = charged_graph(artifact, atoms, total_charge)
        expected = artifact(graph)
        inputs = artifact_inputs(graph, artifact.metadata.inputs, torch.float64)
        extra = {name: inputs[name] for name in (keys.LR_EDGE_INDEX, keys.LR_EDGE_VECTORS, keys.POSITIONS, keys.K_INDICES) if name in inputs}
        if keys.CELL in inputs:
            extra.update(cell=inputs[keys.CELL][0], pbc=inputs[keys.PBC][0])
        results = runtime.evaluate(
            inputs[keys.ATOM_TYPES], inputs[keys.EDGE_INDEX], inputs[keys.EDGE_VECTORS], total_charge=total_charge, **extra
        )
        assert relative_error(results["energy"], expected[keys.ENERGY][0]) <= 1e-12
        for mine, theirs in (("forces", keys.FORCES), ("virial", keys.VIRIAL), ("atomic_virials", keys.NODE_VIRIALS), ("charges", keys.CHARGES)):
            assert relative_error(results[mine], expected[theirs].reshape(results[mine].shape)) <= 1e-12, (structure, mine)
    cell = torch.tensor(cu_au_triclinic().cell.array)
    assert torch.equal(_runtime.ewald_k_indices(cell, 3.1), torch.tensor(ewald_k_indices(cell.numpy(), 3.1), dtype=torch.float64))


@pytest.mark.parametrize("name", ["charges_torchscript_float64", "charges_aotinductor_float64"])
def test_charge_correction_entry_point(artifacts, name):
    """The forward-only entry gives the eager model's correction terms, in Python and in C++, at a given shift."""
    from mlipkit import _runtime

    path, _ = artifacts[name]
    artifact = Artifact(path)
    model = artifact_model(name)
    assert artifact.metadata.entry_points == [keys.CHARGE_CORRECTION_TERMS]
    assert keys.CHARGE_CORRECTION_TERMS not in artifact.metadata.outputs
    graph = charged_graph(artifact, cu_au_triclinic().repeat((2, 1, 2)), -1.0)
    graph.update({keys.NODE_ENERGY_MASK: torch.arange(8) % 2 == 0, keys.CHARGE_SHIFT: torch.tensor([0.05], dtype=torch.float64),
                  keys.CHARGE_SHIFT_WEIGHT: torch.zeros(1, dtype=torch.float64)})
    expected = model(graph)[keys.CHARGE_CORRECTION_TERMS][0]
    inputs = artifact_inputs(graph, artifact.metadata.inputs, torch.float64)
    assert relative_error(artifact.run_entry(keys.CHARGE_CORRECTION_TERMS, **inputs)[0], expected) <= 1e-12
    produced = _runtime.Model(str(path)).charge_correction_terms(
        inputs[keys.ATOM_TYPES], inputs[keys.EDGE_INDEX], inputs[keys.EDGE_VECTORS], inputs[keys.NODE_ENERGY_MASK],
        total_charge=-1.0, charge_shift=0.05, charge_shift_weight=0.0, lr_edge_index=inputs[keys.LR_EDGE_INDEX],
        lr_edge_vectors=inputs[keys.LR_EDGE_VECTORS],
    )
    assert relative_error(produced, expected) <= 1e-12


@pytest.mark.parametrize("correction", ["uniform", "weighted"])
def test_two_passes_over_parts_of_a_system_equal_the_whole(correction):
    """What several LAMMPS ranks do: each counts its own atoms; pass 1 gives sums and dE/dc terms at c = 0, summed
    into the shift c and its weight; pass 2 with them gives energies and forces that add up to the whole system's."""
    from conftest import build_small, coulomb_options

    model = build_small("mace", **coulomb_options(charge_correction=correction))
    atoms = cu_au_triclinic().repeat((2, 2, 1))
    whole = model(charged_graph(model, atoms, 1.0))
    parts = [torch.arange(len(atoms)) % 3 == k for k in range(3)]
    terms = torch.zeros(4, dtype=torch.float64)
    for mask in parts:
        graph = charged_graph(model, atoms, 1.0)
        graph.update({keys.NODE_ENERGY_MASK: mask, keys.CHARGE_SHIFT: torch.zeros(1, dtype=torch.float64),
                      keys.CHARGE_SHIFT_WEIGHT: torch.zeros(1, dtype=torch.float64)})
        terms += model(graph)[keys.CHARGE_CORRECTION_TERMS][0]
    shift = (terms[0] - 1.0) / terms[1]
    weight = (terms[2] + shift * terms[3]) / terms[1]
    energy, forces = 0.0, torch.zeros(len(atoms), 3, dtype=torch.float64)
    for mask in parts:
        graph = charged_graph(model, atoms, 1.0)
        graph.update({keys.NODE_ENERGY_MASK: mask, keys.CHARGE_SHIFT: shift.reshape(1), keys.CHARGE_SHIFT_WEIGHT: weight.reshape(1)})
        outputs = model(graph)
        energy += float(outputs[keys.ENERGY][0])
        forces += outputs[keys.FORCES]
        assert relative_error(outputs[keys.CHARGES], whole[keys.CHARGES]) <= 1e-12
    assert energy == pytest.approx(float(whole[keys.ENERGY][0]), rel=1e-12)
    assert relative_error(forces, whole[keys.FORCES]) <= 1e-10
    # without the weight's term the forces miss the correction's dependence on the positions
    graph.update({keys.CHARGE_SHIFT_WEIGHT: torch.zeros(1, dtype=torch.float64)})
    assert relative_error(sum(model(dict(graph, **{keys.NODE_ENERGY_MASK: m}))[keys.FORCES] for m in parts), whole[keys.FORCES]) > 1e-6


def lammps_single_point(directory, atoms, artifact, total_charge, ranks=1, units="metal", comm=None):
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, directory / "data.lmp", elements)
    pair_style = f"mlip charge {total_charge}" + (f" comm {comm}" if comm else "")
    deck = single_point_deck(artifact, elements, units, bool(atoms.pbc.all()), pair_style=pair_style)
    run_lammps(directory, deck, ranks)
    return read_single_point(directory, units)


def charged_reference(atoms, artifact, total_charge):
    atoms = atoms.copy()
    atoms.info["charge"] = total_charge
    return ase_reference(atoms, artifact)


LAMMPS_CASES = {"crystal": (lambda: tilted_cu_au(3, 1), -1.0), "molecule": (ethanol, 1.0)}


@pytest.mark.parametrize("ranks, comm", [(1, "halo"), (2, "halo"), (4, "halo"), (2, "shell")])
@pytest.mark.parametrize("case", sorted(LAMMPS_CASES))
def test_lammps_with_charges_equals_ase(artifacts, tmp_path, case, ranks, comm):
    """On several ranks the halo exchange also carries the charges the Coulomb sum reads."""
    path, _ = artifacts["charges_torchscript_float64"]
    build, total_charge = LAMMPS_CASES[case]
    atoms = build()
    result = lammps_single_point(tmp_path, atoms, path, total_charge, ranks, comm=comm)
    differences = largest_relative_difference(result, charged_reference(atoms, path, total_charge))
    assert max(differences.values()) <= AGREEMENT, differences


def test_lammps_ewald_on_one_rank_and_its_refusals(artifacts, tmp_path):
    path, _ = artifacts["ewald_torchscript_float64"]
    atoms = tilted_cu_au(2, 3)
    (tmp_path / "one").mkdir()
    result = lammps_single_point(tmp_path / "one", atoms, path, 0.0)
    differences = largest_relative_difference(result, charged_reference(atoms, path, 0.0))
    assert max(differences.values()) <= AGREEMENT, differences
    (tmp_path / "two").mkdir()
    write_data(atoms, tmp_path / "two" / "data.lmp", ["Au", "Cu"])
    run = run_lammps(tmp_path / "two", single_point_deck(path, ["Au", "Cu"], "metal", True), ranks=2, check=False)
    assert run.returncode != 0 and "sums its electrostatics by Ewald, which runs on one MPI rank" in run.stdout + run.stderr


def test_lammps_refuses_kspace_and_unseen_charges(artifacts, tmp_path):
    path, _ = artifacts["charges_torchscript_float64"]
    write_data(tilted_cu_au(2, 3), tmp_path / "data.lmp", ["Au", "Cu"])
    plain = single_point_deck(artifacts["torchscript_float64"][0], ["Au", "Cu"], "metal", True, pair_style="mlip charge 1")
    run = run_lammps(tmp_path, plain, check=False)
    assert run.returncode != 0 and "takes no total charge" in run.stdout + run.stderr
    deck = single_point_deck(path, ["Au", "Cu"], "metal", True, pair_style="mlip charge 2")
    run = run_lammps(tmp_path, deck, check=False)
    assert run.returncode != 0 and "trained on the total charges -1 0 1 only" in run.stdout + run.stderr
    # charges in the atom style, for a kspace style to use
    data = (tmp_path / "data.lmp").read_text().split("Atoms # atomic\n\n")
    atoms_lines = [" ".join(line.split()[:2] + ["0.0"] + line.split()[2:]) for line in data[1].splitlines()]
    (tmp_path / "data.lmp").write_text(data[0] + "Atoms # charge\n\n" + "\n".join(atoms_lines) + "\n")
    deck = f"""
units metal
atom_style charge
read_data data.lmp
pair_style hybrid/overlay mlip coul/long 8.0
pair_coeff * * mlip {path} Au Cu
pair_coeff * * coul/long
kspace_style ewald 1e-6
kspace_modify gewald 0.3
run 0
"""
    run = run_lammps(tmp_path, deck, check=False)
    assert run.returncode != 0 and "remove kspace_style" in run.stdout + run.stderr


@pytest.fixture(scope="module")
def smooth_charge_artifact(tmp_path_factory):
    """A float64 Cu/Au model with charges and a damped shifted Coulomb term, its network scaled to 0.1 eV and its
    raw charges to a tenth (the random network's charges of about 0.3 e pull the atoms together)."""
    from conftest import build_small, coulomb_options, shared_directory
    from filelock import FileLock

    from mlipkit.compile import compile_model

    path = shared_directory(tmp_path_factory) / "smooth_charges.pt"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            model = build_small(
                "nequip", type_names=["Cu", "Au"], per_type_energy_shifts=[-3.5, -3.8], per_type_energy_scales=0.1,
                **coulomb_options(),
            )
            with torch.no_grad():
                model.partial_charges.readout.out.weight.mul_(0.1)
            compile_model(model, path, mode="torchscript")
    return path


def test_nve_with_charges_on_two_ranks_conserves_energy(smooth_charge_artifact, tmp_path):
    """1000 steps of 1 fs at 300 K on two ranks, total charge -1: the two-pass charge correction and the
    damped shifted force's smooth cutoff leave no drift (bound as in test_lammps.test_nve_conserves_energy)."""
    from test_lammps import md_deck, read_thermo

    atoms = tilted_cu_au(2, 3)
    write_data(atoms, tmp_path / "data.lmp", ["Au", "Cu"])
    deck = md_deck(smooth_charge_artifact, ["Au", "Cu"], 1000, 0.001, 300.0).replace("pair_style mlip", "pair_style mlip charge -1")
    run_lammps(tmp_path, deck, ranks=2)
    thermo = read_thermo(tmp_path)
    time, total, kinetic = thermo[:, 1], thermo[:, 2], thermo[:, 4]
    drift_per_atom_per_ps = np.polyfit(time, total, 1)[0] / len(atoms)
    print(f"NVE with charges, 2 ranks: drift {drift_per_atom_per_ps:.2e} eV/atom/ps, fluctuation {total.std() / len(atoms):.2e} eV/atom")
    assert len(thermo) == 101 and abs(drift_per_atom_per_ps) <= 1e-5
    assert total.std() / len(atoms) <= 1e-4 * kinetic.mean() / len(atoms)


def test_total_charge_embedding_alone_compiles(tmp_path):
    """A model with only the (continuous) total-charge embedding takes just the total charge."""
    from conftest import build_small

    from mlipkit.compile import compile_model

    model = build_small("nequip", use_total_charge_embedding="continuous")
    path = tmp_path / "embedding.pt"
    compile_model(model, path, mode="torchscript", target="ase")
    artifact = Artifact(path)
    assert artifact.metadata.inputs[-1] == keys.TOTAL_CHARGE and not artifact.predicts_charges
    energies = []
    for total_charge in (0.0, 2.5):
        expected = model(charged_graph(model, ethanol(), total_charge))
        produced = artifact(charged_graph(artifact, ethanol(), total_charge))
        assert relative_error(produced[keys.FORCES], expected[keys.FORCES]) <= 1e-10
        energies.append(float(produced[keys.ENERGY][0]))
    assert abs(energies[0] - energies[1]) > 1e-6
