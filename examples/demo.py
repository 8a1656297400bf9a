"""mlipkit demo: the Quick start page (docs/quickstart.md), run block by block.

Run with ``bash tools/setup.sh demo``. Trains NequIP on the shipped EMT data of
fcc Cu, evaluates and compiles it, runs it in ASE and ends with NVE of 256 Cu
atoms in LAMMPS on one and two MPI ranks: every ``bash`` and ``python`` block
of the page, in order, from the repository root, with this environment's
commands first on PATH. Python blocks share one namespace, as in a notebook.
A block that fails stops the demo with the page's line number.
``--figures DIR`` copies the training plots the page shows into DIR
(``docs/figures/quickstart`` refreshes the page's own).
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from docs_snippets import snippets  # noqa: E402

PAGE = ROOT / "docs" / "quickstart.md"
#: the plots of mlip-train's run that the page shows
FIGURES = ("learning_curve.png", "parity_energy.png", "parity_forces.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--figures", type=Path, help="copy the page's training plots here after the run")
    arguments = parser.parse_args()
    os.chdir(ROOT)
    environment = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    namespace: dict = {}
    started = time.perf_counter()
    for snippet in snippets(PAGE):
        if not snippet.runs:
            continue
        print(f"\n# docs/quickstart.md, line {snippet.line}", flush=True)
        if snippet.language == "python":
            print(snippet.code, flush=True)
            exec(compile(snippet.code, f"docs/quickstart.md:{snippet.line}", "exec"), namespace)
            continue
        for command in snippet.code.splitlines():
            print(f"$ {command}", flush=True)
            if subprocess.run(command, shell=True, env=environment).returncode != 0:
                raise SystemExit(f"demo: '{command}' (docs/quickstart.md, line {snippet.line}) failed")
    print(f"\ndemo finished in {time.perf_counter() - started:.0f} s")
    if arguments.figures:
        arguments.figures.mkdir(parents=True, exist_ok=True)
        for name in FIGURES:
            shutil.copy(ROOT / "out" / "train_cu" / name, arguments.figures / name)
        print(f"copied {', '.join(FIGURES)} to {arguments.figures}")


if __name__ == "__main__":
    main()
