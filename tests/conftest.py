import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from e3nn import o3

import mlipkit
from mlipkit.data import batch_graphs, graph_from_atoms, keys
from mlipkit.models import REGISTRY
from mlipkit.nn.symmetric_contraction import coupling_basis

# Each pytest-xdist worker computes on one thread: the workers already fill the cores, and a second thread per
# worker oversubscribes them (models of many small operations, such as GemNet-OC's, then run many times slower).
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

#: Small but complete options for every registered model; a model without an
#: entry here fails test_every_model_has_test_options.
SMALL_MODEL_OPTIONS = {
    "nequip": dict(num_layers=2, max_ell=2, num_features=8, radial_mlp_hidden=[16], avg_num_neighbours=10.0),
    "mace": dict(num_interactions=2, max_ell=2, hidden_irreps="8x0e + 8x1o", correlation=3, radial_mlp_hidden=[16], avg_num_neighbours=10.0),
}
#: variants take their base model's options (adapters: a bottleneck of 4 of the 8 channels)
VARIANTS = {"ssf": {}, "adapter": dict(ratio_adapter_down=2), "mean_var": {}}
#: GemNet-OC with every interaction on, each graph at its own cutoff (r_max = cutoff_aint = R_MAX)
SMALL_MODEL_OPTIONS["gemnet_oc"] = dict(
    num_spherical=3, num_radial=6, num_blocks=2, emb_size_atom=8, emb_size_edge=8, emb_size_trip_in=4, emb_size_trip_out=4,
    emb_size_quad_in=4, emb_size_quad_out=4, emb_size_aint_in=4, emb_size_aint_out=4, emb_size_rbf=4, emb_size_cbf=4,
    emb_size_sbf=4, num_before_skip=1, num_after_skip=1, num_concat=1, num_atom=1, num_output_afteratom=1,
    num_atom_emb_layers=1, num_global_out_layers=1, cutoff=3.8, cutoff_qint=3.5, cutoff_aeaint=3.9, cutoff_aint=4.0,
    quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True, atom_interaction=True,
)
SMALL_MODEL_OPTIONS.update(
    {f"{variant}_{base}": dict(SMALL_MODEL_OPTIONS[base], **options) for variant, options in VARIANTS.items() for base in ("nequip", "mace")}
)

#: Options that switch every fused kernel of a model off: its pure PyTorch + e3nn reference path.
REFERENCE_KERNELS = {
    "nequip": dict(tensor_product_kernel="e3nn"),
    "mace": dict(tensor_product_kernel="e3nn", symmetric_contraction_kernel="dense"),
}
#: GemNet-OC has no fused kernels (yet): its only path is the reference
REFERENCE_KERNELS["gemnet_oc"] = {}
REFERENCE_KERNELS.update({f"{variant}_{base}": REFERENCE_KERNELS[base] for variant in VARIANTS for base in ("nequip", "mace")})

TYPE_NAMES = ["H", "C", "O", "Cu", "Au"]
R_MAX = 4.0


def cu_au_triclinic() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.7).repeat((2, 1, 1))
    atoms[1].symbol = "Au"
    atoms.set_cell(atoms.cell.array + np.array([[0.0, 0.3, 0.1], [0.2, 0.0, -0.2], [0.1, 0.15, 0.0]]), scale_atoms=True)
    atoms.rattle(0.08, seed=3)
    return atoms


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=4)
    return atoms


def cu_slab() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
    atoms.center(vacuum=4.0, axis=2)
    atoms.pbc = [True, True, False]
    atoms.rattle(0.05, seed=5)
    return atoms


STRUCTURES = {"triclinic": cu_au_triclinic, "molecule": ethanol, "slab": cu_slab}


def emt_frames(count: int, seed: int, with_forces: bool = True):
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 1, 1))
        atoms.symbols[rng.integers(len(atoms))] = "Au"
        atoms.set_cell(atoms.cell.array * (1 + rng.normal(scale=0.01)), scale_atoms=True)
        atoms.rattle(0.1, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        results = {"energy": atoms.get_potential_energy()}
        if with_forces:
            results.update(forces=atoms.get_forces(), stress=atoms.get_stress())
        atoms.calc = SinglePointCalculator(atoms, **results)
        frames.append(atoms)
    return frames


def build_small(name: str, dtype=torch.float64, **overrides) -> mlipkit.models.Potential:
    """A small model; a variant's layer adapters (weights and batch-norm statistics) are moved off the identity."""
    options = dict(SMALL_MODEL_OPTIONS[name], type_names=TYPE_NAMES, r_max=R_MAX, seed=0)
    options.setdefault("per_type_energy_shifts", [-1.0, -2.0, -3.0, -4.0, -5.0])
    options.update(overrides)
    model = mlipkit.build_model(name, dtype=dtype, **options).eval()
    if getattr(model.core, "layer_adapters", None) is not None:
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in model.core.layer_adapters.parameters():
                parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64).to(dtype))
            for name, buffer in model.core.layer_adapters.named_buffers():
                noise = 0.3 * torch.randn(buffer.shape, generator=generator, dtype=torch.float64).to(dtype)
                if name.endswith("running_mean"):
                    buffer.add_(noise)
                elif name.endswith("running_var"):
                    buffer.mul_(noise.exp())
    return model


