"""Loading a compiled artifact in Python and evaluating it like a model.

``Artifact(path)`` validates the file and its metadata; ``artifact.run`` takes
the contract's inputs and returns its outputs by name; ``artifact(graph)``
returns the same fields as a model's forward (energy, node energies, forces,
virials, stress, the energy's std of mean-variance models), derived from the artifact's edge forces by the routine the
models use.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch

from mlipkit import ops
from mlipkit.compile.metadata import EXTENSIONS, TORCHSCRIPT_METADATA_FILE, ArtifactMetadata
from mlipkit.data import keys
from mlipkit.data.graph import AtomicGraph, batch_layout, compute_edge_vectors
from mlipkit.nn.derivatives import graph_energies, outputs_from_edge_forces
from mlipkit.nn.uncertainty import energy_uncertainty


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
        self.dtype = getattr(torch, self.metadata.dtype)
        ops.load_library()
        try:
            if self.metadata.mode == "aotinductor":
                self._runner = torch._inductor.aoti_load_package(str(self.path))
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", DeprecationWarning)
                    self._runner = torch.jit.load(str(self.path), map_location=self.device)
        except Exception as error:  # the loaders raise RuntimeError, OSError, ... for broken files
            raise ValueError(f"{self.path}: cannot load the compiled model ({error})") from error

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
    def direct_forces(self) -> bool:
        """Per-atom forces predicted directly (not a gradient): no stress or virial."""
        return keys.FORCES in self.metadata.outputs and not self.do_derivatives

    def run(
        self,
        atom_types: torch.Tensor,
        edge_index: torch.Tensor,
        edge_vectors: torch.Tensor,
        node_energy_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The artifact's raw outputs, by name; ``node_energy_mask`` (default: every atom) picks the atoms whose energies count."""
        num_atoms, num_edges = atom_types.shape[0], edge_index.shape[-1]
        takes_mask = keys.NODE_ENERGY_MASK in self.metadata.inputs
        if node_energy_mask is None:
            node_energy_mask = torch.ones(num_atoms, dtype=torch.bool, device=atom_types.device)
        elif not takes_mask and not bool(node_energy_mask.all()):
            raise ValueError(
                f"{self.path}: this '{self.metadata.target}' artifact counts every atom's energy; "
                "compile with --target lammps to mask atoms out"
            )
        expected = {
            keys.ATOM_TYPES: ((num_atoms,), torch.int64),
            keys.EDGE_INDEX: ((2, num_edges), torch.int64),
            keys.EDGE_VECTORS: ((num_edges, 3), self.dtype),
            keys.NODE_ENERGY_MASK: ((num_atoms,), torch.bool),
        }
        inputs = {
            keys.ATOM_TYPES: atom_types,
            keys.EDGE_INDEX: edge_index,
            keys.EDGE_VECTORS: edge_vectors,
            keys.NODE_ENERGY_MASK: node_energy_mask,
        }
        for name, (shape, dtype) in expected.items():
            tensor = inputs[name]
            if tuple(tensor.shape) != shape or tensor.dtype != dtype:
                raise ValueError(
                    f"{self.path}: input '{name}' must be {dtype} of shape {list(shape)}, "
                    f"got {tensor.dtype} of shape {list(tensor.shape)}"
                )
        receivers = edge_index[1]
        if num_edges > 1 and not bool((receivers[1:] >= receivers[:-1]).all()):
            raise ValueError(f"{self.path}: edge_index must be sorted by receiver (row 1 non-decreasing)")
        if num_atoms and (int(atom_types.min()) < 0 or int(atom_types.max()) >= len(self.type_names)):
            raise ValueError(f"{self.path}: atom_types must index the type names {self.type_names}")
        values = self._runner(*(inputs[name].to(self.device).contiguous() for name in self.metadata.inputs))
        return dict(zip(self.metadata.outputs, values))

    def __call__(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """The fields a model's forward gives, for one or more graphs."""
        edge_vectors = graph[keys.EDGE_VECTORS] if keys.EDGE_VECTORS in graph else compute_edge_vectors(graph)
        batch, num_graphs = batch_layout(graph)
        outputs = self.run(graph[keys.ATOM_TYPES], graph[keys.EDGE_INDEX], edge_vectors, graph.get(keys.NODE_ENERGY_MASK))
        outputs[keys.ENERGY] = graph_energies(outputs[keys.NODE_ENERGIES], graph, batch, num_graphs)
        if self.do_derivatives:
            outputs.update(outputs_from_edge_forces(graph, edge_vectors, outputs[keys.EDGE_FORCES], batch, num_graphs))
        if keys.NODE_ENERGY_UNCERTAINTY in outputs:
            outputs[keys.ENERGY_UNCERTAINTY] = energy_uncertainty(outputs[keys.NODE_ENERGY_UNCERTAINTY], graph, batch, num_graphs)
        return outputs
