"""mlipkit against nequip 0.19.1, mace-torch 0.3.16 and fairchem-core 1.10.0 (GemNet-OC), side by side, in one run.

    bash tools/peer_envs.sh nequip mace fairchem   # once: .peers/nequip, .peers/mace, .peers/fairchem
    .venv/bin/python tools/benchmark_peers.py      # everything below (about an hour on 2 cores)
    .venv/bin/python tools/benchmark_peers.py --models nequip --structures cu256 --dtypes float32 --threads 2

Every implementation runs in a persistent worker process of its own
environment (nequip and mace-torch cannot share one: e3nn 0.6 against 0.4.4),
built at identical hyperparameters from the same structures: fcc Cu with 256
and 864 atoms (rattled 0.05 Å) and a periodic box of 64 water molecules (192
atoms, 1 g/cm³), r_max 5 Å. Energy+forces calls are timed without the
neighbour list (each worker builds its graph once), after warm-up, in rounds
that visit every worker in turn, so machine noise hits all of them alike; the
table gives the median of ``--repeats`` calls. Each call's peak memory (the
worker's peak RSS, reset before the call, above its RSS before the call, once
glibc has returned freed memory) is
reported per atom in a second table. The eager implementations also time a
force-training step (training mode: energy and forces with the graph kept,
loss = E^2 + sum F^2, its gradient by the weights), time and peak memory in a
third table; compiled calls (an artifact, torch.compile's inference graph)
have no such step.

Implementations: mlipkit eager on its reference path (e3nn's tensor product;
for MACE also the dense symmetric contraction), mlipkit eager with its fused
kernels (convolution; MACE's sparse symmetric contraction), mlipkit's AOTInductor
artifact (``mlip-compile``); nequip eager and nequip's AOTInductor export
(``nequip.utils.aot.aot_export_model`` with ``nequip-compile --target ase``'s
settings, which is what ``nequip-compile`` runs after loading a checkpoint);
mace-torch eager and through ``torch.compile`` as its ASE calculator's
``compile_mode="default"`` prepares it. GemNet-OC: fairchem's OC20 ``gemnet-oc`` sizes and neighbour caps with every interaction on, all cutoffs
r_max, conservative forces (``gemnet_oc_direct``: direct forces), against mlipkit eager and its artifacts
(AOTInductor and TorchScript), the
eager calls of both under torch.no_grad as inference runs them; fairchem's graph code runs only in
float32, and its forward builds its graphs (radius_graph_pbc, caps, triplets, quadruplets) in every call,
which mlipkit's artifact also does for the index sets (only the neighbour list is outside).
Training against mace_run_train and nequip-train: tools/benchmark_training.py.

``--imported`` times models the peers wrote instead: a mace-torch model file
(tools/mace_torch_reference.py --benchmark-model) and nequip-train checkpoints
(tools/nequip_reference.py --benchmark-checkpoint, one per dtype), each
imported with mlip-import and compiled with mlip-compile, against the peer
running the same file (mace-torch eager, as its ASE calculator does;
nequip-compile's AOTInductor package of the checkpoint).

The FLOP floor of a model on a structure is what an implementation that
skips every structural zero must do: the tensor products' Clebsch-Gordan
non-zeros (forward x1, backward for forces x3), MACE's symmetric contraction
as a sparse polynomial (forward and derivative), plus every dense matmul of
the model (forward x1, backward x1, counted by torch's FlopCounterMode on
mlipkit's model with e3nn's block-by-block linear layers). It is divided by the matmul ceiling measured here at each
thread count (float32/float64 GEMM of 2048 x 2048) to give the floor time.
Writes ``peers.md``, ``peers.json`` and ``peers.png`` (time and peak memory
as bar charts, mlipkit's best against the best peer) to ``--output``;
``--plot-from peers.json --plot FILE.png`` redraws the chart from an earlier run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.build import add_adsorbate, bulk, fcc111, molecule

ROOT = Path(__file__).resolve().parent.parent
R_MAX = 5.0
STRUCTURES = ("cu256", "cu864", "water192", "cu108", "slab66")
#: NequIP at mlipkit's defaults, in nequip's option names (nequip defaults differ: radial MLP 1 x 128,
#: l_max 1, bessel weights fixed, no readout hidden layer)
NEQUIP_OPTIONS = dict(num_layers=4, l_max=2, parity=True, num_features=32, radial_mlp_depth=2, radial_mlp_width=64,
                      num_bessels=8, bessel_trainable=True, polynomial_cutoff_p=6, readout_mlp_hidden_layers_depth=1,
                      readout_mlp_hidden_layers_width=16)
IMPLEMENTATIONS = {
    "nequip": [("mlipkit", "e3nn"), ("mlipkit", "fused"), ("mlipkit", "aotinductor"), ("nequip", "eager"),
               ("nequip", "aotinductor")],
    "mace": [("mlipkit", "e3nn"), ("mlipkit", "fused"), ("mlipkit", "aotinductor"), ("mace", "eager"),
             ("mace", "compile")],
    "gemnet_oc": [("mlipkit", "eager"), ("mlipkit", "aotinductor"), ("mlipkit", "torchscript"), ("fairchem", "eager")],
    # the same with direct forces (OC20's own mode): a per-edge head, no gradient
    "gemnet_oc_direct": [("mlipkit", "eager"), ("mlipkit", "aotinductor"), ("mlipkit", "torchscript"),
                         ("fairchem", "eager")],
    # --imported: one file per peer, imported by mlip-import and compiled, against the peer running that file
    "imported_mace": [("mlipkit", "imported"), ("mace", "file")],
    "imported_nequip": [("mlipkit", "imported"), ("nequip", "checkpoint")],
}
IMPORTED_DIRECTORY = ROOT / "out" / "benchmark_peers" / "imported"
#: the imported files' types (the structures need at most these)
IMPORTED_TYPES = ["H", "O", "Cu"]
#: fairchem's OC20 gemnet-oc (configs/s2ef/all/gemnet/gemnet-oc.yml) at r_max, conservative forces
GEMNET_OC_OPTIONS = dict(
    num_spherical=7, num_radial=128, num_blocks=4, emb_size_atom=256, emb_size_edge=512, emb_size_trip_in=64,
    emb_size_trip_out=64, emb_size_quad_in=32, emb_size_quad_out=32, emb_size_aint_in=64, emb_size_aint_out=64,
    emb_size_rbf=16, emb_size_cbf=16, emb_size_sbf=32, num_before_skip=2, num_after_skip=2, num_concat=1, num_atom=3,
    num_output_afteratom=3, cutoff=R_MAX, cutoff_qint=R_MAX, cutoff_aeaint=R_MAX, cutoff_aint=R_MAX, max_neighbors=30,
    max_neighbors_qint=8, max_neighbors_aeaint=20, max_neighbors_aint=1000, rbf={"name": "gaussian"},
    envelope={"name": "polynomial", "exponent": 5}, cbf={"name": "spherical_harmonics"}, sbf={"name": "legendre_outer"},
    direct_forces=False, quad_interaction=True, atom_edge_interaction=True, edge_atom_interaction=True,
    atom_interaction=True, num_atom_emb_layers=2, num_global_out_layers=2,
)
#: mace-torch without cuequivariance builds the original (not the reduced) couplings; mlipkit builds the same.
#: An isolated-atom energy shift, as trained models have (timing is unaffected), keeps mlip-compile's float32
#: check of per-atom energies (1e-5 relative) from measuring only the rounding of an untrained model's near-zero ones.
MLIPKIT_OPTIONS = {"nequip": {"per_type_energy_shifts": -1.0}, "mace": {"use_reduced_cg": False, "per_type_energy_shifts": -1.0}}
#: mlipkit's reference path: every fused kernel off (e3nn's tensor product, the dense symmetric contraction).
REFERENCE_PATH = {"nequip": {"tensor_product_kernel": "e3nn"},
                  "mace": {"tensor_product_kernel": "e3nn", "symmetric_contraction_kernel": "dense"}}
ENVIRONMENTS = {"mlipkit": ROOT / ".venv", "nequip": ROOT / ".peers" / "nequip", "mace": ROOT / ".peers" / "mace",
                "fairchem": ROOT / ".peers" / "fairchem"}


def gemnet_oc_options(model_name: str) -> dict:
    """OC20's gemnet-oc options, with direct forces for ``gemnet_oc_direct``."""
    return dict(GEMNET_OC_OPTIONS, direct_forces=model_name == "gemnet_oc_direct")


