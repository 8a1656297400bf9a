"""Reference figures from mace-torch: parameter counts, construction time, energy+forces time.

Runs in a separate environment that has mace-torch (it pins e3nn 0.4.4, which
mlipkit's e3nn 0.6 environment cannot share), for example:

    python -m venv /tmp/mace-ref && /tmp/mace-ref/bin/pip install torch==2.13.0 \
        e3nn==0.4.4 opt_einsum opt-einsum-fx ase matscipy torch-ema prettytable h5py \
        torchmetrics python-hostlist configargparse GitPython pyyaml tqdm lmdb orjson pandas matplotlib
    /tmp/mace-ref/bin/pip install --no-deps mace-torch==0.3.16
    # optional, for use_reduced_cg: cuequivariance cuequivariance-torch (and networkx scipy sympy)
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 /tmp/mace-ref/bin/python tools/mace_torch_reference.py

(e3nn 0.4.4 loads its constants with torch.load, hence the environment
variable.) The counts it prints are the ones tests/test_mace.py compares
mlipkit's MACE with; tools/benchmark_compile.py --model mace gives mlipkit's
own timings. With ``--fixture PATH`` it also writes the weights, energies and
forces of a small mace-torch model (every coupling path) on a 32-atom cell,
with fingerprints of its coupling coefficients (each path contracted with
fixed probe vectors), from which tests/test_mace.py loads the same weights
into mlipkit's MACE and compares the numbers.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from ase.build import bulk
from e3nn import o3
from mace import data, modules, tools

#: (number of elements, options in mlipkit's spelling) as in tests/test_mace.py
CONFIGS = [
    (1, {"use_reduced_cg": False}),
    (1, {}),
    (2, {"use_reduced_cg": False}),
    (2, {"use_reduced_cg": False, "interaction_first": "RealAgnosticInteractionBlock"}),
    (3, {"hidden_irreps": "32x0e + 32x1o + 32x2e", "max_ell": 2, "correlation": 2, "num_interactions": 3, "use_reduced_cg": False}),
    (3, {"hidden_irreps": "32x0e + 32x1o + 32x2e", "max_ell": 2, "correlation": 2, "num_interactions": 3}),
    (2, {"hidden_irreps": "16x0e + 16x0o + 16x1o + 16x1e", "max_ell": 2}),
    (2, {"hidden_irreps": "8x0e + 8x1o", "correlation": 4}),
    (2, {"hidden_irreps": "8x0e + 8x1o", "correlation": 4, "use_reduced_cg": False}),
    (1, {"hidden_irreps": "16x0e", "max_ell": 1, "correlation": 1, "num_interactions": 1, "mlp_irreps": "8x0e",
         "radial_mlp_hidden": [32], "num_bessel": 6}),
]


def build(num_elements: int, options: dict) -> torch.nn.Module:
    """ScaleShiftMACE with mlipkit's defaults (which are mace-torch's) and r_max 5."""
    return modules.ScaleShiftMACE(
        r_max=5.0,
        num_bessel=options.get("num_bessel", 8),
        num_polynomial_cutoff=5,
        max_ell=options.get("max_ell", 3),
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes[options.get("interaction_first", "RealAgnosticResidualInteractionBlock")],
        num_interactions=options.get("num_interactions", 2),
        num_elements=num_elements,
        hidden_irreps=o3.Irreps(options.get("hidden_irreps", "128x0e + 128x1o")),
        MLP_irreps=o3.Irreps(options.get("mlp_irreps", "16x0e")),
        atomic_energies=np.zeros(num_elements),
        avg_num_neighbors=10.0,
        atomic_numbers=list(range(1, num_elements + 1)),
        correlation=options.get("correlation", 3),
        gate=torch.nn.functional.silu,
        radial_MLP=options.get("radial_mlp_hidden", [64, 64, 64]),
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
        use_reduced_cg=options.get("use_reduced_cg", True),
    )


def mace_batch(atoms, table) -> dict:
    """mace-torch's input dictionary for one structure (r_max 5)."""
    graph = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=table, cutoff=5.0)
    return next(iter(tools.torch_geometric.dataloader.DataLoader([graph], batch_size=1))).to_dict()


