"""Loading a compiled artifact in Python and evaluating it like a model.

``Artifact(path)`` validates the file and its metadata; ``artifact.run`` takes
the contract's inputs and returns its outputs by name; ``artifact(graph)``
returns the same fields as a model's forward (energy, node energies, forces,
virials, stress, the energy's std of mean-variance models), derived from the artifact's edge forces by the routine the
models use.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import torch
from torch._inductor.package import load_package

from mlipkit import ops
from mlipkit.compile.metadata import EXTENSIONS, TORCHSCRIPT_METADATA_FILE, ArtifactMetadata, torchscript_entry_file
from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, LongRangeInputs, batch_layout, compute_edge_vectors, graph_total_charges
from mlipkit.nn.derivatives import graph_energies, outputs_from_edge_forces, stress_from_virial
from mlipkit.nn.electrostatics import dipole_moments
from mlipkit.nn.uncertainty import energy_uncertainty


#: the artifact's main function (the AOTInductor package's default model name)
MAIN_ENTRY = "model"


def mode_of_path(path: Path) -> str:
    for mode, extension in EXTENSIONS.items():
        if path.suffix == extension:
            return mode
    raise ValueError(
        f"{path}: unknown artifact extension '{path.suffix}'; mlipkit artifacts end in "
        + " or ".join(f"'{e}' ({m})" for m, e in EXTENSIONS.items())
    )


def read_metadata(path: str | Path) -> ArtifactMetadata:
    """The metadata of an artifact, without loading its code."""
    path = Path(path)
    mode = _check_file(path)
    with zipfile.ZipFile(path) as archive:
        if mode == "aotinductor":
            # AOTInductor writes the metadata dict next to each compiled library
            names = [n for n in archive.namelist() if "/aotinductor/" in n and n.endswith("wrapper_metadata.json")]
            if names:
                return ArtifactMetadata.from_strings(json.loads(archive.read(names[0])), str(path))
        else:
            names = [n for n in archive.namelist() if n.endswith("/extra/" + TORCHSCRIPT_METADATA_FILE)]
            if names:
                return ArtifactMetadata.from_text(archive.read(names[0]).decode(), str(path))
    raise ValueError(f"{path} is not an mlipkit artifact (a zip archive without mlipkit {mode} metadata)")


def _check_file(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"artifact not found: {path}")
    mode = mode_of_path(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an mlipkit artifact (not a zip archive; truncated or corrupt?)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError) as error:
        raise ValueError(f"{path} is a corrupt archive ({error})") from None
    if bad is not None:
        raise ValueError(f"{path} is a corrupt archive (member '{bad}' fails its checksum)")
    return mode


def unoptimized(script: torch.jit.ScriptModule) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Calls of a TorchScript function through the graph executor's unoptimized plan.

    The profiling executor profiles the first calls and specializes on their
    shapes, which change at every MD step, and on the CPU it has nothing to
    fuse: GemNet-OC's calls took 1.9-2.9 s with it and 1.4-1.7 s without,
    NequIP's and MACE's the same after their first calls. The C++ runtime
    runs it the same way.
    """

    def call(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with torch.jit.optimized_execution(False):
            return script(*inputs)

    return call


class Artifact:
    """A compiled model; ``device`` defaults to the one it was compiled for."""

    def __init__(self, path: str | Path, device: str | torch.device | None = None):
        self.path = Path(path)
        self.metadata = read_metadata(self.path)
        self.device = torch.device(device or self.metadata.device)
        if self.device.type != self.metadata.device:
            raise ValueError(
                f"{self.path} was compiled for {self.metadata.device}; it cannot run on {self.device.type}"
            )
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"{self.path} was compiled for CUDA, but this torch has no usable GPU")
        self.dtype = getattr(torch, self.metadata.dtype)
        ops.load_library()
        try:
            self._runner = self._load(MAIN_ENTRY)
            self._entries = {entry: self._load(entry) for entry in self.metadata.entry_points}
        except Exception as error:  # the loaders raise RuntimeError, OSError, ... for broken files
            raise ValueError(f"{self.path}: cannot load the compiled model ({error})") from error

    def _load(self, entry: str):
        """One function of the artifact: a model of the AOTInductor package, or a TorchScript archive."""
        if self.metadata.mode == "aotinductor":
            return load_package(str(self.path), model_name=entry)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if entry == MAIN_ENTRY:
                return unoptimized(torch.jit.load(str(self.path), map_location=self.device))
            extra_files = {torchscript_entry_file(entry): b""}
            torch.jit.load(str(self.path), map_location=self.device, _extra_files=extra_files)
            return unoptimized(torch.jit.load(io.BytesIO(extra_files[torchscript_entry_file(entry)]), map_location=self.device))

    @property
    def type_names(self) -> list[str]:
        return self.metadata.type_names

    @property
    def r_max(self) -> float:
        return self.metadata.r_max

    @property
    def do_derivatives(self) -> bool:
        return keys.EDGE_FORCES in self.metadata.outputs

    @property
    def predicts_charges(self) -> bool:
        return keys.CHARGES in self.metadata.outputs

    @property
    def long_range_inputs(self) -> LongRangeInputs | None:
        """The long-range edge list (and Ewald's k vectors) the artifact takes; None without one."""
        if self.metadata.long_range_cutoff <= 0.0:
            return None
        return LongRangeInputs.for_coulomb(self.metadata.long_range_cutoff, self.metadata.coulomb_method, self.metadata.ewald_k_max)

    @property
    def direct_forces(self) -> bool:
        """Per-atom forces predicted directly (not a gradient): no stress or virial."""
        return keys.FORCES in self.metadata.outputs and not self.do_derivatives

    def checked_inputs(
        self,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        node_energy_mask: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> list[torch.Tensor]:
        """The inputs in the artifact's order, on its device, after checking names, dtypes, shapes and values."""
        num_atoms, num_edges = atom_types.shape[0], edge_index.shape[-1]
        takes_mask = keys.NODE_ENERGY_MASK in self.metadata.inputs
        if node_energy_mask is None:
            node_energy_mask = torch.ones(num_atoms, dtype=torch.bool, device=atom_types.device)
        elif not takes_mask and not bool(node_energy_mask.all()):
            raise ValueError(
                f"{self.path}: this '{self.metadata.target}' artifact counts every atom's energy; "
                "compile with --target lammps to mask atoms out"
            )
        inputs = {
            keys.ATOM_TYPES: atom_types,
            keys.EDGE_INDEX: edge_index,
            keys.EDGE_VECTORS: edge_vectors,
            keys.NODE_ENERGY_MASK: node_energy_mask,
            **extra,
        }
        num_lr_edges = inputs[keys.LR_EDGE_INDEX].shape[-1] if keys.LR_EDGE_INDEX in inputs else 0
        num_k = inputs[keys.K_INDICES].shape[0] if keys.K_INDICES in inputs else 0
        expected = {
            keys.ATOM_TYPES: ((num_atoms,), torch.int64),
            keys.EDGE_INDEX: ((2, num_edges), torch.int64),
            keys.EDGE_VECTORS: ((num_edges, 3), self.dtype),
            keys.NODE_ENERGY_MASK: ((num_atoms,), torch.bool),
            keys.TOTAL_CHARGE: ((1,), self.dtype),
            keys.CHARGE_SHIFT: ((1,), self.dtype),
            keys.CHARGE_SHIFT_WEIGHT: ((1,), self.dtype),
            keys.LR_EDGE_INDEX: ((2, num_lr_edges), torch.int64),
            keys.LR_EDGE_VECTORS: ((num_lr_edges, 3), self.dtype),
            keys.POSITIONS: ((num_atoms, 3), self.dtype),
            keys.CELL: ((1, 3, 3), self.dtype),
            keys.PBC: ((1, 3), torch.bool),
            keys.K_INDICES: ((num_k, 3), self.dtype),
        }
        missing = [name for name in self.metadata.inputs if name not in inputs]
        unknown = sorted(set(extra) - set(self.metadata.inputs))
        if missing or unknown:
            raise ValueError(f"{self.path}: the artifact takes {self.metadata.inputs}; missing {missing}, not taken {unknown}")
        for name in self.metadata.inputs:
            shape, dtype = expected[name]
            tensor = inputs[name]
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise ValueError(
                    f"{self.path}: input '{name}' must be {dtype} of shape {list(shape)}, "
                    f"got {tensor.dtype} of shape {list(tensor.shape)}"
                )
        for name in (keys.EDGE_INDEX, keys.LR_EDGE_INDEX):
            receivers = inputs[name][1] if name in inputs else None
            if receivers is not None and receivers.numel() > 1 and not bool((receivers[1:] >= receivers[:-1]).all()):
                raise ValueError(f"{self.path}: {name} must be sorted by receiver (row 1 non-decreasing)")
        if num_atoms and (int(atom_types.min()) < 0 or int(atom_types.max()) >= len(self.type_names)):
            raise ValueError(f"{self.path}: atom_types must index the type names {self.type_names}")
        self.check_total_charge(inputs.get(keys.TOTAL_CHARGE))
        return [inputs[name].to(self.device).contiguous() for name in self.metadata.inputs]

    def run(
        self,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        node_energy_mask: torch.Tensor | None = None,
        **extra: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The artifact's raw outputs, by name; ``node_energy_mask`` (default: every atom) picks the atoms whose
        energies count; ``extra`` holds the inputs of models with charges, by name (see metadata.inputs)."""
        values = self._runner(*self.checked_inputs(atom_types, edge_index, edge_vectors, node_energy_mask, **extra))
        return dict(zip(self.metadata.outputs, values))

    def run_entry(self, entry: str, **inputs: torch.Tensor) -> torch.Tensor:
        """Another function of the artifact (metadata.entry_points), with the main one's inputs by name."""
        if entry not in self._entries:
            raise ValueError(f"{self.path} has no entry point '{entry}' (it has {self.metadata.entry_points})")
        (value,) = self._entries[entry](*self.checked_inputs(**inputs))
        return value

    def check_total_charge(self, total_charge: torch.Tensor | None) -> None:
        """The categorical total-charge embedding knows only the training data's total charges."""
        known = [float(value) for value in self.metadata.available_total_charges]
        if total_charge is None or not known:
            return
        value = float(total_charge.reshape(-1)[0])
        if value not in known:
            raise ValueError(f"{self.path}: total charge {value} was not seen in training; the model knows {known}")

    def __call__(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """The fields a model's forward gives, for one graph (or several, for artifacts without charges)."""
        batch, num_graphs = batch_layout(graph)
        inputs = artifact_inputs(graph, self.metadata.inputs, self.dtype)
        outputs = self.run(**inputs)
        outputs[keys.ENERGY] = graph_energies(outputs[keys.NODE_ENERGIES], graph, batch, num_graphs)
        if self.do_derivatives and keys.VIRIAL in outputs:
            # target 'ase': the forces and virials of the whole input come from the artifact itself
            if keys.CELL in graph and keys.PBC in graph:
                outputs[keys.STRESS] = stress_from_virial(outputs[keys.VIRIAL], graph[keys.CELL], graph[keys.PBC])
        elif self.do_derivatives:
            lr_edges = None
            if keys.LR_EDGE_FORCES in outputs:
                lr_edges = (inputs[keys.LR_EDGE_VECTORS], outputs[keys.LR_EDGE_FORCES])
            position_gradient = -outputs[keys.POSITION_FORCES] if keys.POSITION_FORCES in outputs else None
            outputs.update(
                outputs_from_edge_forces(
                    graph, inputs[keys.EDGE_VECTORS], outputs[keys.EDGE_FORCES], batch, num_graphs, lr_edges,
                    position_gradient, outputs.get(keys.CELL_GRADIENT),
                )
            )
        if keys.NODE_ENERGY_UNCERTAINTY in outputs:
            outputs[keys.ENERGY_UNCERTAINTY] = energy_uncertainty(outputs[keys.NODE_ENERGY_UNCERTAINTY], graph, batch, num_graphs)
        if keys.CHARGES in outputs and keys.POSITIONS in graph:
            outputs[keys.DIPOLE] = dipole_moments(outputs[keys.CHARGES], graph[keys.POSITIONS], batch, num_graphs, graph.get(keys.PBC))
        return outputs


def artifact_inputs(graph: AtomicGraph, names: list[str], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """An artifact's inputs (those it names) from a graph: edge vectors from positions and shifts, every atom counted,
    a neutral total charge and the shift left to the model unless the graph has them."""
    one = lambda value: torch.tensor([value], dtype=dtype)  # noqa: E731
    sources = {
        keys.ATOM_TYPES: lambda: graph[keys.ATOM_TYPES],
        keys.EDGE_INDEX: lambda: graph[keys.EDGE_INDEX],
        keys.EDGE_VECTORS: lambda: graph[keys.EDGE_VECTORS] if keys.EDGE_VECTORS in graph else compute_edge_vectors(graph),
        keys.NODE_ENERGY_MASK: lambda: graph.get(keys.NODE_ENERGY_MASK, torch.ones_like(graph[keys.ATOM_TYPES], dtype=torch.bool)),
        keys.TOTAL_CHARGE: lambda: graph_total_charges(graph, 1, dtype),
        keys.CHARGE_SHIFT: lambda: graph.get(keys.CHARGE_SHIFT, one(float("nan"))),
        keys.CHARGE_SHIFT_WEIGHT: lambda: graph.get(keys.CHARGE_SHIFT_WEIGHT, one(0.0)),
        keys.LR_EDGE_INDEX: lambda: graph[keys.LR_EDGE_INDEX],
        keys.LR_EDGE_VECTORS: lambda: compute_edge_vectors(graph, keys.LR_EDGE_INDEX, keys.LR_EDGE_CELL_SHIFTS),
        keys.POSITIONS: lambda: graph[keys.POSITIONS],
        keys.CELL: lambda: graph[keys.CELL],
        keys.PBC: lambda: graph[keys.PBC],
        keys.K_INDICES: lambda: graph[keys.K_INDICES],
    }
    values = {}
    for name in names:
        value = sources[name]()
        values[name] = value.to(dtype) if value.is_floating_point() else value
    return values


def model_units(model) -> str:
    """The LAMMPS unit style of a model object's or compiled artifact's energies ("metal" or "real")."""
    return model.metadata.units if isinstance(model, Artifact) else model.config.units


def load_model_or_artifact(model, device: str | torch.device | None = None):
    """What the engine adapters run: a model object as it is, a compiled artifact (``.pt2``/``.pt``) loaded
    for ``device``, or a checkpoint rebuilt and moved there."""
    from mlipkit.models.checkpoint import load_checkpoint

    if isinstance(model, (str, Path)):
        if Path(model).suffix in EXTENSIONS.values():
            return Artifact(model, device)
        model = load_checkpoint(model)
    if isinstance(model, Artifact):
        return model
    return model.to(torch.device(device or "cpu")).eval()