def registry_name(model_name: str) -> str:
    return "gemnet_oc" if model_name.startswith("gemnet_oc") else model_name


def mlipkit_options(model_name: str, kernel: str) -> dict:
    if model_name.startswith("gemnet_oc"):
        # fairchem's rule for the capped embedding graph, so that both packages compute on the same graph
        return dict(gemnet_oc_options(model_name), per_type_energy_shifts=-1.0, cap_symmetrization="lower_index")
    options = dict(REFERENCE_PATH[model_name]) if kernel == "e3nn" else {}
    return dict(options, r_max=R_MAX, avg_num_neighbours=10.0, **MLIPKIT_OPTIONS[model_name])


def imported_source(model_name: str, dtype_name: str) -> Path:
    """The file --imported runs: a mace-torch model file (float64; each side casts it) or a nequip-train
    checkpoint per dtype (nequip compiles a checkpoint in the dtype it was trained in)."""
    if model_name == "imported_mace":
        return IMPORTED_DIRECTORY / "mace.model"
    return IMPORTED_DIRECTORY / f"nequip_{dtype_name}" / "best.ckpt"


def prepare_imported_sources(models: list[str], dtypes: list[str]) -> None:
    """Write the files --imported runs with the peers' own code (tools/mace_torch_reference.py --benchmark-model,
    tools/nequip_reference.py --benchmark-checkpoint: a short nequip-train), once."""
    environment = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")
    for model_name in models:
        for dtype_name in dtypes:
            source = imported_source(model_name, dtype_name)
            if source.exists():
                continue
            source.parent.mkdir(parents=True, exist_ok=True)
            if model_name == "imported_mace":
                command = [str(ENVIRONMENTS["mace"] / "bin" / "python"), str(ROOT / "tools" / "mace_torch_reference.py"),
                           "--benchmark-model", str(source)]
            else:
                command = [str(ENVIRONMENTS["nequip"] / "bin" / "python"), str(ROOT / "tools" / "nequip_reference.py"),
                           "--benchmark-checkpoint", str(source.parent), "--dtype", dtype_name]
            print(f"preparing {source}", flush=True)
            subprocess.run(command, check=True, env=environment)


