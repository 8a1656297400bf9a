"""Training side by side: mlip-train against mace_run_train (MACE) and nequip-train (NequIP), in one run.

    bash tools/peer_envs.sh nequip mace                # once: .peers/nequip, .peers/mace
    .venv/bin/python tools/benchmark_training.py       # Cu EMT, ethanol and ions, MACE and NequIP (about 30 min)
    .venv/bin/python tools/benchmark_training.py --datasets cu --models mace --epochs 20

Each shipped data set is split once (mlip-train's 80/10/10 split, seed 0; isolated-atom frames left out) and every tool trains the same model on the same files: MACE (2 interactions,
16x0e + 16x1o, max_ell 2, correlation 3, radial MLP [32, 32], 8 Bessel functions, polynomial cutoff 5) and
NequIP (2 layers, l_max 1, 16 features, radial MLP 2 x 64, 8 trainable Bessel functions, p = 6, readout 16),
r_max 4.5 Å, per-type energy shifts E0 fitted to the training energies by least squares (mace-torch's E0s
"average"; Cu: the mean per-atom energy), scale the force RMS, float32, batch 4, Adam with amsgrad at lr 0.01, EMA 0.99, seed 0, the same loss (per-atom energy
MSE weight 1, force MSE weight 10, stress MSE weight ``--stress-weight`` where the data has stress), and
each tool's own defaults for everything else (mlip-train: its learning-rate schedule; mace_run_train: its
ReduceLROnPlateau, gradient clipping and weight decay, ``--stage-two`` adds its Stage Two; nequip-train: no
schedule). Every tool's best model (lowest validation loss; nequip: lowest validation weighted sum) is
evaluated in its own environment through its ASE calculator on the test file: energy, force and stress MAE
and, for Cu, the equation of state (energy per atom of fcc Cu at a = 3.50 ... 3.70 Å, quartic fit: a0, B)
against EMT's. mlip-train runs twice: for the peers' epochs, and for as many epochs as fit in the peer's wall
time (from its own time per epoch). Writes training.md, training.json and a learning-curve PNG per data set
(validation MAEs per epoch) to ``--output``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = {"mlipkit": ROOT / ".venv", "nequip": ROOT / ".peers" / "nequip", "mace": ROOT / ".peers" / "mace"}
PEERS = {"mace": "mace_run_train", "nequip": "nequip-train"}
DATASETS = {
    "cu": ROOT / "examples" / "data" / "cu_emt.xyz",
    "ethanol": ROOT / "examples" / "data" / "ethanol_xtb.xyz",
    "ions": ROOT / "examples" / "data" / "ions_xtb.xyz",
}
R_MAX = 4.5
#: the shared recipe
BATCH_SIZE, LR, EMA_DECAY, ENERGY_WEIGHT, FORCES_WEIGHT = 4, 0.01, 0.99, 1.0, 10.0
MACE_MODEL = {"num_interactions": 2, "hidden_irreps": "16x0e + 16x1o", "max_ell": 2, "correlation": 3,
              "radial_mlp_hidden": [32, 32], "num_bessel": 8, "num_polynomial_cutoff": 5}
#: mlipkit's NequIP defaults for what nequip_model does not name
NEQUIP_MODEL = {"num_layers": 2, "max_ell": 1, "num_features": 16}
NEQUIP_PEER_MODEL = {"num_layers": 2, "l_max": 1, "parity": True, "num_features": 16, "num_bessels": 8,
                     "bessel_trainable": True, "polynomial_cutoff_p": 6, "radial_mlp_depth": 2, "radial_mlp_width": 64,
                     "readout_mlp_hidden_layers_depth": 1, "readout_mlp_hidden_layers_width": 16}
EOS_LATTICE_CONSTANTS = np.linspace(3.50, 3.70, 11)
EV_PER_A3_IN_GPA = 160.21766


# -- data ----------------------------------------------------------------------------------------------------------

def labels_only(atoms):
    """The structure with its energy, forces and stress only (nequip reads any other array or info key as a field,
    and takes a molecule's 3-vector dipole for a per-atom one)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    copy = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    copy.calc = SinglePointCalculator(copy, **{key: value for key, value in atoms.calc.results.items()
                                               if key in ("energy", "forces", "stress")})
    return copy


