"""nequip 0.19.1's checkpoints and parameter counts for tests/test_import.py, in its environment (.peers/nequip).

    bash tools/peer_envs.sh nequip
    .peers/nequip/bin/python tools/nequip_reference.py --import-fixtures tests/data/nequip_import
    .peers/nequip/bin/python tools/nequip_reference.py --benchmark-checkpoint DIR --dtype float32

Each checkpoint comes from nequip-train itself (one short epoch on frames of
the shipped data; one also as nequip-package's ``.nequip.zip``), beside the energies, forces and stress that nequip's own
evaluation model of it (``ModelFromCheckpoint``, EMA weights where the
training module keeps them) gives on a few structures. ``counts.json`` holds
nequip's parameter counts of several model configurations.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
ROOT = Path(__file__).resolve().parent.parent
R_MAX = 4.0
#: checkpoint name -> training data, nequip training module, dtype and model arguments
IMPORT_CHECKPOINTS = {
    "nequip_cu_ema": dict(
        data="cu_emt.xyz", elements=["Cu"], module="nequip.train.EMALightningModule", dtype="float64", package=True,
        model={"num_layers": 2, "l_max": 1, "num_features": 8, "radial_mlp_width": 16},
    ),
    "nequip_hco_natural_parity": dict(
        data="ethanol_xtb.xyz", elements=["H", "C", "O"], module="nequip.train.NequIPLightningModule", dtype="float64",
        model={"num_layers": 3, "l_max": 2, "parity": False, "num_features": [8, 4, 4], "type_embed_num_features": 6,
               "radial_mlp_depth": 2, "radial_mlp_width": 8, "readout_mlp_hidden_layers_depth": 1,
               "readout_mlp_hidden_layers_width": 8, "num_bessels": 6, "bessel_trainable": True, "polynomial_cutoff_p": 5},
    ),
    "nequip_cu_float32": dict(
        data="cu_emt.xyz", elements=["Cu"], module="nequip.train.EMALightningModule", dtype="float32",
        model={"num_layers": 2, "l_max": 2, "parity": False, "num_features": 8, "radial_mlp_width": 8,
               "per_type_energy_shifts_trainable": True},
    ),
}
#: configurations whose parameter counts tests/test_import.py compares (builder arguments; two elements)
COUNT_CONFIGURATIONS = {
    "defaults": {"_target_": "nequip.model.NequIPGNNModel"},
    "natural_parity_l2": {"_target_": "nequip.model.NequIPGNNModel", "parity": False, "l_max": 2},
    "features_per_l": {"_target_": "nequip.model.NequIPGNNModel", "l_max": 2, "num_features": [32, 16, 8], "type_embed_num_features": 12},
    "deep_radial_mlp_readout": {"_target_": "nequip.model.NequIPGNNModel", "radial_mlp_depth": 3, "radial_mlp_width": 32,
                                "readout_mlp_hidden_layers_depth": 1, "readout_mlp_hidden_layers_width": 24},
    "trainable_bessel_6_layers": {"_target_": "nequip.model.NequIPGNNModel", "num_layers": 6, "num_bessels": 10, "bessel_trainable": True},
    "preset_S": {"_target_": "nequip.model.PresetNequIPGNNModel", "preset": "S"},
    "preset_M": {"_target_": "nequip.model.PresetNequIPGNNModel", "preset": "M"},
}


def training_config(recipe: dict, directory: Path) -> dict:
    elements, r_max = recipe["elements"], recipe.get("r_max", R_MAX)
    return {
        "run": ["train"], "cutoff_radius": r_max, "model_type_names": elements,
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": 0,
            "train_file_path": str(directory / "train.xyz"), "val_file_path": str(directory / "val.xyz"),
            "transforms": [
                {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": elements},
                {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": r_max},
            ],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 4},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 4},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": elements},
        },
        "trainer": {
            "_target_": "lightning.Trainer", "accelerator": "cpu", "max_epochs": 1, "enable_progress_bar": False, "logger": False,
            "callbacks": [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": str(directory), "filename": "best"}],
        },
        "training_module": {
            "_target_": recipe["module"],
            **({"ema_decay": 0.9} if "EMA" in recipe["module"] else {}),
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": True, "coeffs": {"total_energy": 1.0, "forces": 1.0}},
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics", "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0}},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": 0.02},
            "model": {
                "_target_": "nequip.model.NequIPGNNModel", "seed": 0, "model_dtype": recipe["dtype"], "type_names": elements,
                "r_max": r_max, **recipe["model"], "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}",
                "per_type_energy_scales": "${training_data_stats:forces_rms}",
            },
        },
        "global_options": {"allow_tf32": False},
    }


def structures(elements: list[str]):
    """A rattled periodic cell (triclinic for Cu) and an isolated cluster or molecule of the elements."""
    from ase import Atoms
    from ase.build import bulk, molecule

    if elements == ["Cu"]:
        periodic = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
        periodic.set_cell(periodic.cell.array + [[0.0, 0.0, 0.0], [0.4, 0.0, 0.0], [0.2, -0.3, 0.0]], scale_atoms=True)
        periodic.rattle(0.1, seed=1)
        cluster = Atoms("Cu4", positions=[[0, 0, 0], [2.5, 0, 0], [0.3, 2.4, 0], [1.1, 0.9, 2.2]])
        return [periodic, cluster]
    rng = np.random.default_rng(3)
    positions = []
    while len(positions) < 16:
        candidate = rng.uniform(0, 5.2, 3)
        if all(np.linalg.norm(candidate - other) > 1.0 for other in positions):
            positions.append(candidate)
    cell = np.diag([5.2, 5.7, 4.9]) + np.array([[0, 0, 0], [0.3, 0, 0], [0, 0.2, 0]])
    periodic = Atoms(numbers=rng.choice([1, 6, 8], 16), positions=positions, cell=cell, pbc=True)
    ethanol = molecule("CH3CH2OH")
    ethanol.rattle(0.05, seed=2)
    return [periodic, ethanol]


def evaluate(checkpoint: Path, recipe: dict) -> list[dict]:
    """nequip's evaluation model of the checkpoint on structures(): energy, forces and (periodic) stress."""
    import torch
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper
    from nequip.model.saved_models.checkpoint import ModelFromCheckpoint

    model = ModelFromCheckpoint(str(checkpoint))
    model = model["sole_model"] if isinstance(model, torch.nn.ModuleDict) else model
    model.eval()
    results = []
    for atoms in structures(recipe["elements"]):
        data = ChemicalSpeciesToAtomTypeMapper(recipe["elements"])(compute_neighborlist_(from_ase(atoms), R_MAX))
        out = model(data)
        result = {"numbers": torch.tensor(atoms.numbers), "positions": torch.tensor(atoms.positions), "pbc": bool(atoms.pbc.all()),
                  "cell": torch.tensor(atoms.cell.array), "energy": float(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach()),
                  "forces": out[AtomicDataDict.FORCE_KEY].detach().double()}
        if atoms.pbc.all():
            result["stress"] = out[AtomicDataDict.STRESS_KEY].detach().double().reshape(3, 3)
        results.append(result)
    return results