def structure(name: str) -> Atoms:
    if name == "slab66":
        # the OC20 shape: a Cu(111) slab of 4 x 4 x 4 atoms, CO on top of a surface atom, 8 Å of vacuum on each side
        slab = fcc111("Cu", size=(4, 4, 4), a=3.61, vacuum=8.0)
        add_adsorbate(slab, molecule("CO"), 1.85, "ontop", mol_index=0)
        slab.rattle(0.05, seed=0)
        return slab
    if name.startswith("cu"):
        repeats = {"cu108": 3, "cu256": 4, "cu864": 6}[name]
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((repeats,) * 3)
        atoms.rattle(0.05, seed=0)
        return atoms
    rng = np.random.default_rng(0)
    side = (64 * 18.015 / 0.6022) ** (1 / 3)  # 64 molecules at 1 g/cm^3
    atoms = Atoms(cell=[side] * 3, pbc=True)
    for index in range(64):
        water = molecule("H2O")
        water.rotate(rng.uniform(0, 360), rng.normal(size=3), center="COP")
        water.translate((np.array(np.unravel_index(index, (4, 4, 4))) + 0.5) * side / 4 - water.positions.mean(0))
        atoms += water
    return atoms


def type_names(name: str) -> list[str]:
    return {"water192": ["H", "O"], "slab66": ["C", "O", "Cu"]}.get(name, ["Cu"])


# ---------------------------------------------------------------- workers: one implementation, one dtype


def mlipkit_worker(model_name: str, kernel: str, dtype_name: str, names: list[str], directory: Path):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    import mlipkit
    from mlipkit.compile import Artifact, compile_checkpoint, read_metadata
    from mlipkit.compile.metadata import EXTENSIONS, config_hash
    from mlipkit.data import graph_from_atoms, keys
    from mlipkit.data.graph import compute_edge_vectors
    from mlipkit.nn import linear
    from mlipkit.nn.interaction import Convolution
    from mlipkit.nn.symmetric_contraction import SymmetricContraction

    dtype = getattr(torch, dtype_name)
    if kernel == "imported":
        return imported_mlipkit_worker(model_name, dtype_name, names, directory)
    models, info, calls, training_calls = {}, {"compile_s": {}, "parameters": {}, "edges": {}, "flop_floor": {}}, {}, {}
    for name in names:
        types = tuple(type_names(name))
        if types not in models:
            models[types] = mlipkit.build_model(registry_name(model_name), dtype=dtype, type_names=list(types), seed=0,
                                                **mlipkit_options(model_name, kernel)).eval()
            info["parameters"]["_".join(types)] = sum(p.numel() for p in models[types].parameters() if p.requires_grad)
        model = models[types]
        graph = graph_from_atoms(structure(name), R_MAX, list(types), dtype)
        inputs = (graph[keys.ATOM_TYPES], graph[keys.EDGE_INDEX], compute_edge_vectors(graph))
        num_edges = int(inputs[1].shape[1])
        info["edges"][name] = num_edges
        if kernel == "fused":
            # e3nn's block-by-block linears count only their non-zeros (mlipkit's block matrices count zeros too)
            linear.DENSE_MATRIX_LIMIT, limit = 0, linear.DENSE_MATRIX_LIMIT
            counted = mlipkit.build_model(model_name, dtype=dtype, type_names=list(types), r_max=R_MAX,
                                          avg_num_neighbours=10.0, **MLIPKIT_OPTIONS[model_name]).eval()
            linear.DENSE_MATRIX_LIMIT = limit
            counted.load_state_dict(model.state_dict())
            with FlopCounterMode(display=False) as counter:  # dense matmuls; the custom ops are not counted
                counted.core(graph, inputs[2], torch.linalg.norm(inputs[2], dim=1))
            convolutions = [module for module in model.modules() if isinstance(module, Convolution)]
            coupling_flops = sum(num_edges * module.fused.flops_per_edge for module in convolutions)
            # in eval mode the radial MLPs run inside the convolution op, out of the counter's sight
            radial_mlp_flops = sum(2 * num_edges * sum(a * b for a, b in zip(module.radial.hs, module.radial.hs[1:]))
                                   for module in convolutions)
            num_nodes = int(inputs[0].shape[0]) + len(types)  # the isolated-atom reference nodes too
            contraction_flops = sum(num_nodes * module.flops_per_node
                                    for module in model.modules() if isinstance(module, SymmetricContraction))
            info["flop_floor"][name] = (2 * (counter.get_total_flops() + radial_mlp_flops) + 4 * coupling_flops
                                        + contraction_flops)
        if kernel in EXTENSIONS:
            artifact_path = directory / f"{model_name}_{'_'.join(types)}_{dtype_name}{EXTENSIONS[kernel]}"
            # an artifact of another configuration (an option changed since it was written) is compiled anew
            if not artifact_path.exists() or read_metadata(artifact_path).config_hash != config_hash(model.model_name, model.config):
                checkpoint = mlipkit.save_checkpoint(model, directory / f"{model_name}_{'_'.join(types)}.ckpt")
                started = time.perf_counter()
                # a model whose graph depends on the atoms' order compiles for ASE, not LAMMPS (same inputs)
                target = "ase" if model.depends_on_atom_order else "lammps"
                compile_checkpoint(checkpoint, artifact_path, mode=kernel, target=target, log=lambda line: None)
                info["compile_s"]["_".join(types)] = time.perf_counter() - started
            artifact = Artifact(artifact_path)
            calls[name] = lambda artifact=artifact, inputs=inputs: artifact.run(*inputs)
        else:
            calls[name] = inference_call(model_name, lambda model=model, graph=graph: model(graph)[keys.FORCES])
            training_calls[name] = training_step(model, lambda model=model, graph=graph: model(graph),
                                                 keys.ENERGY, keys.FORCES)
    return info, calls, training_calls


