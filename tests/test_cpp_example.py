"""examples/cpp builds against the installed runtime and prints the Python numbers."""

import shutil
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from mlipkit.calculators import MLIPCalculator

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "cpp"


def tool(name: str) -> str:
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is needed to build examples/cpp (tools/setup.sh installs it)")
    return found


@pytest.fixture(scope="module")
def example_binary(tmp_path_factory):
    build = tmp_path_factory.mktemp("example_build")
    from mlipkit.lammps import cmake_prefix_path

    configure = [tool("cmake"), "-S", str(EXAMPLE), "-B", str(build), f"-DCMAKE_PREFIX_PATH={cmake_prefix_path()}"]
    configure += ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={tool('ninja')}"]
    subprocess.run(configure, check=True, capture_output=True, text=True)
    subprocess.run([tool("cmake"), "--build", str(build)], check=True, capture_output=True, text=True)
    return build / "mlipkit_example"


def parse(output: str) -> tuple[float, np.ndarray]:
    lines = output.splitlines()
    energy = float(next(line for line in lines if line.startswith("energy")).split()[1])
    start = next(i for i, line in enumerate(lines) if line.startswith("forces")) + 1
    forces = np.array([[float(v) for v in line.split()[1:]] for line in lines[start:]])
    return energy, forces


@pytest.mark.parametrize("artifact_key", ["aotinductor_float64", "torchscript_float64"])
def test_cpp_example_matches_python(example_binary, artifacts, artifact_key):
    path, _ = artifacts[artifact_key]
    structure = EXAMPLE / "cu_au.xyz"
    run = subprocess.run([str(example_binary), str(path), str(structure)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    energy, forces = parse(run.stdout)
    atoms = ase.io.read(structure)
    atoms.calc = MLIPCalculator(path)
    assert energy == pytest.approx(atoms.get_potential_energy(), rel=1e-12)
    assert np.abs(forces - atoms.get_forces()).max() <= 1e-12 * max(1.0, np.abs(forces).max())
    assert np.abs(forces).max() > 1e-4


def test_cpp_example_reports_unknown_elements(example_binary, artifacts, tmp_path):
    path, _ = artifacts["torchscript_float64"]
    structure = tmp_path / "argon.xyz"
    structure.write_text("2\n\nAr 0 0 0\nAr 0 0 3.0\n")
    run = subprocess.run([str(example_binary), str(path), str(structure)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "element 'Ar' is not one of the model's type names" in run.stderr
