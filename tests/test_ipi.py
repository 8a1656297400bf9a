"""i-PI drives mlipkit: i-PI's own server (in this process) and mlip-ipi as its socket client (a subprocess)."""

import contextlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.io import write

from mlipkit.calculators import MLIPCalculator

from ipi.scripting import InteractiveSimulation
from ipi.scripting.templates import forcefield_xml, motion_nvt_xml, simulation_xml
from ipi.utils.units import unit_to_internal, unit_to_user

BIN = Path(sys.executable).parent


def cu_au_cell():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 4]] = "Au"
    atoms.rattle(0.05, seed=3)
    return atoms


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def drive(tmp_path, artifact, atoms, beads: int, steps: int, mode: str = "unix"):
    """i-PI (PIMD, ``beads`` replicas, NVT) with mlip-ipi on a UNIX socket; each bead's structure after ``steps``,
    with the energy and forces i-PI received (ASE units), the driver's exit status and output, and the extras."""
    template = tmp_path / "template.xyz"
    write(template, atoms)
    socket, port = f"mlipkit_{tmp_path.name[-20:]}", free_port()
    forcefield = forcefield_xml("mlipkit", mode="unix", address=socket) if mode == "unix" else \
        forcefield_xml("mlipkit", mode="inet", address="localhost", port=port)
    where = ["--unix", socket] if mode == "unix" else ["--address", "localhost", "--port", str(port)]
    xml = simulation_xml(
        [atoms] * beads, forcefield,
        motion_nvt_xml(timestep=0.5 * 0.09822694788464063, path_integrals=beads > 1), temperature=300.0,
    )
    with contextlib.chdir(tmp_path):  # i-PI writes its restart files where it runs
        simulation = InteractiveSimulation(xml)
    driver = subprocess.Popen([str(BIN / "mlip-ipi"), str(artifact), str(template), *where],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        with contextlib.chdir(tmp_path):
            simulation.run(steps)
        structures = simulation.get_structures()
        extras = simulation.syslist[0].forces.extras
    finally:
        with contextlib.chdir(tmp_path):
            simulation.stop()
        try:
            output, _ = driver.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            driver.kill()
            raise
    return (structures if beads > 1 else [structures]), driver.returncode, output, extras


@pytest.mark.parametrize("structure, mode", [("periodic", "unix"), ("molecule", "unix"), ("periodic", "inet")])
def test_ipi_gets_the_ase_forces_and_the_driver_exits_cleanly(artifacts, tmp_path, structure, mode):
    path = artifacts["torchscript_float64"][0]
    atoms = cu_au_cell() if structure == "periodic" else molecule("CH3CH2OH")
    if structure == "molecule":
        atoms.rattle(0.05, seed=2)
        atoms.center(vacuum=8.0)
    beads, code, output, _ = drive(tmp_path, path, atoms, beads=2, steps=3, mode=mode)
    assert code == 0, output
    reference = MLIPCalculator(path)
    for bead in beads:
        # what i-PI holds (atomic units) read back with i-PI's own electronvolt and angstrom
        energy = unit_to_user("energy", "electronvolt", unit_to_internal("energy", "ase", bead.get_potential_energy()))
        forces = unit_to_user("energy", "electronvolt", unit_to_internal("force", "ase", bead.get_forces()))
        forces = forces * unit_to_internal("length", "angstrom", 1.0)
        expected = bead.copy()
        expected.positions = unit_to_user("length", "angstrom", unit_to_internal("length", "ase", bead.positions))
        expected.cell = unit_to_user("length", "angstrom", unit_to_internal("length", "ase", bead.cell.array))
        expected.pbc = atoms.pbc
        expected.calc = reference
        assert energy == pytest.approx(expected.get_potential_energy(), rel=1e-10)
        assert np.abs(forces - expected.get_forces()).max() <= 1e-10 * np.abs(expected.get_forces()).max()


def test_a_charge_models_total_charge_comes_from_the_template(artifacts, tmp_path):
    """The template's total charge (extxyz info "charge") reaches a charge model through i-PI."""
    path = artifacts["charges_torchscript_float64"][0]
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=8.0)
    atoms.info["charge"] = -1.0
    beads, code, output, _ = drive(tmp_path, path, atoms, beads=1, steps=1)
    assert code == 0, output
    bead = beads[0]
    energy = unit_to_user("energy", "electronvolt", unit_to_internal("energy", "ase", bead.get_potential_energy()))
    expected = atoms.copy()
    expected.positions = unit_to_user("length", "angstrom", unit_to_internal("length", "ase", bead.positions))
    expected.calc = MLIPCalculator(path)
    assert energy == pytest.approx(expected.get_potential_energy(), rel=1e-10)
    neutral = expected.copy()
    neutral.info["charge"] = 0.0
    neutral.calc = MLIPCalculator(path)
    assert abs(energy - neutral.get_potential_energy()) > 1e-4


def test_a_mean_variance_models_sigma_arrives_as_an_extra(artifacts, tmp_path):
    path = artifacts["mean_var_torchscript_float64_ase"][0]
    atoms = molecule("CH3CH2OH")
    atoms.center(vacuum=8.0)
    beads, code, output, extras = drive(tmp_path, path, atoms, beads=1, steps=1)
    assert code == 0, output
    expected = atoms.copy()
    expected.positions = unit_to_user("length", "angstrom", unit_to_internal("length", "ase", beads[0].positions))
    expected.calc = MLIPCalculator(path)
    expected.get_potential_energy()
    sigma = expected.calc.results["energy_uncertainty"]
    assert extras["energy_uncertainty"][0] == pytest.approx(sigma, rel=1e-10), extras


def test_the_example_runs_i_pi_and_the_driver_as_two_processes(artifacts, tmp_path):
    """examples/engines/ipi_pimd.py: a real i-PI server process and mlip-ipi, PIMD with 2 beads; both exit with 0."""
    example = Path(__file__).parent.parent / "examples" / "engines" / "ipi_pimd.py"
    run = subprocess.run([sys.executable, str(example), str(artifacts["torchscript_float64"][0]), "--beads", "2", "--steps", "4"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "(i-PI exit 0, mlip-ipi exit 0)" in run.stdout
    rows = [line.split() for line in (tmp_path / "out" / "ipi_pimd" / "pimd.out").read_text().splitlines() if not line.startswith("#")]
    assert [float(row[0]) for row in rows] == [0.0, 2.0, 4.0]


def test_the_driver_refuses_a_template_with_an_element_the_model_lacks(artifacts, tmp_path):
    template = tmp_path / "iron.xyz"
    write(template, bulk("Fe", "bcc", a=2.87))
    run = subprocess.run([str(BIN / "mlip-ipi"), str(artifacts["torchscript_float64"][0]), str(template), "--unix", "never"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "element(s) ['Fe'] that the model lacks" in run.stdout + run.stderr