def train(recipe: dict, directory: Path) -> Path:
    """nequip-train on the recipe's first frames of the shipped data, in ``directory``; the best checkpoint."""
    import yaml
    from ase.io import read, write

    frames = [atoms for atoms in read(ROOT / "examples" / "data" / recipe["data"], ":") if len(atoms) > 1][:24]
    for atoms in frames:
        atoms.info.pop("config_type", None)
    write(directory / "train.xyz", frames[:16])
    write(directory / "val.xyz", frames[16:])
    (directory / "config.yaml").write_text(yaml.safe_dump(training_config(recipe, directory), sort_keys=False))
    subprocess.run([str(Path(sys.executable).parent / "nequip-train"), "-cp", str(directory), "-cn", "config",
                    f"hydra.run.dir={directory / 'hydra'}"], check=True, capture_output=True, cwd=directory)
    return directory / "best.ckpt"


def write_import_fixtures(directory: Path) -> None:
    import torch
    from nequip.utils.global_state import set_global_state

    set_global_state()
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    for name, recipe in IMPORT_CHECKPOINTS.items():
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            best = train(recipe, scratch)
            checkpoint = directory / f"{name}.ckpt"
            checkpoint.write_bytes(best.read_bytes())
            if recipe.get("package"):
                # nequip-package reads the training data, which lives in the scratch directory only
                package = directory / f"{name}.nequip.zip"
                subprocess.run([str(Path(sys.executable).parent / "nequip-package"), "build", str(best), str(package)],
                               check=True, capture_output=True, cwd=scratch)
                print(f"wrote {package} ({package.stat().st_size // 1024} KB)")
        results = evaluate(checkpoint, recipe)
        torch.save({"structures": results, "dtype": recipe["dtype"], "nequip": "0.19.1"}, directory / f"{name}.reference.pt")
        print(f"wrote {checkpoint} ({checkpoint.stat().st_size // 1024} KB): energies {[round(r['energy'], 6) for r in results]}")


