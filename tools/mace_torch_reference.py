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
mlipkit's MACE with; tools/benchmark_models.py gives mlipkit's own timings.
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


def energy_forces_ms(model: torch.nn.Module, repeats: int) -> float:
    """Milliseconds per energy+forces call on 256 fcc Cu atoms (float32, r_max 5)."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((4, 4, 4))
    atoms.rattle(0.05, seed=0)
    table = tools.AtomicNumberTable([29])
    configuration = data.config_from_atoms(atoms)
    graph = data.AtomicData.from_config(configuration, z_table=table, cutoff=5.0)
    batch = next(iter(tools.torch_geometric.dataloader.DataLoader([graph], batch_size=1))).to_dict()
    model(batch, compute_force=True)
    start = time.perf_counter()
    for _ in range(repeats):
        model(batch, compute_force=True)
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="energy+forces calls timed for the default model")
    arguments = parser.parse_args()
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
