"""Export a model to a self-describing artifact, verified before it is written.

Route: the model (with autograd forces) is traced once by ``make_fx`` into a
graph of aten and mlipkit ops with symbolic numbers of atoms and edges; that
graph is compiled by AOTInductor (``.pt2``) or scripted for TorchScript (``.pt``). The artifact is written beside the
output path, loaded back, evaluated on structures of other sizes than the
traced one, compared with the eager model, and only then moved into place.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.fx.config
import torch.utils._pytree as pytree
from torch import nn
from torch._inductor import cpp_builder
from torch._inductor.package import package_aoti
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.graph import _PyTreeCodeGen, _PyTreeInfo

from mlipkit.compile.artifact import MAIN_ENTRY, Artifact, artifact_inputs, mode_of_path
from mlipkit.compile.metadata import (
    EXTENSIONS,
    INPUTS,
    TARGET_INPUTS,
    TARGET_OUTPUTS,
    TORCHSCRIPT_METADATA_FILE,
    UNIT_NAMES,
    ArtifactMetadata,
    ExportMode,
    ExportTarget,
    artifact_outputs,
    config_hash,
    electrostatics_inputs,
    electrostatics_outputs,
    entry_points,
    torchscript_entry_file,
)
from mlipkit.compile.modifiers import apply_modifiers
from mlipkit.data import keys
from mlipkit.data.extxyz import Configuration
from mlipkit.data.graph import AtomicGraph, graph_from_configuration
from mlipkit.models.checkpoint import load_checkpoint, model_dtype
from mlipkit.models.potential import Potential
from mlipkit.version import __version__

#: Largest relative difference (||artifact - eager|| / ||eager||) accepted per output.
VERIFY_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
#: Op libraries every artifact needs (the model's graph calls torch.ops.mlipkit.*).
OP_LIBRARIES = ["mlipkit_ops"]
#: AOTInductor settings: the generated wrapper only launches kernels, so it is
#: built at -O0 (tens of seconds less, no measurable run-time cost). Inductor's
#: reordering for peak memory is off: its estimate cannot size the graph's
#: data-dependent edge counts, and it moved every block's radial projections to
#: the start (GemNet-OC with direct forces, 66 atoms: 276 MB a call with it,
#: 167 MB without; NequIP and MACE the same either way). Fusion tries 16 partners
#: a shared buffer instead of 64, and loops have no separate vectorized tail
#: (the features' widths are multiples of the vector length): the OC20-size
#: GemNet-OC's scheduler 13 -> 7 s, kernel code generation 17 -> 12 s, same
#: run time (NequIP, MACE and GemNet-OC within 1 %).
AOTI_OPTIONS = {
    "aot_inductor.compile_wrapper_opt_level": "O0",
    "reorder_for_peak_memory": False,
    "max_fusion_buffer_group_pairwise_attempts": 16,
    "cpp.enable_loop_tail_vec": False,
}
#: g++ optimization level of AOTInductor's kernel file (PyTorch fixes it at O3; see quicker_aotinductor_build)
KERNEL_OPTIMIZATION = "O2"


class CompileError(RuntimeError):
    """A model the artifact contract cannot carry, or an artifact unequal to the eager model (then not written)."""


@dataclass
class CompileReport:
    path: Path
    metadata: ArtifactMetadata
    timings: dict[str, float] = field(default_factory=dict)
    #: structure name -> largest relative difference (see relative_difference) to the eager model over all outputs
    verification: dict[str, float] = field(default_factory=dict)


class ExportablePotential(nn.Module):
    """The artifact's calling convention around a Potential: named tensors in, a tuple out."""

    def __init__(self, model: Potential, inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.model = model
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)

    def forward(self, *tensors: torch.Tensor):
        results = self.model(dict(zip(self.inputs, tensors)))
        return tuple(results[name] for name in self.outputs)