def energy_forces_ms(model: torch.nn.Module, repeats: int) -> float:
    """Milliseconds per energy+forces call on 256 fcc Cu atoms (float32, r_max 5)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=0)
    batch = mace_batch(atoms, tools.AtomicNumberTable([29]))
    model(batch, compute_force=True)
    start = time.perf_counter()
    for _ in range(repeats):
        model(batch, compute_force=True)
    return (time.perf_counter() - start) / repeats * 1e3


#: the small model of the fixture, in mlipkit's option names
FIXTURE_OPTIONS = {"hidden_irreps": "8x0e + 8x1o", "radial_mlp_hidden": [16], "use_reduced_cg": False}
FIXTURE_ELEMENTS = [1, 6]


def write_fixture(path: str) -> None:
    """Weights, coupling fingerprints and results of a small mace-torch model, float64."""
    from ase import Atoms

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = build(len(FIXTURE_ELEMENTS), FIXTURE_OPTIONS)
    table = tools.AtomicNumberTable(FIXTURE_ELEMENTS)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(1)
    atoms.numbers = rng.choice(FIXTURE_ELEMENTS, size=len(atoms))
    atoms.rattle(0.1, seed=1)
    out = model(mace_batch(atoms, table), compute_force=True)
    isolated = [float(model(mace_batch(Atoms(numbers=[z], cell=[20, 20, 20], pbc=True), table))["energy"].detach()[0])
                for z in FIXTURE_ELEMENTS]
    probes = torch.randn(4, 16, generator=torch.Generator().manual_seed(2))
    fingerprints = {}
    for name, buffer in model.named_buffers():
        if ".U_matrix_" in name:
            order = int(name.rsplit("_", 1)[1])
            coupling = buffer.unsqueeze(0) if buffer.dim() == order + 1 else buffer  # [m, D, ..., D, K]
            powers = torch.ones(len(probes), 1)
            for _ in range(order):
                powers = (powers.unsqueeze(-1) * probes.unsqueeze(1)).flatten(1)  # probe (x) ... (x) probe
            fingerprints[name] = torch.einsum("mIk,pI->kmp", coupling.reshape(coupling.shape[0], -1, coupling.shape[-1]), powers)
    torch.save({
        "options": FIXTURE_OPTIONS, "elements": FIXTURE_ELEMENTS, "avg_num_neighbours": 10.0, "r_max": 5.0,
        "weights": {name: p.detach() for name, p in model.named_parameters()},
        "probes": probes, "fingerprints": fingerprints,
        "numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions), "cell": torch.tensor(atoms.cell.array),
        "energy": float(out["energy"][0]), "forces": out["forces"].detach(), "isolated_atom_energies": isolated,
        "mace_torch_version": __import__("mace").__version__,
    }, path)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="energy+forces calls timed for the default model")
    parser.add_argument("--fixture", help="also write the weights-and-results fixture of tests/test_mace.py here")
    arguments = parser.parse_args()
    if arguments.fixture:
        write_fixture(arguments.fixture)
    torch.set_default_dtype(torch.float64)
    for num_elements, options in CONFIGS:
        start = time.perf_counter()
        model = build(num_elements, options)
        seconds = time.perf_counter() - start
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(json.dumps({"elements": num_elements, "options": options, "trainable_parameters": trainable,
                          "all_parameters": sum(p.numel() for p in model.parameters()), "construction_s": round(seconds, 2)}))
    torch.set_default_dtype(torch.float32)
    for reduced in (False, True):
        model = build(1, {"use_reduced_cg": reduced})
        print(json.dumps({"timing": "256 Cu atoms, float32, default size", "use_reduced_cg": reduced,
                          "energy_forces_ms": round(energy_forces_ms(model, arguments.repeats), 1)}))


if __name__ == "__main__":
    main()