def prepare(name: str, directory: Path) -> dict:
    """train/valid/test files of mlip-train's split and the statistics every tool is given: per-type energy shifts
    fitted to the training energies by least squares (mace-torch's E0s "average"; for one element the mean
    per-atom energy) and the force RMS."""
    from ase.data import atomic_numbers
    from ase.io import read, write

    from mlipkit.data.extxyz import read_extxyz
    from mlipkit.data.statistics import compute_statistics

    frames = [atoms for atoms in read(DATASETS[name], ":") if len(atoms) > 1]
    order = np.random.default_rng(0).permutation(len(frames))
    num_held_out = int(round(0.1 * len(frames)))
    parts = {"valid": order[:num_held_out], "test": order[num_held_out : 2 * num_held_out], "train": order[2 * num_held_out :]}
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, indices in parts.items():
        files[part] = directory / f"{part}.xyz"
        write(files[part], [labels_only(frames[i]) for i in indices])
    symbols = sorted({s for atoms in frames for s in atoms.get_chemical_symbols()}, key=lambda s: atomic_numbers[s])
    statistics = compute_statistics(read_extxyz(files["train"]), R_MAX, symbols)
    has_stress = all("stress" in atoms.calc.results for atoms in frames)
    return {"files": {part: str(path) for part, path in files.items()}, "type_names": symbols,
            "shifts": statistics.least_squares_atomic_energies, "forces_rms": statistics.forces_rms, "stress": has_stress,
            "sizes": {part: len(indices) for part, indices in parts.items()}}


# -- the tools -----------------------------------------------------------------------------------------------------

def tool_environment(threads: int) -> dict[str, str]:
    """Every tool's process: the same thread count; mace-torch's and nequip's checkpoints need full unpickling."""
    return dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")