def write_benchmark_checkpoint(directory: Path, dtype: str) -> None:
    """A checkpoint of tools/benchmark_peers.py's NequIP size (types H, O, Cu; r_max 5) for its --imported
    comparison, trained in ``directory``, where its data stays (nequip-compile reads it)."""
    from benchmark_peers import NEQUIP_OPTIONS
    from benchmark_peers import R_MAX as BENCHMARK_R_MAX

    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    recipe = dict(data="cu_emt.xyz", elements=["H", "O", "Cu"], module="nequip.train.EMALightningModule", dtype=dtype,
                  model=NEQUIP_OPTIONS, r_max=BENCHMARK_R_MAX)
    print(f"wrote {train(recipe, directory)}")


def write_counts(path: Path) -> None:
    from nequip.model import NequIPGNNModel, PresetNequIPGNNModel
    from nequip.utils.global_state import set_global_state

    set_global_state()
    builders = {"nequip.model.NequIPGNNModel": NequIPGNNModel, "nequip.model.PresetNequIPGNNModel": PresetNequIPGNNModel}
    counts = {}
    for name, arguments in COUNT_CONFIGURATIONS.items():
        options = {key: value for key, value in arguments.items() if key != "_target_"}
        model = builders[arguments["_target_"]](seed=0, model_dtype="float64", type_names=["C", "O"], r_max=R_MAX,
                                                avg_num_neighbors=20.0, per_type_energy_shifts=0.0, per_type_energy_scales=1.0,
                                                **options)
        counts[name] = {"arguments": arguments, "parameters": sum(p.numel() for p in model.parameters())}
        print(f"{name}: {counts[name]['parameters']:,} parameters")
    path.write_text(json.dumps({"nequip": "0.19.1", "type_names": ["C", "O"], "configurations": counts}, indent=1) + "\n")
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import-fixtures", type=Path, help="write checkpoints, their predictions and counts.json here")
    parser.add_argument("--benchmark-checkpoint", type=Path, help="train tools/benchmark_peers.py's --imported checkpoint here")
    parser.add_argument("--dtype", default="float64", choices=["float32", "float64"], help="the benchmark checkpoint's dtype")
    arguments = parser.parse_args()
    if arguments.benchmark_checkpoint:
        write_benchmark_checkpoint(arguments.benchmark_checkpoint, arguments.dtype)
    elif arguments.import_fixtures:
        write_import_fixtures(arguments.import_fixtures)
        write_counts(arguments.import_fixtures / "counts.json")
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