@pytest.fixture(params=sorted(REGISTRY))
def model_name(request) -> str:
    return request.param


@pytest.fixture
def small_model(model_name):
    return build_small(model_name)


@pytest.fixture(scope="session", autouse=True)
def op_library():
    """Tests that name torch.ops.mlipkit.* directly need the op library registered, whatever ran first in the worker."""
    from mlipkit.ops.library import load_library

    load_library()


def evaluate(model, atoms: Atoms, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return model(graph_from_atoms(atoms, model.r_max, model.type_names, dtype))


def evaluate_many(model, structures, dtype=torch.float64):
    return model(batch_graphs([graph_from_atoms(a, model.r_max, model.type_names, dtype) for a in structures]))


def relative_error(a, b) -> float:
    a = torch.as_tensor(a, dtype=torch.float64).detach()
    b = torch.as_tensor(b, dtype=torch.float64).detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def assert_invariant_and_conservative(model) -> None:
    """Energy invariant and forces equivariant under a rotation (1e-10); one force component = -dE/dx (1e-7)."""
    atoms = STRUCTURES["triclinic"]()
    out = evaluate(model, atoms)
    rotation = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))[0]
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ rotation.numpy().T
    rotated.cell = atoms.cell.array @ rotation.numpy().T
    out_rotated = evaluate(model, rotated)
    assert relative_error(out_rotated[keys.ENERGY], out[keys.ENERGY]) <= 1e-10
    assert relative_error(out_rotated[keys.FORCES], out[keys.FORCES] @ rotation.T) <= 1e-10
    h = 1e-4
    plus, minus = atoms.copy(), atoms.copy()
    plus.positions[0, 1] += h
    minus.positions[0, 1] -= h
    numerical = -(evaluate(model, plus)[keys.ENERGY] - evaluate(model, minus)[keys.ENERGY]) / (2 * h)
    assert abs(float(numerical.detach()[0]) - float(out[keys.FORCES][0, 1])) <= 1e-7


#: Artifacts of the small models that tests share: name -> (model, mode, dtype, target).
ARTIFACT_SPECS = {
    "aotinductor_float64": ("nequip", "aotinductor", torch.float64, "lammps"),
    "aotinductor_float32": ("nequip", "aotinductor", torch.float32, "lammps"),
    "torchscript_float64": ("nequip", "torchscript", torch.float64, "lammps"),
    "torchscript_float32": ("nequip", "torchscript", torch.float32, "lammps"),
    "torchscript_float64_ase": ("nequip", "torchscript", torch.float64, "ase"),
    "mace_aotinductor_float64": ("mace", "aotinductor", torch.float64, "lammps"),
    "mace_torchscript_float32": ("mace", "torchscript", torch.float32, "lammps"),
    "mean_var_aotinductor_float64": ("mean_var_nequip", "aotinductor", torch.float64, "lammps"),
    "mean_var_torchscript_float64_ase": ("mean_var_nequip", "torchscript", torch.float64, "ase"),
    "gemnet_oc_aotinductor_float64": ("gemnet_oc", "aotinductor", torch.float64, "lammps"),
    "gemnet_oc_torchscript_float64": ("gemnet_oc", "torchscript", torch.float64, "lammps"),
    "charges_torchscript_float64": ("nequip", "torchscript", torch.float64, "lammps"),
    "charges_torchscript_float64_ase": ("nequip", "torchscript", torch.float64, "ase"),
    "charges_aotinductor_float64": ("mace", "aotinductor", torch.float64, "lammps"),
    "ewald_torchscript_float64": ("nequip", "torchscript", torch.float64, "lammps"),
    "imported_mace_torchscript_float64": ("imported", "torchscript", torch.float64, "lammps"),
    "imported_nequip_torchscript_float64": ("imported", "torchscript", torch.float64, "lammps"),
    "imported_gemnet_oc_torchscript_float32": ("imported", "torchscript", torch.float32, "ase"),
}
#: the other packages' files behind the "imported" artifacts (tools/*_reference.py --import-fixtures), and
#: read_foreign_model's options for each
IMPORTED_SOURCES = {
    "imported_mace_torchscript_float64": ("mace_import/scaleshift_hco_c2_reduced.model", {}),
    "imported_nequip_torchscript_float64": ("nequip_import/nequip_hco_natural_parity.ckpt", {}),
    "imported_gemnet_oc_torchscript_float32": ("fairchem_import/gemnet_oc_direct_ema.pt", {"type_names": ["O", "Cu"]}),
}


