"""mlip-import: other packages' model files give those packages' numbers in mlipkit, without running the files.

The mace-torch files and their energies, forces and stress come from mace-torch
0.3.16 itself (tools/mace_torch_reference.py --import-fixtures, run in
tools/peer_envs.sh's environment); mace-torch is not installed here.
"""

import collections
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.data import chemical_symbols

import mlipkit
from conftest import imported_source, relative_error
from mlipkit.cli import compile as compile_cli
from mlipkit.cli import import_ as import_cli
from mlipkit.cli import info as info_cli
from mlipkit.data import graph_from_atoms, keys
from mlipkit.importers import read_foreign_model
from mlipkit.importers.fairchem import fairchem_neighbour_caps
from mlipkit.importers.unpickling import FileHoldsCode, UnsupportedModel

DATA = Path(__file__).parent / "data" / "mace_import"
#: nequip 0.19.1 nequip-train checkpoints, their predictions and parameter counts (tools/nequip_reference.py)
NEQUIP = Path(__file__).parent / "data" / "nequip_import"
#: fairchem-core 1.10.0 trainer checkpoints and predictions (tools/fairchem_reference.py --import-fixtures)
FAIRCHEM = Path(__file__).parent / "data" / "fairchem_import"
#: every supported interaction-block pair, 1 and 3 elements, correlation 1-3, both coupling conventions, plain
#: MACE and ScaleShiftMACE, silu and tanh gates, float64 and float32
MACE_FILES = ["scaleshift_cu_c3", "scaleshift_hco_c2_reduced", "mace_hco_c1_tanh", "scaleshift_hco_float32"]
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
#: MACE-MP-0 (medium): tools/mace_torch_reference.py --mp0-model measures mace-torch's count at its hyperparameters
MP0_PARAMETERS = 4_688_656


def reference_atoms(structure: dict) -> Atoms:
    return Atoms(numbers=structure["numbers"].numpy(), positions=structure["positions"].numpy(),
                 cell=structure["cell"].numpy(), pbc=structure["pbc"])


def assert_equals_peer(model, reference: dict) -> None:
    dtype = getattr(torch, reference["dtype"])
    tolerance = TOLERANCE[reference["dtype"]]
    for structure in reference["structures"]:
        out = model(graph_from_atoms(reference_atoms(structure), model.r_max, model.type_names, dtype))
        assert relative_error(out[keys.ENERGY][0], structure["energy"]) <= tolerance
        assert relative_error(out[keys.FORCES], structure["forces"]) <= tolerance
        if "stress" in structure:
            assert relative_error(out[keys.STRESS].reshape(3, 3), structure["stress"].reshape(3, 3)) <= tolerance