def imported_mlipkit_worker(model_name: str, dtype_name: str, names: list[str], directory: Path):
    """mlip-import of the peer's file, mlip-compile (AOTInductor) in the dtype, the artifact timed."""
    import torch

    from mlipkit.compile import Artifact, compile_checkpoint
    from mlipkit.data import graph_from_atoms, keys
    from mlipkit.data.graph import compute_edge_vectors
    from mlipkit.importers import import_checkpoint

    dtype = getattr(torch, dtype_name)
    checkpoint = directory / f"{model_name}_{dtype_name}.ckpt"
    started = time.perf_counter()
    imported = import_checkpoint(imported_source(model_name, dtype_name), checkpoint)
    artifact_path = directory / f"{model_name}_{dtype_name}.pt2"
    compile_checkpoint(checkpoint, artifact_path, mode="aotinductor", dtype=dtype, log=lambda line: None)
    info = {"compile_s": {"import+compile": time.perf_counter() - started}, "parameters": {}, "edges": {}}
    artifact, model = Artifact(artifact_path), imported.model
    calls = {}
    for name in names:
        graph = graph_from_atoms(structure(name), model.r_max, model.type_names, dtype)
        inputs = (graph[keys.ATOM_TYPES], graph[keys.EDGE_INDEX], compute_edge_vectors(graph))
        info["parameters"]["_".join(type_names(name))] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        info["edges"][name] = int(inputs[1].shape[1])
        calls[name] = lambda inputs=inputs: artifact.run(*inputs)
    return info, calls, {}


def nequip_worker(model_name: str, mode: str, dtype_name: str, names: list[str], directory: Path):
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper
    from nequip.model import NequIPGNNModel
    from nequip.nn.compile import DictInputOutputWrapper
    from nequip.scripts._compile_utils import ASE_TARGET
    from nequip.utils.aot import aot_export_model
    from nequip.utils.global_state import set_global_state

    set_global_state()
    if mode == "checkpoint":  # --imported: nequip-compile of the checkpoint (AOTInductor, target ase), timed
        from nequip.model.saved_models.checkpoint import ModelFromCheckpoint

        source = imported_source(model_name, dtype_name)
        path = directory / f"{model_name}_{dtype_name}.nequip.pt2"
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).parent / "nequip-compile"), str(source), str(path), "--mode", "aotinductor",
                        "--device", "cpu", "--target", "ase"], check=True, cwd=source.parent, stdout=sys.stderr)
        info = {"compile_s": {"nequip-compile": time.perf_counter() - started}, "parameters": {}, "edges": {}}
        evaluation_model = ModelFromCheckpoint(str(source))
        count = sum(p.numel() for p in evaluation_model.parameters() if p.requires_grad)
        compiled = DictInputOutputWrapper(torch._inductor.aoti_load_package(str(path)), ASE_TARGET["input"], ASE_TARGET["output"])
        calls = {}
        for name in names:
            data = ChemicalSpeciesToAtomTypeMapper(IMPORTED_TYPES)(compute_neighborlist_(from_ase(structure(name)), R_MAX))
            info["parameters"]["_".join(type_names(name))] = count
            info["edges"][name] = int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])
            data = ASE_TARGET["data_settings"](dict(data))
            calls[name] = lambda data=data: compiled(dict(data))[AtomicDataDict.FORCE_KEY]
        return info, calls, {}
    models, info, calls, training_calls = {}, {"compile_s": {}, "parameters": {}, "edges": {}}, {}, {}
    for name in names:
        types = tuple(type_names(name))
        if types not in models:
            models[types] = NequIPGNNModel(seed=0, model_dtype=dtype_name, type_names=list(types), r_max=R_MAX,
                                           avg_num_neighbors=10.0, per_type_energy_scales=1.0,
                                           per_type_energy_shifts=0.0, **NEQUIP_OPTIONS)
            info["parameters"]["_".join(types)] = sum(p.numel() for p in models[types].parameters() if p.requires_grad)
        model = models[types]
        data = ChemicalSpeciesToAtomTypeMapper(list(types))(compute_neighborlist_(from_ase(structure(name)), R_MAX))
        info["edges"][name] = int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1])
        if mode == "aotinductor":
            data = ASE_TARGET["data_settings"](dict(data))
            path = directory / f"nequip_{'_'.join(types)}_{dtype_name}.nequip.pt2"
            if not path.exists():
                batch_map = ASE_TARGET["batch_map_settings"](
                    {"graph": torch.export.Dim.STATIC, "node": torch.export.Dim("num_nodes", min=2),
                     "edge": torch.export.Dim("num_edges", min=2)})
                started = time.perf_counter()
                aot_export_model(model, "cpu", ASE_TARGET["input"], ASE_TARGET["output"], data, batch_map, str(path))
                info["compile_s"]["_".join(types)] = time.perf_counter() - started
            compiled = DictInputOutputWrapper(torch._inductor.aoti_load_package(str(path)), ASE_TARGET["input"],
                                              ASE_TARGET["output"])
            calls[name] = lambda compiled=compiled, data=data: compiled(dict(data))[AtomicDataDict.FORCE_KEY]
        else:
            calls[name] = lambda model=model, data=data: model(dict(data))[AtomicDataDict.FORCE_KEY]
            training_calls[name] = training_step(model, lambda model=model, data=data: model(dict(data)),
                                                 AtomicDataDict.TOTAL_ENERGY_KEY, AtomicDataDict.FORCE_KEY)
    return info, calls, training_calls