def probe_structure(type_names: Sequence[str], r_max: float, repeats: tuple[int, int, int], periodic: bool, seed: int) -> Configuration:
    """A rattled, sheared fcc arrangement scaled to r_max (about 40 neighbours each), types in turn."""
    nearest = 0.55 * r_max
    a = nearest * np.sqrt(2.0)
    basis = np.array([[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]) * a
    cells = np.stack(np.meshgrid(*(np.arange(n) for n in repeats), indexing="ij"), -1).reshape(-1, 3) * a
    positions = (cells[:, None, :] + basis[None]).reshape(-1, 3)
    shear = np.array([[1.0, 0.04, 0.02], [0.03, 1.0, -0.05], [0.02, 0.06, 1.0]])
    cell = np.diag(np.array(repeats, dtype=np.float64) * a) @ shear
    positions = positions @ shear + np.random.default_rng(seed).normal(scale=0.04 * nearest, size=positions.shape)
    symbols = [type_names[i % len(type_names)] for i in range(len(positions))]
    return Configuration(symbols=symbols, positions=positions, cell=cell if periodic else np.zeros((3, 3)), pbc=np.array([periodic] * 3))


def contract_inputs(
    graph: AtomicGraph, device: torch.device, inputs: Sequence[str] = INPUTS, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, ...]:
    """The artifact's inputs for a graph, in the order ``inputs`` names them (every atom counts unless masked);
    floating-point inputs in ``dtype`` (default: the positions')."""
    values = artifact_inputs(graph, list(inputs), dtype or graph[keys.POSITIONS].dtype)
    return tuple(values[name].to(device) for name in inputs)


def example_graph(model: Potential, configuration: Configuration, dtype: torch.dtype) -> AtomicGraph:
    """A structure's graph with the long-range inputs and a total charge the model knows."""
    graph = graph_from_configuration(configuration, model.r_max, model.type_names, dtype, model.long_range_inputs)
    if keys.TOTAL_CHARGE in model.graph_input_fields:
        known = list(getattr(model.config, "available_total_charges", None) or [1.0])
        graph[keys.TOTAL_CHARGE] = torch.tensor([known[-1]], dtype=dtype)
    return graph


def verification_graphs(model: Potential, dtype: torch.dtype, inputs: Sequence[str]) -> dict[str, AtomicGraph]:
    """Structures of other sizes than the traced one: periodic triclinic, and a non-periodic cluster.

    Every third atom's energy is masked out, as LAMMPS masks ghost atoms. An
    artifact that takes the charge correction's shift is also checked with a
    given shift and weight, as several LAMMPS ranks give them.
    """
    shapes = {"periodic_32_atoms": ((2, 2, 2), True), "cluster_12_atoms": ((1, 1, 3), False)}
    graphs = {}
    for seed, (name, (repeats, periodic)) in enumerate(shapes.items()):
        configuration = probe_structure(model.type_names, model.r_max, repeats, periodic, seed)
        graph = example_graph(model, configuration, dtype)
        graph[keys.NODE_ENERGY_MASK] = torch.arange(len(configuration.symbols)) % 3 != 0
        graphs[name] = graph
    if keys.CHARGE_SHIFT in inputs:
        given = dict(graphs["periodic_32_atoms"])
        given[keys.CHARGE_SHIFT] = torch.tensor([0.03], dtype=dtype)
        given[keys.CHARGE_SHIFT_WEIGHT] = torch.tensor([-0.7], dtype=dtype)
        graphs["periodic_32_atoms_given_charge_shift"] = given
    return graphs


def trace(module: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> torch.fx.GraphModule:
    """make_fx with symbolic shapes: autograd.grad becomes explicit backward ops.

    What no output needs (a dipole, a stress of the graph's cell) is dropped:
    the artifact would compute it for nothing, and TorchScript cannot script
    the NaN constants some of it holds.
    """
    graph_module = make_fx(module, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example_inputs)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


#: The traced functions of an artifact: entry name -> (graph, its output names); "model" is the main one
TracedEntries = dict[str, tuple[torch.fx.GraphModule, list[str]]]


@contextlib.contextmanager
def quicker_aotinductor_build(kernel_optimization: str = KERNEL_OPTIMIZATION):
    """Two compile-time savings AOTI_OPTIONS cannot express (OC20-size GemNet-OC, gradient forces).

    g++ builds Inductor's kernel file at ``-{kernel_optimization}`` where PyTorch fixes -O3: Inductor
    vectorizes its kernels itself, and -O3 only doubled g++'s time on the file (26 s against 12 s) with no
    speed to show for it (slab66 1.07 s a call either way; NequIP and MACE on 864 atoms within 1 %);
    PyTorch's flag function is wrapped while the context lasts. AOT autograd's re-trace records no Python
    stack trace per node (6 of its 21 s in a sampling profile); the graph's nodes keep their names.
    """
    # an older torch (a CUDA build a GPU user chose) may lack either hook; the compile is then only slower
    original = getattr(cpp_builder, "_get_optimization_cflags", None)
    stack_trace_switch = hasattr(torch.fx.config, "do_not_emit_stack_traces")

    def flags(cpp_compiler: str, min_optimize: bool = False) -> tuple[list[str], list[str]]:
        cflags, ldflags = original(cpp_compiler, min_optimize)
        return [kernel_optimization if flag == "O3" else flag for flag in cflags], ldflags

    if original is not None:
        cpp_builder._get_optimization_cflags = flags
    if stack_trace_switch:
        emitted_stack_traces = torch.fx.config.do_not_emit_stack_traces
        torch.fx.config.do_not_emit_stack_traces = True
    try:
        yield
    finally:
        if original is not None:
            cpp_builder._get_optimization_cflags = original
        if stack_trace_switch:
            torch.fx.config.do_not_emit_stack_traces = emitted_stack_traces


def inductor_options(options: dict[str, object]) -> dict[str, object]:
    """``options`` less those this torch's Inductor does not have: AOTI_OPTIONS's settings, which only save
    compile time, are newer than some torch releases (a CUDA build a GPU user chose)."""
    known = {}
    for key, value in options.items():
        *sections, name = key.split(".")
        holder = torch._inductor.config
        for section in sections:
            holder = getattr(holder, section, None)
        if holder is not None and hasattr(holder, name):
            known[key] = value
    return known


def export_aotinductor(entries: TracedEntries, path: Path, metadata: ArtifactMetadata) -> None:
    """Compile each traced graph straight into one package, without a torch.export re-trace.

    The graph's placeholders carry make_fx's fake tensors with symbolic sizes;
    compiling with those as example inputs keeps the numbers of atoms and edges
    dynamic. A pytree signature (three tensors in, a tuple out) lets PyTorch's
    own package loader call the result. Skipping torch.export's re-trace took
    the default NequIP's float32 compile from 278 s to 187 s on 2 cores. Other
    entry points are further models of the package, under their names.
    """
    options = dict(inductor_options(AOTI_OPTIONS), **{"aot_inductor.package": True, "aot_inductor.metadata": metadata.to_strings()})
    files = {}
    with warnings.catch_warnings(), quicker_aotinductor_build():
        # PyTorch's own packaging code trips its pytree deprecation warning
        warnings.filterwarnings("ignore", "`isinstance\\(treespec, LeafSpec\\)` is deprecated", FutureWarning)
        for name, (graph_module, outputs) in entries.items():
            placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
            fake_inputs = tuple(node.meta["val"] for node in placeholders)
            in_spec = pytree.tree_flatten((fake_inputs, {}))[1]
            out_spec = pytree.tree_flatten(tuple(outputs))[1]
            graph_module.graph._codegen = _PyTreeCodeGen(_PyTreeInfo(list(metadata.inputs), in_spec, out_spec))
            graph_module.recompile()
            files[name] = torch._inductor.aot_compile(graph_module, fake_inputs, options=options)
        package_aoti(str(path), files if len(files) > 1 else files[MAIN_ENTRY])


def script(graph_module: torch.fx.GraphModule) -> torch.jit.ScriptModule:
    """Script a traced graph; TorchScript resolves overloads itself, so calls name op packets.

    A tensor's value read as a size (GemNet-OC's largest number of triplets per edge) is a Scalar to
    TorchScript, which sizes must not be: an ``int()`` is put after each integer one.
    """
    graph = graph_module.graph
    for node in list(graph.nodes):
        argument = node.args[0] if node.op == "call_function" and node.args else None
        source = argument.meta.get("val") if isinstance(argument, torch.fx.Node) else None
        if node.target is torch.ops.aten._local_scalar_dense.default and source is not None and not source.is_floating_point():
            with graph.inserting_after(node):
                as_int = graph.call_function(int, (node,))
            node.replace_all_uses_with(as_int, delete_user_cb=lambda user: user is not as_int)
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            node.target = node.target.overloadpacket
    graph_module.recompile()
    with warnings.catch_warnings():
        # TorchScript is deprecated upstream but still the most portable route; say so once in the docs (docs/compiling.md)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "The TorchScript type system", UserWarning)
        return torch.jit.script(graph_module)


def export_torchscript(entries: TracedEntries, path: Path, metadata: ArtifactMetadata) -> None:
    """The main entry as the archive; other entry points as TorchScript archives in its extra files."""
    extra_files = {TORCHSCRIPT_METADATA_FILE: metadata.to_text()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, (graph_module, _) in entries.items():
            if name != MAIN_ENTRY:
                buffer = io.BytesIO()
                torch.jit.save(script(graph_module), buffer)
                extra_files[torchscript_entry_file(name)] = buffer.getvalue()
        script(entries[MAIN_ENTRY][0]).save(str(path), _extra_files=extra_files)


def relative_difference(value: torch.Tensor, reference: torch.Tensor, scale: float = 0.0) -> float:
    """||value - reference|| / max(||reference||, scale) over all entries (inf for a shape mismatch or NaN).

    Norms rather than the largest entry: in float32 a single small entry that is
    a sum of cancelling terms differs by many ulps without anything being wrong.
    """
    value, reference = value.detach().double().cpu(), reference.detach().double().cpu()
    if value.shape != reference.shape:
        return float("inf")
    if reference.numel() == 0:
        return 0.0
    difference = float(torch.linalg.norm(value - reference) / max(float(torch.linalg.norm(reference)), scale, 1e-300))
    # NaN anywhere (in either) is a failure, and must not slip through comparisons as NaN does
    return difference if math.isfinite(difference) else float("inf")


def verify(artifact: Artifact, model: Potential, graphs: dict[str, AtomicGraph]) -> dict[str, float]:
    """Largest relative difference between artifact and eager model per structure; raises past tolerance."""
    tolerance = VERIFY_TOLERANCE[artifact.dtype]
    exportable = ExportablePotential(model, artifact.metadata.inputs, artifact.metadata.outputs)
    entries = {entry: ExportablePotential(model, artifact.metadata.inputs, [entry]) for entry in artifact.metadata.entry_points}
    differences = {}
    for name, graph in graphs.items():
        inputs = contract_inputs(graph, artifact.device, artifact.metadata.inputs, artifact.dtype)
        named_inputs = dict(zip(artifact.metadata.inputs, inputs))
        expected = dict(zip(artifact.metadata.outputs, exportable(*inputs)))
        produced = artifact.run(**named_inputs)
        per_output = {output: relative_difference(produced[output], expected[output]) for output in expected}
        for entry, entry_exportable in entries.items():
            per_output[entry] = relative_difference(artifact.run_entry(entry, **named_inputs), entry_exportable(*inputs)[0])
        worst = max(per_output, key=per_output.get)
        if not per_output[worst] <= tolerance:
            raise CompileError(
                f"verification failed on {name}: output '{worst}' differs from the eager model by "
                f"{per_output[worst]:.3g} (relative; tolerance {tolerance:g} for {artifact.metadata.dtype}); "
                "the artifact was not written"
            )
        differences[name] = per_output[worst]
    return differences


def _check_exportable(model: Potential, target: str) -> None:
    if model.extra_input_fields:
        raise CompileError(
            f"the model reads graph fields {model.extra_input_fields} beyond types and geometry; "
            "the artifact contract (atom_types, edge_index, edge_vectors) cannot feed them"
        )
    if target != "energy" and not (model.do_derivatives or model.direct_forces):
        raise CompileError(
            f"the model is energy-only, so target '{target}' has no forces: apply the modifier "
            "enable_ForceStressOutput, or compile with --target energy"
        )
    if target == "lammps" and model.depends_on_atom_order:
        raise CompileError(
            "the model caps neighbours by fairchem's rule (cap_symmetrization: lower_index), which depends on the "
            "atoms' order, and LAMMPS renumbers atoms as they move: apply the modifier symmetric_neighbour_caps "
            "(a pair kept when either atom is within the other's cap), or compile --target ase"
        )
    spaced = [name for name in model.type_names if not name or any(c.isspace() for c in name)]
    if spaced:
        raise CompileError(f"type names {spaced} contain whitespace, which the artifact metadata cannot hold")


def trace_entries(model: Potential, metadata: ArtifactMetadata, example_inputs: tuple[torch.Tensor, ...]) -> TracedEntries:
    """The main function, and each other entry point, traced; the charge correction's terms need no forces."""
    entries = {MAIN_ENTRY: (trace(ExportablePotential(model, metadata.inputs, metadata.outputs), example_inputs), list(metadata.outputs))}
    for entry in metadata.entry_points:
        derivatives, model.do_derivatives = model.do_derivatives, False
        try:
            entries[entry] = (trace(ExportablePotential(model, metadata.inputs, [entry]), example_inputs), [entry])
        finally:
            model.do_derivatives = derivatives
    return entries


def electrostatics_metadata(model: Potential) -> dict[str, object]:
    """The metadata fields of models with charges (left at their defaults otherwise)."""
    config = model.config
    fields: dict[str, object] = {}
    if getattr(model.core, "total_charge_embedding", None) is not None and config.use_total_charge_embedding == "categorical":
        fields["available_total_charges"] = [repr(float(q)) for q in config.available_total_charges]
    if model.predicts_charges:
        fields["charge_correction"] = model.partial_charges.correction
    if model.coulomb is not None:
        fields.update(
            long_range_cutoff=config.coulomb.long_range_cutoff, coulomb_method=model.coulomb.method, ewald_k_max=config.coulomb.k_max
        )
    return fields


def compile_model(
    model: Potential,
    output: str | Path,
    mode: ExportMode = "aotinductor",
    target: ExportTarget = "lammps",
    device: str = "cpu",
    modifiers: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> CompileReport:
    """Export ``model`` (in its dtype) to ``output``; ``modifiers`` are recorded as already applied."""
    log = log or (lambda message: None)
    output = Path(output)
    if mode not in EXTENSIONS:
        raise CompileError(f"unknown mode '{mode}'; choose one of {list(EXTENSIONS)}")
    if target not in TARGET_OUTPUTS:
        raise CompileError(f"unknown target '{target}'; choose one of {list(TARGET_OUTPUTS)}")
    if mode_of_path(output) != mode:
        raise CompileError(f"{output}: {mode} artifacts end in '{EXTENSIONS[mode]}', not '{output.suffix}'")
    if device == "cuda" and not torch.cuda.is_available():
        raise CompileError("--device cuda needs a CUDA build of PyTorch and a GPU; this machine has neither")
    _check_exportable(model, target)
    dtype = model_dtype(model)
    model = copy.deepcopy(model).to(device).eval()
    model.do_derivatives = target != "energy" and not model.direct_forces
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    total_charge = keys.TOTAL_CHARGE in model.graph_input_fields
    global_correction = model.predicts_charges and model.partial_charges.correction != "none"
    halo_exchange = target == "lammps" and model.can_exchange_halos
    halo_exchange_width = model.enable_halo_exchange() if halo_exchange else 0
    coulomb_method = model.coulomb.method if model.coulomb is not None else None
    metadata = ArtifactMetadata(
        model_name=model.model_name,
        type_names=model.type_names,
        r_max=model.r_max,
        num_message_passing_layers=model.num_message_passing_layers,
        units=model.config.units,
        energy_unit=UNIT_NAMES[model.config.units][0],
        length_unit=UNIT_NAMES[model.config.units][1],
        dtype=str(dtype).removeprefix("torch."),
        device=device,
        mode=mode,
        target=target,
        inputs=list(TARGET_INPUTS[target]) + electrostatics_inputs(total_charge, global_correction, coulomb_method, target),
        outputs=artifact_outputs(target, model.energy_uncertainty_readout is not None, model.direct_forces)
        + electrostatics_outputs(model.predicts_charges, global_correction, coulomb_method, target),
        entry_points=entry_points(global_correction, target),
        op_libraries=OP_LIBRARIES,
        modifiers=list(modifiers),
        mlipkit_version=__version__,
        torch_version=torch.__version__,
        config_hash=config_hash(model.model_name, model.config),
        halo_exchange=halo_exchange,
        halo_exchange_width=halo_exchange_width,
        **electrostatics_metadata(model),
    )
    report = CompileReport(output, metadata)

    def stage(name: str, work: Callable[[], object]) -> object:
        start = time.perf_counter()
        result = work()
        report.timings[name] = time.perf_counter() - start
        log(f"  {name:<10} {report.timings[name]:7.1f} s")
        return result

    example = example_graph(model, probe_structure(model.type_names, model.r_max, (2, 1, 1), True, 7), dtype)
    example_inputs = contract_inputs(example, torch.device(device), metadata.inputs, dtype)
    entries = stage("trace", lambda: trace_entries(model, metadata, example_inputs))
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")
    output.parent.mkdir(parents=True, exist_ok=True)
    try:
        if mode == "aotinductor":
            stage("compile", lambda: export_aotinductor(entries, partial, metadata))
        else:
            stage("script", lambda: export_torchscript(entries, partial, metadata))
        artifact = stage("load", lambda: Artifact(partial))
        report.verification = stage("verify", lambda: verify(artifact, model, verification_graphs(model, dtype, metadata.inputs)))
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return report


def compile_checkpoint(
    checkpoint: str | Path,
    output: str | Path,
    mode: ExportMode = "aotinductor",
    dtype: torch.dtype | None = None,
    device: str = "cpu",
    target: ExportTarget = "lammps",
    modifiers: Sequence[str] = (),
    log: Callable[[str], None] | None = None,
) -> CompileReport:
    """``mlip-compile``: load, modify, export, verify; ``dtype`` defaults to the checkpoint's."""
    start = time.perf_counter()
    model = load_checkpoint(checkpoint, dtype)
    applied = apply_modifiers(model, modifiers)
    loaded = time.perf_counter() - start
    if log:
        log(f"  {'load ckpt':<10} {loaded:7.1f} s")
    report = compile_model(model, output, mode, target, device, applied, log)
    report.timings = {"load checkpoint": loaded, **report.timings}
    return report