@pytest.mark.parametrize("name", MACE_FILES)
def test_imported_mace_model_equals_mace_torch(name, tmp_path, capsys):
    """mlip-import writes a checkpoint whose model gives mace-torch's energies, forces and stress."""
    reference = torch.load(DATA / f"{name}.reference.pt", weights_only=True)
    checkpoint = tmp_path / "model.ckpt"
    assert import_cli.main([str(DATA / f"{name}.model"), str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    elements = sorted({chemical_symbols[int(z)] for s in reference["structures"] for z in s["numbers"]}, key=chemical_symbols.index)
    for line in ("format      mace-torch model file", f"elements    {' '.join(elements)}",
                 f"parameters  {reference['parameters']:,}", "cutoff      4.5 A", f"dtype       {reference['dtype']}",
                 f"wrote {checkpoint}"):
        assert line in printed, printed
    model = mlipkit.load_checkpoint(checkpoint)
    assert sum(p.numel() for p in model.parameters()) == reference["parameters"]
    assert_equals_peer(model, reference)


def test_state_dict_checkpoint_with_its_run_arguments():
    """mace_run_train's {'model': state_dict} checkpoint, with the YAML it was trained from."""
    imported = read_foreign_model(DATA / "scaleshift_cu_c3_run-0_epoch-4.pt", DATA / "scaleshift_cu_c3_config.yaml")
    assert imported.imported_from["format"] == "mace-torch state-dict checkpoint"
    assert_equals_peer(imported.model, torch.load(DATA / "scaleshift_cu_c3.reference.pt", weights_only=True))


def test_state_dict_checkpoint_without_avg_num_neighbors_names_it(tmp_path):
    lines = (DATA / "scaleshift_cu_c3_config.yaml").read_text().splitlines()
    arguments = tmp_path / "config.yaml"
    arguments.write_text("\n".join(line for line in lines if not line.startswith("avg_num_neighbors")))
    with pytest.raises(ValueError, match="avg_num_neighbors is missing.*Average number of neighbors"):
        read_foreign_model(DATA / "scaleshift_cu_c3_run-0_epoch-4.pt", arguments)


def test_mlip_info_shows_where_an_imported_checkpoint_came_from(tmp_path, capsys):
    checkpoint = tmp_path / "model.ckpt"
    source = imported_source("imported_mace_torchscript_float64")[0]
    assert import_cli.main([source, str(checkpoint)]) == 0
    capsys.readouterr()
    assert info_cli.main([str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    for line in ("imported_from.format", "mace-torch model file", f"imported_from.sha256          {digest}",
                 "imported_from.source_class    ScaleShiftMACE", "parameters                    11904"):
        assert line in printed, printed


def test_mace_mp0_sized_model_has_mace_torch_parameter_count():
    """MACE-MP-0's published hyperparameters (89 elements) give mace-torch's parameter count in mlipkit."""
    model = mlipkit.build_model(
        "mace", type_names=chemical_symbols[1:90], r_max=6.0, hidden_irreps="128x0e + 128x1o", max_ell=3, correlation=3,
        radial_mlp_hidden=[64, 64, 64], num_bessel=10, num_polynomial_cutoff=5, use_reduced_cg=False,
    )
    assert sum(p.numel() for p in model.parameters()) == MP0_PARAMETERS


def test_mlip_compile_takes_a_mace_file(tmp_path, capsys):
    """mlip-compile imports a foreign file first; the artifact gives mace-torch's numbers."""
    from mlipkit.calculators import MLIPCalculator

    artifact = tmp_path / "model.pt"
    arguments = [str(DATA / "scaleshift_cu_c3_run-0_epoch-4.pt"), str(artifact), "--run-arguments", str(DATA / "scaleshift_cu_c3_config.yaml")]
    assert compile_cli.main(arguments) == 0
    assert "imported" in capsys.readouterr().out
    reference = torch.load(DATA / "scaleshift_cu_c3.reference.pt", weights_only=True)
    for structure in reference["structures"]:
        atoms = reference_atoms(structure)
        atoms.calc = MLIPCalculator(artifact)
        assert atoms.get_potential_energy() == pytest.approx(float(structure["energy"]), rel=1e-10)
        assert relative_error(torch.from_numpy(atoms.get_forces()), structure["forces"]) <= 1e-10


#: each imported artifact and the fixture whose structures it is checked on
IMPORTED_ARTIFACTS = {
    "imported_mace_torchscript_float64": DATA / "scaleshift_hco_c2_reduced.reference.pt",
    "imported_nequip_torchscript_float64": NEQUIP / "nequip_hco_natural_parity.reference.pt",
    "imported_gemnet_oc_torchscript_float32": FAIRCHEM / "gemnet_oc_direct_ema.reference.pt",
}


@pytest.mark.parametrize("name", sorted(IMPORTED_ARTIFACTS))
def test_imported_artifact_equals_eager(artifacts, name):
    from conftest import artifact_model
    from mlipkit.compile.artifact import Artifact

    path, dtype = artifacts[name]
    model = artifact_model(name, dtype)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    for structure in torch.load(IMPORTED_ARTIFACTS[name], weights_only=True)["structures"]:
        atoms = reference_atoms({"pbc": True, **structure})
        graph = graph_from_atoms(atoms, model.r_max, model.type_names, dtype)
        eager, compiled = model(graph), Artifact(path)(graph)
        for output in (keys.ENERGY, keys.NODE_ENERGIES, keys.FORCES):
            assert relative_error(compiled[output], eager[output]) <= tolerance, output


@pytest.mark.parametrize("name, ranks", [("imported_mace_torchscript_float64", 1), ("imported_mace_torchscript_float64", 2),
                                         ("imported_nequip_torchscript_float64", 1)])
def test_lammps_runs_the_imported_model_with_the_peers_numbers(artifacts, tmp_path, name, ranks):
    """pair_style mlip on an imported artifact: the peer's energy and forces, ASE's per-atom virials."""
    from test_lammps import AGREEMENT, ase_reference, largest_relative_difference, single_point

    path = artifacts[name][0]
    structure = next(s for s in torch.load(IMPORTED_ARTIFACTS[name], weights_only=True)["structures"] if s["pbc"])
    atoms = reference_atoms(structure)
    result = single_point(tmp_path, atoms, path, ranks=ranks)
    assert result["energy"] == pytest.approx(float(structure["energy"]), rel=1e-10)
    assert np.abs(result["forces"] - structure["forces"].numpy()).max() <= 1e-9 * np.abs(structure["forces"].numpy()).max()
    differences = largest_relative_difference(result, ase_reference(atoms, path))
    assert max(differences.values()) <= AGREEMENT, differences


@pytest.mark.parametrize("name, file", [("nequip_cu_ema", "nequip_cu_ema.ckpt"), ("nequip_cu_ema", "nequip_cu_ema.nequip.zip"),
                                        ("nequip_hco_natural_parity", "nequip_hco_natural_parity.ckpt"),
                                        ("nequip_cu_float32", "nequip_cu_float32.ckpt")])
def test_imported_nequip_model_equals_nequip(name, file, tmp_path, capsys):
    """nequip's evaluation model (EMA weights where kept), from a checkpoint or a nequip-package archive: both
    parities, per-l widths, a readout MLP, trainable Bessel roots and shifts, float64 and float32."""
    reference = torch.load(NEQUIP / f"{name}.reference.pt", weights_only=True)
    checkpoint = tmp_path / "model.ckpt"
    assert import_cli.main([str(NEQUIP / file), str(checkpoint)]) == 0
    printed = capsys.readouterr().out
    kind = "package" if file.endswith(".zip") else "checkpoint"
    assert f"format      nequip {kind}" in printed and "NequIPGNNModel -> mlipkit nequip" in printed
    assert f"dtype       {reference['dtype']}" in printed
    assert_equals_peer(mlipkit.load_checkpoint(checkpoint), reference)


COUNTS = json.loads((NEQUIP / "counts.json").read_text())


@pytest.mark.parametrize("name", sorted(COUNTS["configurations"]))
def test_nequip_configurations_have_nequips_parameter_counts(name):
    """nequip's builder arguments (its presets too), through mlip-import's translation, give nequip's count."""
    from mlipkit.importers import nequip

    configuration = COUNTS["configurations"][name]
    options = nequip.mlipkit_options({**nequip.builder_arguments(configuration["arguments"]), "avg_num_neighbors": 20.0})
    model = mlipkit.build_model("nequip", type_names=COUNTS["type_names"], r_max=4.0, **options)
    assert sum(p.numel() for p in model.parameters()) == configuration["parameters"]


def test_nequip_checkpoints_mlipkit_cannot_reproduce_are_refused(tmp_path):
    checkpoint = torch.load(NEQUIP / "nequip_cu_ema.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["convnet_resnet"] = True
    torch.save(checkpoint, tmp_path / "resnet.ckpt")
    with pytest.raises(UnsupportedModel, match="convnet_resnet=True"):
        read_foreign_model(tmp_path / "resnet.ckpt")
    checkpoint = torch.load(NEQUIP / "nequip_cu_ema.ckpt", weights_only=True)
    checkpoint["hyper_parameters"]["model"]["_target_"] = "allegro.model.AllegroModel"
    torch.save(checkpoint, tmp_path / "allegro.ckpt")
    with pytest.raises(UnsupportedModel, match="'allegro.model.AllegroModel'"):
        read_foreign_model(tmp_path / "allegro.ckpt")


@pytest.mark.parametrize("name", ["gemnet_oc_direct_ema", "gemnet_oc_conservative"])
def test_imported_gemnet_oc_equals_fairchem(name, tmp_path, capsys):
    """What fairchem's trainer predicts (EMA weights, normalisers, element references); fairchem runs in float32,
    so forces are compared by norm (its own rounding reaches 1e-5 of the largest component)."""
    reference = torch.load(FAIRCHEM / f"{name}.reference.pt", weights_only=True)
    checkpoint = tmp_path / "model.ckpt"
    assert import_cli.main([str(FAIRCHEM / f"{name}.pt"), str(checkpoint), "--elements", "O", "Cu"]) == 0
    printed = capsys.readouterr().out
    assert "format      fairchem checkpoint" in printed and "GemNetOC -> mlipkit gemnet_oc" in printed and "elements    O Cu" in printed
    model = mlipkit.load_checkpoint(checkpoint)
    assert next(model.parameters()).dtype == torch.float32
    for structure in reference["structures"]:
        atoms = Atoms(numbers=structure["numbers"].numpy(), positions=structure["positions"].numpy(),
                      cell=structure["cell"].numpy(), pbc=True)
        out = model(graph_from_atoms(atoms, model.r_max, model.type_names, torch.float32))
        assert float(out[keys.ENERGY][0]) == pytest.approx(structure["energy"], rel=1e-6)
        forces = out[keys.FORCES].detach().double()
        assert float((forces - structure["forces"].double()).norm() / structure["forces"].double().norm()) <= 1e-5


def test_fairchem_neighbour_caps_are_spelled_out_as_fairchem_applies_them():
    """fairchem caps the embedding graph at 50 unless told otherwise (mlipkit's GemNet-OC caps nothing by
    default); an interaction that is off, or has no cap of its own, takes the embedding graph's."""
    caps = fairchem_neighbour_caps({"quad_interaction": True, "max_neighbors_qint": 8, "max_neighbors_aeaint": 20})
    assert (caps["max_neighbors"], caps["max_neighbors_qint"], caps["max_neighbors_aeaint"], caps["max_neighbors_aint"]) == (50, 8, 50, 50)
    caps = fairchem_neighbour_caps({"max_neighbors": 30, "atom_edge_interaction": True, "max_neighbors_aeaint": 40,
                                    "atom_interaction": True})
    assert (caps["max_neighbors"], caps["max_neighbors_qint"], caps["max_neighbors_aeaint"], caps["max_neighbors_aint"]) == (30, 30, 40, 40)
    assert caps["cap_symmetrization"] == "lower_index"
    imported = read_foreign_model(FAIRCHEM / "gemnet_oc_conservative.pt").model
    assert imported.config.cap_symmetrization == "lower_index" and imported.depends_on_atom_order


def test_gemnet_oc_keeps_every_element_of_its_embedding_by_default():
    imported = read_foreign_model(FAIRCHEM / "gemnet_oc_conservative.pt")
    assert imported.model.type_names == chemical_symbols[1:84] and imported.imported_from["weights"] == "last"
    assert mlipkit.import_model(FAIRCHEM / "gemnet_oc_conservative.pt", type_names=["Cu"]).type_names == ["Cu"]


def test_fairchem_checkpoints_mlipkit_cannot_reproduce_are_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"config": {"model": {"name": "equiformer_v2"}}, "state_dict": {}}, path)
    with pytest.raises(UnsupportedModel, match="'equiformer_v2' model; mlipkit imports fairchem's GemNet-OC"):
        read_foreign_model(path)
    checkpoint = torch.load(FAIRCHEM / "gemnet_oc_direct_ema.pt", weights_only=True)
    checkpoint["normalizers"]["energy"]["mean"] = torch.tensor(-0.75)
    torch.save(checkpoint, path)
    with pytest.raises(UnsupportedModel, match="means .*a constant per structure"):
        read_foreign_model(path)
    checkpoint = torch.load(FAIRCHEM / "gemnet_oc_direct_ema.pt", weights_only=True)
    checkpoint["ema"]["shadow_params"].pop()
    torch.save(checkpoint, path)
    with pytest.raises(UnsupportedModel, match="EMA .*do not line up"):
        read_foreign_model(path)
    assert read_foreign_model(path, use_ema=False).imported_from["weights"] == "last"


class RunsACommand:
    """What a hostile model file holds: unpickling it calls os.system."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class CallsGetattr:
    """getattr on an allowed class: the way to reach a function no file may name."""

    def __reduce__(self):
        return (getattr, (collections.OrderedDict, "fromkeys"))


def test_a_file_that_would_run_a_command_is_refused_before_anything_runs(tmp_path, capsys):
    marker = tmp_path / "the_command_ran"
    path = tmp_path / "hostile.model"
    torch.save({"model": RunsACommand(marker)}, path)
    with pytest.raises(FileHoldsCode, match=r"holds code: it names the global 'posix\.system'"):
        read_foreign_model(path)
    assert import_cli.main([str(path), str(tmp_path / "out.ckpt")]) == 1
    error = capsys.readouterr().err
    assert "holds code" in error and "posix.system" in error and len(error.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out.ckpt").exists()
    torch.save([CallsGetattr()], path)
    with pytest.raises(FileHoldsCode, match="calls getattr"):
        read_foreign_model(path)


def test_a_nequip_package_is_read_without_its_code(tmp_path):
    """The archive's Python files are never imported: replaced by code that would leave a mark, nothing changes."""
    import zipfile

    marker = tmp_path / "the_package_code_ran"
    package = tmp_path / "model.nequip.zip"
    with zipfile.ZipFile(NEQUIP / "nequip_cu_ema.nequip.zip") as source, zipfile.ZipFile(package, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith(".py"):
                data = f"open({str(marker)!r}, 'w').close()\n".encode() + data
            target.writestr(item, data)
    reference = torch.load(NEQUIP / "nequip_cu_ema.reference.pt", weights_only=True)
    assert_equals_peer(read_foreign_model(package).model, reference)
    assert not marker.exists()


def scripted_module(path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """A file each way an import goes wrong, and what its one-line error must say."""
    model_bytes = (DATA / "scaleshift_cu_c3.model").read_bytes()
    (tmp_path / "truncated.model").write_bytes(model_bytes[: len(model_bytes) // 2])
    (tmp_path / "structure.xyz").write_text("1\n\nCu 0 0 0\n")
    scripted_module(tmp_path / "deployed.pt")
    old_nequip = torch.load(NEQUIP / "nequip_cu_ema.ckpt", weights_only=True)
    old_nequip["hyper_parameters"]["info_dict"]["versions"]["nequip"] = "0.6.2"
    torch.save(old_nequip, tmp_path / "old_nequip.ckpt")
    mlipkit.save_checkpoint(mlipkit.build_model("mace", type_names=["Cu"], r_max=3.0, hidden_irreps="4x0e", max_ell=1,
                                                correlation=1, radial_mlp_hidden=[4]), tmp_path / "own.ckpt")
    return {
        "truncated": (tmp_path / "truncated.model", "truncated or damaged"),
        "another format": (tmp_path / "structure.xyz", "not a PyTorch archive"),
        "TorchScript": (tmp_path / "deployed.pt", "a TorchScript archive"),
        "mlipkit checkpoint": (tmp_path / "own.ckpt", "already an mlipkit checkpoint"),
        "unsupported block": (DATA / "unsupported_density_block.model", "RealAgnosticDensityResidualInteractionBlock, which mlipkit's MACE does not have"),
        "missing file": (tmp_path / "absent.model", "not found"),
        "unknown nequip version": (tmp_path / "old_nequip.ckpt", "written by nequip 0.6.2; mlipkit reads nequip 0.7 to 0.19.x"),
        "not a model": (DATA / "scaleshift_cu_c3.reference.pt", "not a model file mlipkit imports"),
    }


def test_each_bad_file_gives_a_one_line_error_naming_the_problem(tmp_path, capsys):
    for case, (path, message) in bad_files(tmp_path).items():
        assert import_cli.main([str(path), str(tmp_path / "out.ckpt")]) == 1, case
        error = capsys.readouterr().err.strip()
        assert message in error and len(error.splitlines()) == 1, (case, error)
    with pytest.raises(UnsupportedModel):
        read_foreign_model(DATA / "unsupported_density_block.model")