def imported_source(name: str) -> tuple[str, dict]:
    path, options = IMPORTED_SOURCES[name]
    return os.path.join(os.path.dirname(__file__), "data", path), options
#: Partial charges, the categorical total-charge embedding and a Coulomb term (README, "Charges and electrostatics")
CHARGE_OPTIONS = dict(use_coulomb_term=True, use_total_charge_embedding=True, available_total_charges=[-1.0, 0.0, 1.0])


def coulomb_options(method: str = "damped_shifted", **options) -> dict:
    coulomb = dict(method=method, long_range_cutoff=6.0, damping_radius=2.0 if method != "mlip_parity" else 5.0)
    return dict(CHARGE_OPTIONS, coulomb=dict(coulomb, **options))


#: Options changed from the small model's for an artifact: GemNet-OC's AOTInductor compile time grows with its
#: graph, so that artifact has one block (the TorchScript one, which LAMMPS runs on several ranks, has two).
ARTIFACT_OPTIONS = {
    "gemnet_oc_aotinductor_float64": {"num_blocks": 1},
    "charges_torchscript_float64": coulomb_options(),
    "charges_torchscript_float64_ase": coulomb_options(),
    "charges_aotinductor_float64": coulomb_options(charge_correction="weighted"),
    "ewald_torchscript_float64": coulomb_options("ewald"),
}


def artifact_model(name: str, dtype=torch.float64) -> mlipkit.models.Potential:
    """The eager model a shared artifact was compiled from."""
    if ARTIFACT_SPECS[name][0] == "imported":
        from mlipkit.importers import import_model

        path, options = imported_source(name)
        return import_model(path, **options).to(dtype)
    return build_small(ARTIFACT_SPECS[name][0], dtype, **ARTIFACT_OPTIONS.get(name, {}))


class SharedArtifacts:
    """Compiles each artifact once per test run, shared by pytest-xdist workers through a file lock."""

    def __init__(self, directory):
        self.directory = directory

    def checkpoint(self, model_name: str, artifact: str | None = None):
        """The small model's checkpoint (seed 0; an artifact's own options), written once per run."""
        from filelock import FileLock

        from mlipkit.importers import import_checkpoint

        options = ARTIFACT_OPTIONS.get(artifact, {})
        path = self.directory / (f"small_{artifact}.ckpt" if options or model_name == "imported" else f"small_{model_name}.ckpt")
        with FileLock(str(path) + ".lock"):
            if not path.exists() and model_name == "imported":
                source, import_options = imported_source(artifact)
                import_checkpoint(source, path, **import_options)
            elif not path.exists():
                mlipkit.save_checkpoint(build_small(model_name, **options), path)
        return path

    def __getitem__(self, name):
        from filelock import FileLock

        from mlipkit.compile import compile_checkpoint
        from mlipkit.compile.metadata import EXTENSIONS

        model_name, mode, dtype, target = ARTIFACT_SPECS[name]
        path = self.directory / f"{name}{EXTENSIONS[mode]}"
        with FileLock(str(path) + ".lock"):
            if not path.exists():
                compile_checkpoint(self.checkpoint(model_name, name), path, mode=mode, dtype=dtype, target=target)
        return path, dtype


def shared_directory(tmp_path_factory):
    """A directory every xdist worker of this run sees (the parent of the per-worker base)."""
    base = tmp_path_factory.getbasetemp()
    directory = (base.parent if base.name.startswith("popen-gw") else base) / "shared"
    directory.mkdir(exist_ok=True)
    return directory


def artifact_for_device(source: Path, device: str, target: Path) -> Path:
    """A copy of an artifact whose metadata names another device: how a CUDA artifact meets a machine without
    a GPU (its code is never reached)."""
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as copy:
        for item in archive.infolist():
            data = archive.read(item.filename)
            if item.filename.endswith("wrapper_metadata.json"):
                data = json.dumps(dict(json.loads(data), **{"mlipkit.device": device})).encode()
            elif item.filename.endswith("/extra/mlipkit_metadata.txt"):
                data = re.sub(rb"^mlipkit\.device=.*$", b"mlipkit.device=" + device.encode(), data, flags=re.MULTILINE)
            copy.writestr(item, data)
    assert mlipkit.compile.read_metadata(target).device == device, f"{source}: no metadata entry to change"
    return target


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory):
    return SharedArtifacts(shared_directory(tmp_path_factory))