def run(command: list[str], log: Path, threads: int, cwd: Path) -> float:
    started = time.perf_counter()
    with open(log, "w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd, env=tool_environment(threads)).returncode
    if code:
        raise SystemExit(f"benchmark_training: {command[0]} failed (exit {code}), see {log}")
    return time.perf_counter() - started


def mlip_train(model: str, data: dict, epochs: int, stress_weight: float, directory: Path, threads: int) -> dict:
    import yaml

    options = dict(MACE_MODEL if model == "mace" else NEQUIP_MODEL, r_max=R_MAX,
                   avg_num_neighbors="${training_data_stats:num_neighbors_mean}",
                   per_type_energy_shifts=data["shifts"], per_type_energy_scales=data["forces_rms"])
    loss = {"energy": {"weight": ENERGY_WEIGHT}, "forces": {"weight": FORCES_WEIGHT}}
    if data["stress"]:
        loss["stress"] = {"weight": stress_weight}
    config = {
        "data": {"train": data["files"]["train"], "validation": data["files"]["valid"], "test": data["files"]["test"],
                 "type_names": data["type_names"], "batch_size": BATCH_SIZE},
        "model": {"name": model, **options}, "loss": loss, "optimizer": {"lr": LR}, "ema_decay": EMA_DECAY,
        "max_epochs": epochs, "dtype": "float32", "seed": 0, "output_dir": str(directory),
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "train.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    seconds = run([str(ENVIRONMENTS["mlipkit"] / "bin" / "mlip-train"), str(directory / "train.yaml"), "--no-progress"],
                  directory / "mlip-train.log", threads, directory)
    with open(directory / "metrics.csv") as handle:
        curve = [(int(row["epoch"]), float(row["validation_energy_mae"]), float(row["validation_forces_mae"]))
                 for row in csv.DictReader(handle)]
    return {"seconds": seconds, "curve": curve, "kind": "mlipkit", "model_path": str(directory / "best.ckpt")}


def mace_run_train(data: dict, epochs: int, stress_weight: float, stage_two: bool, directory: Path, threads: int) -> dict:
    from ase.data import atomic_numbers

    directory.mkdir(parents=True, exist_ok=True)
    e0s = "{" + ", ".join(f"{atomic_numbers[s]}: {float(e)!r}" for s, e in data["shifts"].items()) + "}"
    command = [
        str(ENVIRONMENTS["mace"] / "bin" / "mace_run_train"), "--name", "model", "--seed", "0",
        "--train_file", data["files"]["train"], "--valid_file", data["files"]["valid"], "--test_file", data["files"]["test"],
        "--energy_key", "energy", "--forces_key", "forces", "--E0s", e0s, "--model", "MACE",
        "--hidden_irreps", MACE_MODEL["hidden_irreps"], "--r_max", str(R_MAX),
        "--num_interactions", str(MACE_MODEL["num_interactions"]), "--max_ell", str(MACE_MODEL["max_ell"]),
        "--correlation", str(MACE_MODEL["correlation"]), "--radial_MLP", json.dumps(MACE_MODEL["radial_mlp_hidden"]),
        "--num_radial_basis", str(MACE_MODEL["num_bessel"]), "--num_cutoff_basis", str(MACE_MODEL["num_polynomial_cutoff"]),
        "--energy_weight", str(ENERGY_WEIGHT), "--forces_weight", str(FORCES_WEIGHT), "--lr", str(LR), "--amsgrad",
        "--ema", "--ema_decay", str(EMA_DECAY), "--batch_size", str(BATCH_SIZE), "--valid_batch_size", "16",
        "--default_dtype", "float32", "--max_num_epochs", str(epochs), "--device", "cpu", "--scaling", "rms_forces_scaling",
        "--error_table", "PerAtomMAE", "--eval_interval", "1",
    ]
    if data["stress"]:
        command += ["--loss", "stress", "--stress_key", "stress", "--stress_weight", str(stress_weight)]
    else:
        command += ["--loss", "weighted"]
    if stage_two:
        command += ["--swa"]
    seconds = run(command, directory / "mace_run_train.log", threads, directory)
    pattern = re.compile(r"Epoch (\d+): .*MAE_E_per_atom=\s*([\d.]+) meV, MAE_F=\s*([\d.]+) meV")
    curve = [(int(m[1]) + 1, float(m[2]) / 1000, float(m[3]) / 1000)
             for m in map(pattern.search, (directory / "mace_run_train.log").read_text().splitlines()) if m]
    return {"seconds": seconds, "curve": curve, "kind": "mace", "model_path": str(directory / "model.model")}


def nequip_train(data: dict, epochs: int, stress_weight: float, directory: Path, threads: int) -> dict:
    import yaml

    directory.mkdir(parents=True, exist_ok=True)
    coeffs = {"total_energy": ENERGY_WEIGHT, "forces": FORCES_WEIGHT}
    loss_target = "nequip.train.EnergyForceLoss"
    metrics_target = "nequip.train.EnergyForceMetrics"
    if data["stress"]:
        coeffs["stress"] = stress_weight
        loss_target, metrics_target = "nequip.train.EnergyForceStressLoss", "nequip.train.EnergyForceStressMetrics"
    monitored = "val0_epoch/weighted_sum"
    transforms = [
        {"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper", "model_type_names": data["type_names"]},
        {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": R_MAX},
    ]
    config = {
        "run": ["train"], "cutoff_radius": R_MAX, "model_type_names": data["type_names"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": 0,
            "train_file_path": data["files"]["train"], "val_file_path": data["files"]["valid"],
            "test_file_path": data["files"]["test"], "transforms": transforms,
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": BATCH_SIZE, "shuffle": True},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 16},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager", "type_names": data["type_names"]},
        },
        "trainer": {
            "_target_": "lightning.Trainer", "accelerator": "cpu", "max_epochs": epochs, "enable_progress_bar": False,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(directory), "name": "", "version": ""},
            "callbacks": [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "dirpath": str(directory),
                           "filename": "best", "monitor": monitored, "mode": "min", "save_last": True}],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule", "ema_decay": EMA_DECAY,
            "loss": {"_target_": loss_target, "per_atom_energy": True, "coeffs": coeffs},
            "val_metrics": {"_target_": metrics_target,
                            "coeffs": {"per_atom_energy_mae": 1.0, "forces_mae": 1.0}},
            "optimizer": {"_target_": "torch.optim.Adam", "lr": LR, "amsgrad": True},
            "model": {"_target_": "nequip.model.NequIPGNNModel", "seed": 0, "model_dtype": "float32",
                      "type_names": data["type_names"], "r_max": R_MAX, **NEQUIP_PEER_MODEL,
                      "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
                      "per_type_energy_shifts": data["shifts"], "per_type_energy_scales": data["forces_rms"]},
        },
    }
    (directory / "nequip_config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    seconds = run([str(ENVIRONMENTS["nequip"] / "bin" / "nequip-train"), "-cp", str(directory), "-cn", "nequip_config",
                   f"hydra.run.dir={directory / 'hydra'}"], directory / "nequip-train.log", threads, directory)
    curve = []
    with open(directory / "metrics.csv") as handle:
        for row in csv.DictReader(handle):
            if row.get("val0_epoch/per_atom_energy_mae"):
                curve.append((int(row["epoch"]) + 1, float(row["val0_epoch/per_atom_energy_mae"]),
                              float(row["val0_epoch/forces_mae"])))
    return {"seconds": seconds, "curve": curve, "kind": "nequip", "model_path": str(directory / "best.ckpt")}


# -- evaluation (runs in each tool's environment) ------------------------------------------------------------------