def mace_worker(model_name: str, mode: str, dtype_name: str, names: list[str], directory: Path):
    import torch
    from ase.data import atomic_numbers
    from mace import tools
    from mace.tools.compile import prepare

    sys.path.insert(0, str(ROOT / "tools"))
    from mace_torch_reference import build, mace_batch

    torch.set_default_dtype(getattr(torch, dtype_name))
    if mode == "file":  # --imported: the model file as MACECalculator runs it (loaded, cast to the dtype, eager)
        model = torch.load(imported_source(model_name, dtype_name), weights_only=False).to(getattr(torch, dtype_name)).eval()
        table = tools.AtomicNumberTable([int(z) for z in model.atomic_numbers])
        info, calls = {"compile_s": {}, "parameters": {}, "edges": {}}, {}
        for name in names:
            batch = mace_batch(structure(name), table)
            info["parameters"]["_".join(type_names(name))] = sum(p.numel() for p in model.parameters() if p.requires_grad)
            info["edges"][name] = int(batch["edge_index"].shape[1])
            calls[name] = lambda batch=batch: model(batch, compute_force=True)["forces"]
        return info, calls, {}
    models, info, calls, training_calls = {}, {"compile_s": {}, "parameters": {}, "edges": {}}, {}, {}
    for name in names:
        types = tuple(type_names(name))
        if types not in models:
            torch.manual_seed(0)
            if mode == "compile":  # as MACECalculator(compile_mode="default") does
                models[types] = torch.compile(prepare(build)(len(types), {"use_reduced_cg": False}), mode="default")
            else:
                models[types] = build(len(types), {"use_reduced_cg": False})
            info["parameters"]["_".join(types)] = sum(p.numel() for p in models[types].parameters() if p.requires_grad)
        model = models[types]
        batch = mace_batch(structure(name), tools.AtomicNumberTable([atomic_numbers[t] for t in types]))
        info["edges"][name] = int(batch["edge_index"].shape[1])
        if mode == "compile":  # the calculator's compiled call: inputs that require grad, training=True
            for parameter in model.parameters():
                parameter.requires_grad_(False)
            batch["positions"].requires_grad_(True)
            batch["node_attrs"].requires_grad_(True)
        calls[name] = lambda model=model, batch=batch: model(
            batch, compute_force=True, training=mode == "compile")["forces"]
        if mode != "compile":
            training_calls[name] = training_step(
                model, lambda model=model, batch=batch: model(batch, compute_force=True, training=True),
                "energy", "forces")
    return info, calls, training_calls


def fairchem_worker(model_name: str, mode: str, dtype_name: str, names: list[str], directory: Path):
    import torch

    sys.path.insert(0, str(ROOT / "tools"))
    from fairchem_reference import fairchem_batch, import_gemnet_oc

    if dtype_name != "float32":
        raise SystemExit("fairchem's graph code (radius_graph_pbc) runs in float32 only")
    GemNetOC = import_gemnet_oc()
    torch.manual_seed(0)
    model = GemNetOC(**gemnet_oc_options(model_name), otf_graph=True, regress_forces=True)
    info = {"compile_s": {}, "parameters": {}, "edges": {}}
    calls = {}
    for name in names:
        types = "_".join(type_names(name))
        # fairchem counts its scale factors as parameters: leave them out, as the other rows do
        info["parameters"][types] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        batch = fairchem_batch(structure(name))
        info["edges"][name] = int(model.get_graphs_and_indices(batch)[0]["edge_index"].shape[1])
        calls[name] = inference_call(model_name, lambda batch=batch: model(batch)["forces"])
    return info, calls, {}


def inference_call(model_name: str, call):
    """GemNet-OC's calls under torch.no_grad, as an inference calculator runs them: both implementations
    enable gradients inside for gradient forces, and direct forces then record no graph to the weights.
    nequip's and mace-torch's eager forward passes need the caller's grad mode, so theirs run as they are."""
    import torch

    if not model_name.startswith("gemnet_oc"):
        return call

    def without_graph():
        with torch.no_grad():
            return call()
    return without_graph