@pytest.fixture(scope="session")
def small_checkpoint(artifacts):
    return artifacts.checkpoint("nequip")


@pytest.fixture(params=["aotinductor_float64", "aotinductor_float32", "torchscript_float64", "torchscript_float32",
                        "mace_aotinductor_float64", "mace_torchscript_float32", "gemnet_oc_aotinductor_float64",
                        "gemnet_oc_torchscript_float64"])
def artifact_name(request):
    return request.param


def results_per_instruction_set(script: str, name: str) -> dict[str, list]:
    """Run ``script`` with the baseline (SSE2) kernels and with the ones this CPU picks (AVX2/AVX-512).

    The script saves a list [ops.kernel_isa(), tensors ...] to the path in sys.argv[1].
    """
    directory = os.environ.get("TMPDIR", "/tmp")
    results = {}
    for isa in ("baseline", ""):
        path = os.path.join(directory, f"{name}_{os.environ.get('PYTEST_XDIST_WORKER', 'main')}_{isa or 'native'}.pt")
        subprocess.run([sys.executable, "-c", script, path], check=True, env=dict(os.environ, MLIPKIT_CPU_ISA=isa),
                       cwd=directory)
        results[isa or "native"] = torch.load(path)
    return results


def mace_torch_weights_in_mlipkit_layout(model, reference) -> dict[str, torch.Tensor]:
    """mace-torch's parameters renamed and radial-MLP columns reordered as mlip-import does, and the
    product-basis weights moved one to one (which training parity needs; mlip-import's least squares need
    not give it) to mlipkit's twin coupling paths by their fingerprints: a path's values on symmetric powers
    of probe vectors, all that matters when it multiplies A^nu (equal up to sign: e3nn 0.4.4 and 0.6 differ
    in the sign of some Wigner 3j symbols)."""
    from mlipkit.importers.mace import radial_output_columns, renamed_tensors

    weights = reference["weights"]
    state = {ours: weights[theirs] for theirs, ours in renamed_tensors(model).items()}
    powers = torch.ones(len(reference["probes"]), 1, dtype=torch.float64)
    probe_powers = []
    for _ in range(3):
        powers = (powers.unsqueeze(-1) * reference["probes"].unsqueeze(1)).flatten(1)
        probe_powers.append(powers)
    sh_irreps = o3.Irreps.spherical_harmonics(model.config.max_ell)
    for i, layer in enumerate(model.core.layers):
        last = f"layer{len(model.config.radial_mlp_hidden)}"
        state[f"core.layers.{i}.convolution.radial.{last}.weight"] = radial_output_columns(
            model, i, weights[f"interactions.{i}.conv_tp_weights.{last}.weight"])
        product = layer.product
        for index, (_, ir_out) in enumerate(product.irreps_out):
            for order in range(1, product.correlation + 1):
                ours = coupling_basis(sh_irreps, ir_out, order, reduced=False)
                ours_fingerprints = torch.einsum("kmI,pI->kmp", ours, probe_powers[order - 1]).flatten(1)
                theirs = reference["fingerprints"][f"products.{i}.symmetric_contractions.contractions.{index}.U_matrix_{order}"].flatten(1)
                name = "weights_max" if order == product.correlation else f"weights.{product.correlation - order - 1}"
                mapped = torch.zeros_like(weights[f"products.{i}.symmetric_contractions.contractions.{index}.{name}"])
                for k, fingerprint in enumerate(theirs):
                    if fingerprint.abs().max() <= 1e-12:
                        continue  # antisymmetric in two slots: adds nothing to a symmetric power A^nu
                    same = (ours_fingerprints - fingerprint).abs().amax(1)
                    flipped = (ours_fingerprints + fingerprint).abs().amax(1)
                    j, sign = (int(same.argmin()), 1.0) if same.min() < flipped.min() else (int(flipped.argmin()), -1.0)
                    assert min(same.min(), flipped.min()) <= 1e-12 * fingerprint.abs().max(), "a coupling path of mace-torch has no twin"
                    mapped[:, j] += sign * weights[f"products.{i}.symmetric_contractions.contractions.{index}.{name}"][:, k]
                state[f"core.layers.{i}.product.weight_{index}_{order}"] = mapped
    return state