def calculator(kind: str, path: str):
    if kind == "mlipkit":
        from mlipkit.calculators import MLIPCalculator

        return MLIPCalculator(path)
    if kind == "mace":
        from mace.calculators import MACECalculator

        return MACECalculator(model_paths=path, device="cpu", default_dtype="float32")
    from nequip.integrations.ase import NequIPCalculator

    return NequIPCalculator._from_saved_model(path, device="cpu")


def equation_of_state(calc) -> tuple[float, float]:
    """Lattice constant (Å) and bulk modulus (GPa) of fcc Cu: quartic fit of the energy per atom over a."""
    from ase.build import bulk

    energies = []
    for a in EOS_LATTICE_CONSTANTS:
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        atoms.calc = calc
        energies.append(atoms.get_potential_energy() / len(atoms))
    fit = np.polyfit(EOS_LATTICE_CONSTANTS, energies, 4)
    minima = [r.real for r in np.roots(np.polyder(fit)) if abs(r.imag) < 1e-9 and 3.2 < r.real < 4.0]
    if not minima:
        return float("nan"), float("nan")
    a0 = min(minima, key=lambda r: np.polyval(fit, r))
    # V = a^3 / 4 per atom; where dE/da = 0, B = V d2E/dV2 = V E''(a) / V'(a)^2
    volume, dv_da = a0**3 / 4, 3 * a0**2 / 4
    return float(a0), float(volume * np.polyval(np.polyder(fit, 2), a0) / dv_da**2 * EV_PER_A3_IN_GPA)


def evaluate(kind: str, path: str, test_file: str, eos: bool) -> dict:
    """Test-set MAEs (energy per atom, forces, stress) through the tool's ASE calculator; the Cu equation of state."""
    from ase.io import read
    from ase.stress import voigt_6_to_full_3x3_stress

    calc = calculator(kind, path)
    errors = {"energy": [], "forces": [], "stress": []}
    for atoms in read(test_file, ":"):
        reference = dict(atoms.calc.results)
        atoms.calc = calc
        errors["energy"].append(abs(atoms.get_potential_energy() - reference["energy"]) / len(atoms))
        errors["forces"].append(np.abs(atoms.get_forces() - reference["forces"]).ravel())
        if "stress" in reference:
            expected = np.asarray(reference["stress"])
            expected = voigt_6_to_full_3x3_stress(expected) if expected.size == 6 else expected.reshape(3, 3)
            errors["stress"].append(np.abs(atoms.get_stress(voigt=False) - expected).ravel())
    result = {"energy_mae": float(np.mean(errors["energy"])), "forces_mae": float(np.mean(np.concatenate(errors["forces"])))}
    if errors["stress"]:
        result["stress_mae"] = float(np.mean(np.concatenate(errors["stress"])))
    if eos:
        result["a0"], result["bulk_modulus"] = equation_of_state(calc)
    return result


