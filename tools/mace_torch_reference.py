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


def build(num_elements: int, options: dict, r_max: float = 5.0, atomic_numbers: list[int] | None = None,
          atomic_energies: np.ndarray | None = None, avg_num_neighbors: float = 10.0, scale: float = 1.0) -> torch.nn.Module:
    """ScaleShiftMACE with mlipkit's defaults (which are mace-torch's); r_max 5, elements 1..n, E0 0 and scale 1
    unless given."""
    return modules.ScaleShiftMACE(
        r_max=r_max,
        num_bessel=options.get("num_bessel", 8),
        num_polynomial_cutoff=5,
        max_ell=options.get("max_ell", 3),
        interaction_cls=modules.interaction_classes["RealAgnosticResidualInteractionBlock"],
        interaction_cls_first=modules.interaction_classes[options.get("interaction_first", "RealAgnosticResidualInteractionBlock")],
        num_interactions=options.get("num_interactions", 2),
        num_elements=num_elements,
        hidden_irreps=o3.Irreps(options.get("hidden_irreps", "128x0e + 128x1o")),
        MLP_irreps=o3.Irreps(options.get("mlp_irreps", "16x0e")),
        atomic_energies=np.zeros(num_elements) if atomic_energies is None else atomic_energies,
        avg_num_neighbors=avg_num_neighbors,
        atomic_numbers=atomic_numbers or list(range(1, num_elements + 1)),
        correlation=options.get("correlation", 3),
        gate=torch.nn.functional.silu,
        radial_MLP=options.get("radial_mlp_hidden", [64, 64, 64]),
        atomic_inter_scale=scale,
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


def coupling_fingerprints(model: torch.nn.Module, probes: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each coupling path of the product basis contracted with symmetric powers of the probe vectors."""
    fingerprints = {}
    for name, buffer in model.named_buffers():
        if ".U_matrix_" in name:
            order = int(name.rsplit("_", 1)[1])
            coupling = buffer.unsqueeze(0) if buffer.dim() == order + 1 else buffer  # [m, D, ..., D, K]
            powers = torch.ones(len(probes), 1)
            for _ in range(order):
                powers = (powers.unsqueeze(-1) * probes.unsqueeze(1)).flatten(1)  # probe (x) ... (x) probe
            fingerprints[name] = torch.einsum("mIk,pI->kmp", coupling.reshape(coupling.shape[0], -1, coupling.shape[-1]), powers)
    return fingerprints


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
    fingerprints = coupling_fingerprints(model, probes)
    torch.save({
        "options": FIXTURE_OPTIONS, "elements": FIXTURE_ELEMENTS, "avg_num_neighbours": 10.0, "r_max": 5.0,
        "weights": {name: p.detach() for name, p in model.named_parameters()},
        "probes": probes, "fingerprints": fingerprints,
        "numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions), "cell": torch.tensor(atoms.cell.array),
        "energy": float(out["energy"][0]), "forces": out["forces"].detach(), "isolated_atom_energies": isolated,
        "mace_torch_version": __import__("mace").__version__,
    }, path)
    print(f"wrote {path}")


#: the training-step fixture: Cu frames of the shipped EMT data, mace_run_train's recipe in float64. Its model is
#: one whose weights map one to one onto mlipkit's, so that the same step is expected of both: the first
#: interaction block is the non-residual one (then an atom without neighbours gets zero from the network in both
#: codes; with the residual block mace-torch gives it a weight-dependent energy, which mlipkit measures from), and
#: the product basis stops where mace-torch's original couplings have no duplicates (scalar features, correlation
#: 2; at correlation 3, and for 1o at 2, several of its weights multiply one function, see tests/test_train_parity.py).
STEP_OPTIONS = {"hidden_irreps": "8x0e", "max_ell": 2, "correlation": 2, "radial_mlp_hidden": [16], "use_reduced_cg": False,
                "interaction_first": "RealAgnosticInteractionBlock"}
STEP_TRAINING = {"batch_size": 4, "steps": 2, "lr": 0.01, "energy_weight": 1.0, "forces_weight": 10.0, "ema_decay": 0.99,
                 "clip_grad": 10.0, "r_max": 4.5, "avg_num_neighbours": 35.0}


def write_training_step_fixture(path: str, data_file: str) -> None:
    """Two optimiser steps of mace_run_train's own code (its loss, parameter groups without weight decay, Adam with amsgrad, gradient
    clipping, torch_ema) on the first frames of ``data_file``: the initial weights, the frames, each step's loss
    and gradients, and the weights and EMA weights after each step, for tests/test_train_parity.py."""
    from types import SimpleNamespace

    from ase.io import read
    from mace.modules.loss import WeightedEnergyForcesLoss
    from mace.tools.scripts_utils import get_optimizer, get_params_options
    from mace.tools.train import take_step
    from torch_ema import ExponentialMovingAverage

    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    settings = STEP_TRAINING
    frames = [atoms for atoms in read(data_file, ":") if len(atoms) > 1][: settings["batch_size"] * settings["steps"]]
    per_atom = np.array([atoms.get_potential_energy() / len(atoms) for atoms in frames])
    forces = np.concatenate([atoms.get_forces() for atoms in frames])
    atomic_energy, scale = float(per_atom.mean()), float(np.sqrt(np.mean(forces**2)))
    model = build(1, STEP_OPTIONS, settings["r_max"], [29], np.array([atomic_energy]), settings["avg_num_neighbours"], scale)
    initial = {name: p.detach().clone() for name, p in model.named_parameters()}
    keyspec = data.KeySpecification(info_keys={"energy": "REF_energy"}, arrays_keys={"forces": "REF_forces"})
    table = tools.AtomicNumberTable([29])
    graphs = []
    for atoms in frames:
        labelled = atoms.copy()
        labelled.info["REF_energy"], labelled.arrays["REF_forces"] = atoms.get_potential_energy(), atoms.get_forces()
        graphs.append(data.AtomicData.from_config(data.config_from_atoms(labelled, keyspec), z_table=table, cutoff=settings["r_max"]))
    loader = tools.torch_geometric.dataloader.DataLoader(graphs, batch_size=settings["batch_size"], shuffle=False)
    arguments = SimpleNamespace(
        lr=settings["lr"], weight_decay=0.0, amsgrad=True, beta=0.9, optimizer="adam", freeze=None,
        lr_params_factors='{"embedding_lr_factor": 1.0, "interactions_lr_factor": 1.0, "products_lr_factor": 1.0, "readouts_lr_factor": 1.0}',
    )
    optimizer = get_optimizer(arguments, get_params_options(arguments, model))
    ema = ExponentialMovingAverage(model.parameters(), decay=settings["ema_decay"])
    loss_fn = WeightedEnergyForcesLoss(energy_weight=settings["energy_weight"], forces_weight=settings["forces_weight"])
    output_args = {"forces": True, "virials": False, "stress": False}
    steps = []
    for batch in loader:
        captured = {}
        hooks = [p.register_hook(lambda grad, name=name: captured.__setitem__(name, grad.detach().clone()))
                 for name, p in model.named_parameters()]
        loss, _ = take_step(model, loss_fn, batch, optimizer, ema, output_args, settings["clip_grad"], torch.device("cpu"))
        for hook in hooks:
            hook.remove()
        with ema.average_parameters():
            averaged = {name: p.detach().clone() for name, p in model.named_parameters()}
        steps.append({
            "loss": float(loss.detach()), "gradients": captured,
            "weights": {name: p.detach().clone() for name, p in model.named_parameters()}, "ema_weights": averaged,
        })
    decay_groups = {group["name"]: group["weight_decay"] for group in optimizer.param_groups}
    torch.save({
        "options": STEP_OPTIONS, "training": settings, "elements": [29], "weight_decay": decay_groups,
        "atomic_energy": atomic_energy, "scale": scale, "shift": 0.0,
        "weights": initial, "probes": (probes := torch.randn(4, (STEP_OPTIONS["max_ell"] + 1) ** 2, generator=torch.Generator().manual_seed(2))),
        "fingerprints": coupling_fingerprints(model, probes),
        "numbers": [torch.tensor(atoms.numbers) for atoms in frames], "positions": [torch.tensor(atoms.positions) for atoms in frames],
        "cells": [torch.tensor(atoms.cell.array) for atoms in frames],
        "energies": torch.tensor([atoms.get_potential_energy() for atoms in frames]),
        "forces": [torch.tensor(atoms.get_forces()) for atoms in frames],
        "steps": steps, "mace_torch_version": __import__("mace").__version__,
    }, path)
    print(f"wrote {path}: losses {[step['loss'] for step in steps]}")


#: the mace-torch model files tests/test_import.py imports: a ScaleShiftMACE per interaction-block combination,
#: 1 and 3 elements, correlation 1-3, both coupling conventions, a plain MACE, a float32 file and a state-dict
#: checkpoint with its run arguments
IMPORT_MODELS = {
    "scaleshift_cu_c3": dict(model="ScaleShiftMACE", elements=[29], dtype="float64", E0s=[-3.7], scale=1.3, shift=0.02,
                             options={"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "correlation": 3, "radial_MLP": [16],
                                      "use_reduced_cg": False, "num_bessel": 6}),
    "scaleshift_hco_c2_reduced": dict(model="ScaleShiftMACE", elements=[1, 6, 8], dtype="float64", E0s=[-13.6, -1029.8, -2041.8],
                                      scale=0.7, shift=-0.1,
                                      options={"hidden_irreps": "8x0e + 8x1o + 8x2e", "max_ell": 3, "correlation": 2,
                                               "radial_MLP": [16, 16], "use_reduced_cg": True, "num_interactions": 3,
                                               "interaction_cls_first": "RealAgnosticInteractionBlock", "num_polynomial_cutoff": 6}),
    "mace_hco_c1_tanh": dict(model="MACE", elements=[1, 6, 8], dtype="float64", E0s=[-1.0, -2.0, -3.0],
                             options={"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "correlation": 1, "radial_MLP": [16],
                                      "gate": "tanh", "MLP_irreps": "4x0e", "keep_last_layer_irreps": True}),
    "scaleshift_hco_float32": dict(model="ScaleShiftMACE", elements=[1, 6, 8], dtype="float32", E0s=[-1.5, -4.0, -6.5],
                                   scale=1.1, shift=0.3,
                                   options={"hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "correlation": 3, "radial_MLP": [16],
                                            "use_reduced_cg": True}),
    # a block mlipkit's MACE lacks: its import is refused by name (no reference results)
    "unsupported_density_block": dict(model="ScaleShiftMACE", elements=[29], dtype="float64", E0s=[-3.7], scale=1.0, shift=0.0,
                                      unsupported=True,
                                      options={"hidden_irreps": "4x0e + 4x1o", "max_ell": 1, "correlation": 2, "radial_MLP": [8],
                                               "interaction_cls": "RealAgnosticDensityResidualInteractionBlock"}),
}
#: MACE-MP-0 (medium)'s published hyperparameters: tests/test_import.py builds mlipkit's MACE at them and checks
#: the parameter count that ``--mp0-parameters`` measures here
MP0_OPTIONS = {"hidden_irreps": "128x0e + 128x1o", "max_ell": 3, "correlation": 3, "radial_MLP": [64, 64, 64],
               "num_interactions": 2, "use_reduced_cg": False, "num_bessel": 10, "num_polynomial_cutoff": 5}
MP0_ELEMENTS = list(range(1, 90))
#: the state-dict checkpoint's mace_run_train arguments (the first model's), as a --config YAML
IMPORT_CHECKPOINT_ARGUMENTS = {
    "model": "ScaleShiftMACE", "interaction": "RealAgnosticResidualInteractionBlock",
    "interaction_first": "RealAgnosticResidualInteractionBlock", "hidden_irreps": "8x0e + 8x1o", "max_ell": 2, "correlation": 3,
    "radial_MLP": "[16]", "MLP_irreps": "16x0e", "gate": "silu", "num_radial_basis": 6, "num_cutoff_basis": 5, "r_max": 4.5,
    "avg_num_neighbors": 11.0, "num_interactions": 2, "use_reduced_cg": False, "default_dtype": "float64",
    "name": "scaleshift_cu_c3", "seed": 0, "train_file": "train.xyz", "E0s": "average", "batch_size": 4, "max_num_epochs": 5,
}


def build_import_model(recipe: dict) -> torch.nn.Module:
    """A mace-torch model of the recipe, random weights (seed 0), in its dtype."""
    options = recipe["options"]
    torch.set_default_dtype(getattr(torch, recipe["dtype"]))
    torch.manual_seed(0)
    gates = {"silu": torch.nn.functional.silu, "tanh": torch.tanh}
    arguments = dict(
        r_max=recipe.get("r_max", 4.5), num_bessel=options.get("num_bessel", 8), num_polynomial_cutoff=options.get("num_polynomial_cutoff", 5),
        max_ell=options["max_ell"], interaction_cls=modules.interaction_classes[options.get("interaction_cls", "RealAgnosticResidualInteractionBlock")],
        interaction_cls_first=modules.interaction_classes[
            options.get("interaction_cls_first", options.get("interaction_cls", "RealAgnosticResidualInteractionBlock"))],
        num_interactions=options.get("num_interactions", 2), num_elements=len(recipe["elements"]),
        hidden_irreps=o3.Irreps(options["hidden_irreps"]), MLP_irreps=o3.Irreps(options.get("MLP_irreps", "16x0e")),
        atomic_energies=np.array(recipe["E0s"]), avg_num_neighbors=11.0, atomic_numbers=recipe["elements"],
        correlation=options["correlation"], gate=gates[options.get("gate", "silu")], radial_MLP=options["radial_MLP"],
        use_reduced_cg=options.get("use_reduced_cg", True), keep_last_layer_irreps=options.get("keep_last_layer_irreps", False),
    )
    if recipe["model"] == "ScaleShiftMACE":
        return modules.ScaleShiftMACE(atomic_inter_scale=recipe["scale"], atomic_inter_shift=recipe["shift"], **arguments)
    return modules.MACE(**arguments)


def import_structures(elements: list[int]) -> list:
    """A periodic triclinic cell and an isolated cluster of the model's elements."""
    from ase import Atoms

    rng = np.random.default_rng(3)
    if elements == [29]:
        periodic = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        periodic.set_cell(periodic.cell.array + [[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.2, -0.3, 0.0]], scale_atoms=True)
        periodic.rattle(0.1, seed=1)
        cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0.3, 2.4, 0], [1.1, 0.9, 2.2]])
        return [periodic, cluster]
    structures = []
    for count, box, pbc in ((16, 5.2, True), (6, 4.0, False)):
        positions = []
        while len(positions) < count:
            candidate = rng.uniform(0, box, 3)
            if all(np.linalg.norm(candidate - other) > 1.0 for other in positions):
                positions.append(candidate)
        cell = np.diag([box, box * 1.1, box * 0.95]) + (np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.2, 0]]) if pbc else 0)
        structures.append(Atoms(numbers=rng.choice(elements, count), positions=positions, cell=cell if pbc else None, pbc=pbc))
    return structures