def training_step(model, forward, energy_key: str, forces_key: str):
    """One force-training step, the same for every implementation: ``forward()`` in training mode (forces
    keep their graph), loss = squared energies plus squared forces, its gradient; the model back in eval mode."""
    def step():
        model.train()
        outputs = forward()
        (outputs[energy_key].pow(2).sum() + outputs[forces_key].pow(2).sum()).backward()
        model.zero_grad(set_to_none=True)
        model.eval()
    return step


WORKERS = {"mlipkit": mlipkit_worker, "nequip": nequip_worker, "mace": mace_worker, "fairchem": fairchem_worker}


def serve(arguments: list[str]) -> None:
    """Worker side: set up, answer one JSON line per request on stdin."""
    import torch

    implementation, model_name, mode, dtype_name, *names = arguments
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever the peers print goes to stderr, not into the protocol
    directory = ROOT / "out" / "benchmark_peers" / "artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    info, calls, training_calls = WORKERS[implementation](model_name, mode, dtype_name, names, directory)
    info["training"] = bool(training_calls)
    print(json.dumps(info), file=protocol, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        torch.set_num_threads(request["threads"])
        call = (training_calls if request["kind"] == "training" else calls)[request["structure"]]
        times, peaks = [], []
        for _ in range(request["calls"]):
            gc.collect()
            before = reset_peak_memory()
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
            peaks.append(process_memory_kb("VmHWM") - before)
        print(json.dumps({"times": times, "peaks_kb": peaks}), file=protocol, flush=True)


def process_memory_kb(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident since the last reset) of this process, in KB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def reset_peak_memory() -> int:
    """Start a new peak (Linux: writing 5 to clear_refs resets VmHWM to VmRSS); returns the RSS it starts from.

    glibc keeps freed memory resident, which would hide the next call's peak inside the previous one's;
    malloc_trim hands it back first."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return process_memory_kb("VmRSS")


# ---------------------------------------------------------------- driver


class Worker:
    def __init__(self, implementation: str, model_name: str, mode: str, dtype_name: str, names: list[str]):
        self.label = f"{implementation} {mode}"
        python = ENVIRONMENTS[implementation] / "bin" / "python"
        if not python.exists():
            raise SystemExit(f"benchmark_peers: {python} is missing; run `bash tools/peer_envs.sh` first")
        environment = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", PYTHONWARNINGS="ignore")
        self.process = subprocess.Popen(
            [str(python), __file__, "--worker", implementation, model_name, mode, dtype_name, *names],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=environment)
        self.info = self.receive()

    def receive(self):
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"benchmark_peers: worker '{self.label}' died (exit {self.process.wait()})")
        return json.loads(line)

    def time(self, name: str, threads: int, calls: int, kind: str = "forces") -> dict:
        """{"times": seconds per call, "peaks_kb": each call's peak RSS above the RSS before it}; kind "forces"
        (energy+forces) or "training" (a force-training step)."""
        self.process.stdin.write(json.dumps({"structure": name, "threads": threads, "calls": calls, "kind": kind})
                                 + "\n")
        self.process.stdin.flush()
        return self.receive()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


def matmul_ceiling(dtype_name: str, threads: int) -> float:
    """GFLOP/s of a 2048 x 2048 GEMM, best of 5."""
    import torch

    torch.set_num_threads(threads)
    a = torch.randn(2048, 2048, dtype=getattr(torch, dtype_name))
    best = float("inf")
    for _ in range(6):
        started = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - started)
    return 2 * 2048**3 / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=["nequip", "mace"], choices=sorted(IMPLEMENTATIONS))
    parser.add_argument("--structures", nargs="+", default=list(STRUCTURES[:3]), choices=STRUCTURES)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=["float32", "float64"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per cell (median reported)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skip", nargs="*", default=[],
                        help="implementations to leave out, as 'model:implementation:mode', e.g. mace:mlipkit:e3nn")
    parser.add_argument("--reference-structures", nargs="*", default=["cu256", "water192"],
                        help="structures on which mlipkit's e3nn reference path is timed (it takes ~40 s a call "
                             "at 864 atoms in float64)")
    parser.add_argument("--no-training", dest="training", action="store_false",
                        help="leave out the force-training step of the eager implementations")
    parser.add_argument("--imported", action="store_true",
                        help="instead: a mace-torch model file and a nequip-train checkpoint, each imported (mlip-import) "
                             "and compiled, against the peer running the same file (mace-torch eager, nequip-compile's "
                             "AOTInductor); the peers write the files first")
    parser.add_argument("--output", type=Path, default=ROOT / "out" / "benchmark_peers")
    parser.add_argument("--plot-from", type=Path, metavar="JSON", help="only draw the bar chart of an earlier peers.json")
    parser.add_argument("--plot", type=Path, help="where --plot-from draws (default: beside the JSON)")
    arguments = parser.parse_args()
    if arguments.plot_from:
        report = json.loads(arguments.plot_from.read_text())
        plot_report(report, arguments.plot or arguments.plot_from.with_suffix(".png"))
        return
    if arguments.imported:
        arguments.models = ["imported_mace", "imported_nequip"]
        prepare_imported_sources(arguments.models, arguments.dtypes)
    arguments.output.mkdir(parents=True, exist_ok=True)
    ceilings = {(d, t): matmul_ceiling(d, t) for d in arguments.dtypes for t in arguments.threads}
    rows = []
    for model_name in arguments.models:
        for dtype_name in arguments.dtypes:
            workers = []
            for implementation, mode in IMPLEMENTATIONS[model_name]:
                if f"{model_name}:{implementation}:{mode}" in arguments.skip:
                    continue
                if implementation == "fairchem" and dtype_name != "float32":
                    continue
                started = time.perf_counter()
                print(f"[{model_name} {dtype_name}] starting {implementation} {mode}", flush=True)
                workers.append(Worker(implementation, model_name, mode, dtype_name, arguments.structures))
                print(f"    ready in {time.perf_counter() - started:.0f} s: {workers[-1].info}", flush=True)
            floors = next((w.info["flop_floor"] for w in workers if w.info.get("flop_floor")), {})
            cells = [(name, threads) for name in arguments.structures for threads in arguments.threads]
            kinds = ["forces", "training"] if arguments.training else ["forces"]
            timed = [(w, cell, kind) for kind in kinds for cell in cells for w in workers
                     if (w.label != "mlipkit e3nn" or cell[0] in arguments.reference_structures)
                     and (kind == "forces" or w.info["training"])]
            for worker, cell, kind in timed:
                worker.time(*cell, arguments.warmup, kind)
            times = {(w.label, cell, kind): [] for w, cell, kind in timed}
            peaks = {(w.label, cell, kind): [] for w, cell, kind in timed}
            for round_index in range(arguments.repeats):
                for worker, cell, kind in timed:
                    measured = worker.time(*cell, 1, kind)
                    times[worker.label, cell, kind] += measured["times"]
                    peaks[worker.label, cell, kind] += measured["peaks_kb"]
                print(f"[{model_name} {dtype_name}] round {round_index + 1}/{arguments.repeats} done", flush=True)
            for worker in workers:
                worker.close()
            for worker, (name, threads), kind in timed:
                key = (worker.label, (name, threads), kind)
                floor_ms = 1e3 * floors[name] / (ceilings[dtype_name, threads] * 1e9) if floors else None
                median_ms = 1e3 * statistics.median(times[key])
                rows.append({
                    "model": model_name, "implementation": worker.label, "dtype": dtype_name, "kind": kind,
                    "structure": name, "threads": threads, "median_ms": median_ms,
                    "times_ms": [1e3 * t for t in times[key]],
                    "parameters": worker.info["parameters"]["_".join(type_names(name))], "edges": worker.info["edges"][name],
                    "compile_s": worker.info["compile_s"], "flop_floor_gflop": floors[name] / 1e9 if floors else None,
                    "floor_ms": floor_ms, "time_over_floor": median_ms / floor_ms if floors else None,
                    "peak_kb_per_atom": statistics.median(peaks[key]) / len(structure(name)),
                })
            write_report(arguments.output, rows, ceilings)  # partial results survive an interrupted run
    write_report(arguments.output, rows, ceilings)


def machine_name() -> str:
    """The processor's model name and the core count, for a benchmark's report."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine()) if Path("/proc/cpuinfo").exists() else platform.machine()
    return f"{cpu}, {os.cpu_count()} cores"


def write_report(output: Path, rows: list[dict], ceilings: dict) -> None:
    machine = machine_name()
    date = time.strftime("%Y-%m-%d")
    (output / "peers.json").write_text(json.dumps({
        "date": date, "machine": machine, "rows": rows,
        "matmul_ceiling_gflops": {f"{d} {t} threads": v for (d, t), v in ceilings.items()}}, indent=1))
    lines = [f"Energy+forces per call, median ms ({date}, {machine}); floor = FLOP floor / measured matmul ceiling.", ""]
    ceiling_text = ", ".join(f"{d} {t} thread{'s' * (t > 1)}: {v:.0f}" for (d, t), v in ceilings.items())
    lines += [f"Matmul ceiling (GFLOP/s): {ceiling_text}.", ""]
    for model_name in dict.fromkeys(r["model"] for r in rows):
        training = [r for r in rows if r["model"] == model_name and r["kind"] == "training"]
        selected = [r for r in rows if r["model"] == model_name and r["kind"] == "forces"]
        cells = list(dict.fromkeys((r["structure"], r["dtype"], r["threads"]) for r in selected))
        implementations = list(dict.fromkeys(r["implementation"] for r in selected))
        type_sets = list(dict.fromkeys(" ".join(type_names(r["structure"])) for r in selected))
        lines += [f"**{model_name}**: parameters ({' / '.join(type_sets)}): " + ", ".join(
            f"{i} " + " / ".join(f"{count:,}" for count in dict.fromkeys(
                r["parameters"] for r in selected if r["implementation"] == i)) for i in implementations
        ) + "; compile s: " + ", ".join(
            f"{r['implementation']} {k} {r['dtype']} {v:.0f}" for r in selected for k, v in r["compile_s"].items()
            if r["structure"] == cells[0][0] and r["threads"] == cells[0][2]), ""]
        lines.append("| structure (edges) | dtype | threads | FLOP floor | floor ms | " + " | ".join(implementations)
                     + " | best mlipkit / best peer |")
        lines.append("|---" * (len(implementations) + 5) + "|---|")
        for name, dtype_name, threads in cells:
            cell = {r["implementation"]: r for r in selected
                    if (r["structure"], r["dtype"], r["threads"]) == (name, dtype_name, threads)}
            first = next(iter(cell.values()))
            mlipkit_best = min(r["median_ms"] for i, r in cell.items() if i.startswith("mlipkit"))
            peer_times = [r["median_ms"] for i, r in cell.items() if not i.startswith("mlipkit")]
            ratio = f"{mlipkit_best / min(peer_times):.2f}" if peer_times else "—"
            floor = f"{first['flop_floor_gflop']:.2f} GF | {first['floor_ms']:.0f}" if first["floor_ms"] else "— | —"
            lines.append(f"| {name} ({first['edges']}) | {dtype_name} | {threads} | {floor} | " + " | ".join(
                f"{cell[i]['median_ms']:.0f}" + (f" ({cell[i]['time_over_floor']:.1f}x)" if first["floor_ms"] else "")
                if i in cell else "—" for i in implementations) + f" | {ratio} |")
        lines += ["", f"Peak memory of one call, KB per atom ({model_name}; the process's peak RSS above its RSS "
                  "before the call, median over the calls):", ""]
        lines.append("| structure | dtype | threads | " + " | ".join(implementations) + " |")
        lines.append("|---" * (len(implementations) + 3) + "|")
        for name, dtype_name, threads in cells:
            cell = {r["implementation"]: r for r in selected
                    if (r["structure"], r["dtype"], r["threads"]) == (name, dtype_name, threads)}
            lines.append(f"| {name} | {dtype_name} | {threads} | " + " | ".join(
                f"{cell[i]['peak_kb_per_atom']:.0f}" if i in cell else "—" for i in implementations) + " |")
        lines.append("")
        if training:
            trained = list(dict.fromkeys(r["implementation"] for r in training))
            lines += [f"Force-training step ({model_name}; training mode, energy and forces with the graph kept, "
                      "loss E^2 + sum F^2, its gradient), median ms / peak KB per atom:", ""]
            lines.append("| structure | dtype | threads | " + " | ".join(trained) + " |")
            lines.append("|---" * (len(trained) + 3) + "|")
            for name, dtype_name, threads in cells:
                cell = {r["implementation"]: r for r in training
                        if (r["structure"], r["dtype"], r["threads"]) == (name, dtype_name, threads)}
                lines.append(f"| {name} | {dtype_name} | {threads} | " + " | ".join(
                    f"{cell[i]['median_ms']:.0f} / {cell[i]['peak_kb_per_atom']:.0f}" if i in cell else "—"
                    for i in trained) + " |")
            lines.append("")
    (output / "peers.md").write_text("\n".join(lines))
    print("\n".join(lines))
    plot_report({"date": date, "machine": machine, "rows": rows}, output / "peers.png")
    print(f"wrote {output / 'peers.md'}, {output / 'peers.json'} and {output / 'peers.png'}")


def plot_report(report: dict, path: Path) -> None:
    """Bar charts of energy+forces time and peak memory per atom: mlipkit's best and the best peer, per cell.

    Cells are (model, dtype, structure) at the largest thread count of the run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["rows"] if r["kind"] == "forces"]
    if not rows:
        return
    threads = max(r["threads"] for r in rows)
    cells = list(dict.fromkeys((r["model"], r["dtype"], r["structure"]) for r in rows if r["threads"] == threads))
    labels, best = [], {"mlipkit": ([], []), "peer": ([], [])}
    for model_name, dtype_name, name in cells:
        cell = [r for r in rows if (r["model"], r["dtype"], r["structure"], r["threads"]) == (model_name, dtype_name, name, threads)]
        sides = {"mlipkit": [r for r in cell if r["implementation"].startswith("mlipkit")],
                 "peer": [r for r in cell if not r["implementation"].startswith("mlipkit")]}
        if not sides["mlipkit"] or not sides["peer"]:
            continue
        labels.append(f"{model_name.removeprefix('imported_')}\n{dtype_name}\n{name}")
        for side, candidates in sides.items():
            best[side][0].append(min(r["median_ms"] for r in candidates))
            best[side][1].append(min(r["peak_kb_per_atom"] for r in candidates))
    if not labels:
        return
    figure, (time_axes, memory_axes) = plt.subplots(2, 1, figsize=(max(6.0, 0.9 * len(labels) + 2), 7), sharex=True)
    positions = range(len(labels))
    for axes, index, unit in ((time_axes, 0, "energy+forces (ms)"), (memory_axes, 1, "peak memory (KB/atom)")):
        for offset, side, colour in ((-0.2, "mlipkit", "tab:blue"), (0.2, "peer", "tab:grey")):
            values = best[side][index]
            bars = axes.bar([p + offset for p in positions], values, 0.4, color=colour,
                            label="mlipkit (best)" if side == "mlipkit" else "peer (best)")
            axes.bar_label(bars, [f"{v:.0f}" for v in values], fontsize=6, padding=1)
        axes.set_yscale("log")
        axes.set_ylabel(unit)
        axes.grid(axis="y", alpha=0.3)
    time_axes.legend(fontsize=8)
    time_axes.set_title(f"{report['date']}, {report['machine']}, {threads} threads (log scale)", fontsize=9)
    memory_axes.set_xticks(list(positions), labels, fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        serve(sys.argv[2:])
    else:
        main()