def evaluate_in_environment(kind: str, path: str, test_file: str, eos: bool, threads: int) -> dict:
    command = [str(ENVIRONMENTS[kind] / "bin" / "python"), __file__, "--evaluate", kind, path, test_file]
    output = subprocess.run(command + (["--eos"] if eos else []), capture_output=True, text=True, env=tool_environment(threads))
    if output.returncode:
        raise SystemExit(f"benchmark_training: evaluating {path} failed:\n{output.stderr[-3000:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------------------------

def benchmark(dataset: str, models: list[str], epochs: int, stress_weight: float, stage_two: bool, output: Path,
              threads: int, equal_time: bool) -> dict:
    data = prepare(dataset, output / dataset / "data")
    eos = dataset == "cu"
    results: dict = {"data": data, "runs": {}}
    for model in models:
        peer = PEERS[model]
        directory = output / dataset / model
        print(f"[{dataset}] {model}: {peer}, {epochs} epochs", flush=True)
        if model == "mace":
            peer_run = mace_run_train(data, epochs, stress_weight, stage_two, directory / "peer", threads)
        else:
            peer_run = nequip_train(data, epochs, stress_weight, directory / "peer", threads)
        print(f"[{dataset}] {model}: mlip-train, {epochs} epochs", flush=True)
        runs = {peer: peer_run, "mlip-train": mlip_train(model, data, epochs, stress_weight, directory / "mlip-train", threads)}
        if equal_time:
            per_epoch = runs["mlip-train"]["seconds"] / epochs
            same_time_epochs = max(epochs, int(peer_run["seconds"] / per_epoch))
            print(f"[{dataset}] {model}: mlip-train, {same_time_epochs} epochs (the peer's wall time)", flush=True)
            runs["mlip-train (equal time)"] = mlip_train(model, data, same_time_epochs, stress_weight,
                                                         directory / "mlip-train-equal-time", threads)
        for label, result in runs.items():
            result["epochs"] = len(result["curve"])
            result["test"] = evaluate_in_environment(result["kind"], result["model_path"], data["files"]["test"], eos, threads)
        results["runs"][model] = runs
    if eos:
        from ase.calculators.emt import EMT

        results["emt_eos"] = dict(zip(("a0", "bulk_modulus"), equation_of_state(EMT())))
    learning_curves(dataset, results, output / f"{dataset}_learning_curves.png")
    return results


def learning_curves(dataset: str, results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["runs"])
    figure, axes = plt.subplots(len(models), 2, figsize=(10, 3.6 * len(models)), squeeze=False)
    for row, model in enumerate(models):
        for column, (label, unit) in enumerate((("energy", "meV/atom"), ("forces", "meV/Å"))):
            axis = axes[row][column]
            for name, run_result in results["runs"][model].items():
                curve = np.array(run_result["curve"])
                # the equal-time run repeats the equal-epochs one before going on: dashed, underneath
                style = {"linestyle": "--", "zorder": 1} if "equal time" in name else {"linewidth": 2, "zorder": 2}
                axis.plot(curve[:, 0], 1000 * curve[:, 1 + column], label=f"{name} ({run_result['seconds']:.0f} s)", **style)
            axis.set_yscale("log")
            axis.set_xlabel("epoch")
            axis.set_ylabel(f"validation {label} MAE ({unit})")
            axis.set_title(f"{dataset}: {model.upper() if model == 'mace' else 'NequIP'}")
            axis.grid(alpha=0.3)
            axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(output: Path, everything: dict, arguments: argparse.Namespace) -> None:
    from benchmark_peers import machine_name

    lines = [f"# Training benchmark ({time.strftime('%Y-%m-%d')}, {machine_name()}, {arguments.threads} threads, "
             f"{arguments.epochs} epochs)", ""]
    for dataset, results in everything.items():
        sizes = results["data"]["sizes"]
        lines += [f"## {dataset} ({sizes['train']}/{sizes['valid']}/{sizes['test']} train/validation/test)", "",
                  "| model | tool | epochs | wall time (s) | test energy MAE (meV/atom) | test force MAE (meV/Å) "
                  "| test stress MAE (meV/Å³) | a0 (Å) | B (GPa) |", "|---|---|---|---|---|---|---|---|---|"]
        for model, runs in results["runs"].items():
            for name, run_result in runs.items():
                test = run_result["test"]
                stress = f"{1000 * test['stress_mae']:.2f}" if "stress_mae" in test else "-"
                eos = (f"{test['a0']:.3f} | {test['bulk_modulus']:.0f}" if "a0" in test else "- | -")
                lines.append(f"| {model} | {name} | {run_result['epochs']} | {run_result['seconds']:.1f} | "
                             f"{1000 * test['energy_mae']:.2f} | {1000 * test['forces_mae']:.2f} | {stress} | {eos} |")
        if "emt_eos" in results:
            lines.append(f"| | EMT (the reference) | | | | | | {results['emt_eos']['a0']:.3f} | "
                         f"{results['emt_eos']['bulk_modulus']:.0f} |")
        lines += ["", f"![{dataset}]({dataset}_learning_curves.png)", ""]
    (output / "training.md").write_text("\n".join(lines))
    (output / "training.json").write_text(json.dumps(everything, indent=1))
    print("\n".join(lines))
    print(f"wrote {output / 'training.md'} and {output / 'training.json'}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--evaluate":
        print(json.dumps(evaluate(sys.argv[2], sys.argv[3], sys.argv[4], "--eos" in sys.argv[5:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--models", nargs="+", choices=list(PEERS), default=list(PEERS))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--stress-weight", type=float, default=10.0, help="stress loss weight where the data has stress")
    parser.add_argument("--stage-two", action="store_true", help="mace_run_train with its Stage Two (--swa)")
    parser.add_argument("--no-equal-time", action="store_true", help="skip the mlip-train runs at the peers' wall time")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=ROOT / "out" / "benchmark_training")
    arguments = parser.parse_args()
    for model in arguments.models:
        if not (ENVIRONMENTS[model] / "bin" / "python").exists():
            raise SystemExit(f"benchmark_training: {ENVIRONMENTS[model]} is missing; run `bash tools/peer_envs.sh {model}`")
    arguments.output.mkdir(parents=True, exist_ok=True)
    everything = {dataset: benchmark(dataset, arguments.models, arguments.epochs, arguments.stress_weight,
                                     arguments.stage_two, arguments.output, arguments.threads, not arguments.no_equal_time)
                  for dataset in arguments.datasets}
    write_report(arguments.output, everything, arguments)


if __name__ == "__main__":
    main()
