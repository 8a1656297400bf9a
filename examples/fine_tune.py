"""Fine-tuning example: a Cu NequIP pre-trained on the shipped data, adapted to strained, hot Cu.

    .venv/bin/python examples/fine_tune.py

Makes 12 training and 40 test frames of fcc Cu at 1600 K under -6 % and +6 %
strain (tools/generate_emt_data.py, seeded; the shipped data stop at 1300 K
and 2 %), pre-trains NequIP with examples/train_cu.yaml unless
out/train_cu/best.ckpt exists, then trains three models:
SSF (examples/fine_tune/ssf.yaml), adapters in two stages (adapter.yaml) and
the same NequIP from scratch (scratch.yaml) on 9 of the 12 frames (3 validate),
and prints every model's errors on
the 40 held-out frames, the pre-trained model without fine-tuning included.
Then it puts a mean-variance head on the pre-trained model (mean_var.yaml,
trained on the shipped data), prints the calibration of its std on held-out
shipped frames and on the strained ones, compiles it, and runs
examples/lammps/cu_uncertainty.in, which prints the std in the thermo output.
About ten minutes on 2 cores.
"""

import os
import subprocess
import sys
from pathlib import Path

from mlipkit.compile import compile_checkpoint
from mlipkit.train import Trainer, load_config
from mlipkit.train.evaluation import evaluate_checkpoint

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "out" / "fine_tune" / "data"
PRETRAINED = ROOT / "out" / "train_cu" / "best.ckpt"
CONDITIONS = ["--temperatures", "1600", "--strains", "-0.06", "0.06"]


def generate(name: str, frames_per_run: int, seed: int) -> Path:
    path = DATA / f"strained_{name}.xyz"
    if not path.exists():
        command = [sys.executable, str(ROOT / "tools" / "generate_emt_data.py"), str(path), *CONDITIONS,
                   "--frames-per-run", str(frames_per_run), "--seed", str(seed)]
        subprocess.run(command, check=True)
    return path


def train(config: Path):
    print(f"\n$ mlip-train {config.relative_to(ROOT)}")
    return Trainer(load_config(config)).run()


def print_calibration(name: str, metrics: dict) -> None:
    print(f"{name:<28} {1000 * metrics['energy_mae']:8.2f} {1000 * metrics['energy_mean_sigma']:10.2f} "
          f"{metrics['energy_nll']:8.2f} {100 * metrics['energy_within_1sigma']:12.1f} {100 * metrics['energy_within_2sigma']:12.1f}")


def main() -> None:
    os.chdir(ROOT)  # the configs' output directories are relative to the repository root
    generate("train", 6, 11)
    test = generate("test", 20, 12)
    if not PRETRAINED.exists():
        train(ROOT / "examples" / "train_cu.yaml")
    checkpoints = {"pre-trained, not fine-tuned": PRETRAINED}
    for name in ("ssf", "adapter", "scratch"):
        checkpoints[name] = train(ROOT / "examples" / "fine_tune" / f"{name}.yaml").best_checkpoint
    mean_var = train(ROOT / "examples" / "fine_tune" / "mean_var.yaml")
    print(f"\nerrors on {test.relative_to(ROOT)} (40 frames of strained Cu at 1600 K):")
    print(f"{'model':<30} {'energy MAE (meV/atom)':>22} {'forces MAE (meV/Å)':>20}")
    for name, checkpoint in checkpoints.items():
        metrics = evaluate_checkpoint(checkpoint, test)
        print(f"{name:<30} {1000 * metrics['eval_energy_mae']:22.2f} {1000 * metrics['eval_forces_mae']:20.1f}")

    print("\nmean-variance head: energy MAE and mean std (meV/atom), NLL, % of energy errors within 1 and 2 std "
          "(Gaussian: 68.3, 95.4)")
    print(f"{'held-out frames':<28} {'MAE':>8} {'mean std':>10} {'NLL':>8} {'within 1 std':>12} {'within 2 std':>12}")
    in_distribution = {k.removeprefix("test_"): v for k, v in mean_var.test_metrics.items()}
    print_calibration("shipped data (test split)", in_distribution)
    strained = {k.removeprefix("eval_"): v for k, v in evaluate_checkpoint(mean_var.best_checkpoint, test).items()}
    print_calibration("strained Cu at 1600 K", strained)

    artifact = ROOT / "out" / "fine_tune" / "mean_var.pt2"
    print(f"\n$ mlip-compile {mean_var.best_checkpoint} {artifact.relative_to(ROOT)}")
    compile_checkpoint(mean_var.best_checkpoint, artifact)
    deck = ROOT / "examples" / "lammps" / "cu_uncertainty.in"
    print(f"$ lmp -in {deck.relative_to(ROOT)} -var model {artifact.relative_to(ROOT)}")
    lmp = Path(sys.executable).parent / "lmp"
    run = subprocess.run([str(lmp), "-in", str(deck), "-var", "model", str(artifact), "-log", str(artifact.with_suffix(".log")),
                          "-nocite"], cwd=ROOT, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"LAMMPS failed:\n{run.stdout[-3000:]}{run.stderr[-3000:]}")
    lines = run.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("Loop time"))
    print("\n".join(lines[start:end]))


if __name__ == "__main__":
    main()