def evaluate(model: torch.nn.Module, atoms, elements: list[int]) -> dict:
    batch = data.AtomicData.from_config(data.config_from_atoms(atoms), z_table=tools.AtomicNumberTable(elements),
                                        cutoff=float(model.r_max))
    batch = next(iter(tools.torch_geometric.dataloader.DataLoader([batch], batch_size=1))).to_dict()
    out = model(batch, compute_force=True, compute_stress=bool(atoms.pbc.all()))
    result = {"numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions), "pbc": bool(atoms.pbc.all()),
              "cell": torch.tensor(atoms.cell.array), "energy": out["energy"].detach()[0].double(), "forces": out["forces"].detach().double()}
    if atoms.pbc.all():
        result["stress"] = out["stress"].detach()[0].double()
    return result


def write_import_fixtures(directory: str) -> None:
    """Each IMPORT_MODELS model as mace_run_train writes it (torch.save of the module) beside its energies, forces and
    stress on import_structures; the first also as a state-dict checkpoint with its run arguments."""
    from pathlib import Path

    import yaml

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, recipe in IMPORT_MODELS.items():
        model = build_import_model(recipe)
        torch.save(model, out / f"{name}.model")
        if recipe.get("unsupported"):
            continue
        structures = [evaluate(model, atoms, recipe["elements"]) for atoms in import_structures(recipe["elements"])]
        torch.save({"structures": structures, "dtype": recipe["dtype"], "mace_torch_version": __import__("mace").__version__,
                    "parameters": sum(p.numel() for p in model.parameters())}, out / f"{name}.reference.pt")
        if name == "scaleshift_cu_c3":
            torch.save({"model": model.state_dict(), "optimizer": {}, "lr_scheduler": {}}, out / f"{name}_run-0_epoch-4.pt")
            (out / f"{name}_config.yaml").write_text(yaml.safe_dump(IMPORT_CHECKPOINT_ARGUMENTS, sort_keys=False))
        print(f"wrote {out / name}.model ({(out / f'{name}.model').stat().st_size // 1024} KB)")
    torch.set_default_dtype(torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="energy+forces calls timed for the default model")
    parser.add_argument("--fixture", help="also write the weights-and-results fixture of tests/test_mace.py here")
    parser.add_argument("--training-step-fixture", help="also write the training-step fixture of tests/test_train_parity.py here")
    parser.add_argument("--data", default="examples/data/cu_emt.xyz", help="frames of the training-step fixture")
    parser.add_argument("--import-fixtures", help="write the model files of tests/test_import.py into this directory and stop")
    parser.add_argument("--mp0-model", help="write a MACE-MP-0-sized model (random weights) here, print its parameter count, stop")
    parser.add_argument("--benchmark-model", help="write tools/benchmark_peers.py's --imported model file (H, O, Cu) here, stop")
    arguments = parser.parse_args()
    if arguments.import_fixtures:
        write_import_fixtures(arguments.import_fixtures)
        return
    if arguments.benchmark_model:
        # the benchmark's MACE size (mlipkit's defaults; original couplings, as mace-torch without cuequivariance),
        # E0s as a trained model has them
        torch.set_default_dtype(torch.float64)
        torch.manual_seed(0)
        model = build(3, {"use_reduced_cg": False}, 5.0, [1, 8, 29], np.array([-13.6, -2041.8, -3.7]))
        torch.save(model, arguments.benchmark_model)
        print(json.dumps({"parameters": sum(p.numel() for p in model.parameters()), "file": arguments.benchmark_model}))
        return
    if arguments.mp0_model:
        recipe = dict(model="ScaleShiftMACE", elements=MP0_ELEMENTS, dtype="float64", E0s=[0.0] * len(MP0_ELEMENTS), scale=1.0,
                      shift=0.0, r_max=6.0, options=MP0_OPTIONS)
        model = build_import_model(recipe)
        torch.save(model, arguments.mp0_model)
        print(json.dumps({"mp0_parameters": sum(p.numel() for p in model.parameters()), "file": arguments.mp0_model}))
        return
    if arguments.fixture:
        write_fixture(arguments.fixture)
    if arguments.training_step_fixture:
        write_training_step_fixture(arguments.training_step_fixture, arguments.data)
        return
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
