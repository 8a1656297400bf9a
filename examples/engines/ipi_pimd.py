"""i-PI drives an mlipkit model: path-integral MD (PIMD) of a structure, i-PI and mlip-ipi as two processes.

    .venv/bin/python examples/engines/ipi_pimd.py MODEL [STRUCTURE] [--beads 4] [--steps 20]

MODEL: a checkpoint or compiled artifact (default: the demo's out/demo_nequip.pt2);
STRUCTURE: any file ASE reads (default: a rattled 32-atom Cu cell). Writes
i-PI's input and outputs to out/ipi_pimd/ and prints i-PI's properties. Needs
`pip install mlipkit[ipi]` (tools/setup.sh installs it).
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

from ase.build import bulk
from ase.io import read, write

BIN = Path(sys.executable).parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="out/demo_nequip.pt2")
    parser.add_argument("structure", nargs="?")
    parser.add_argument("--beads", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--temperature", type=float, default=300.0)
    arguments = parser.parse_args()
    directory = Path("out/ipi_pimd").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if arguments.structure:
        atoms = read(arguments.structure)
    else:
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=1)
    write(directory / "template.xyz", atoms)
    cell = atoms.cell.cellpar()
    # i-PI's xyz: the cell (a b c alpha beta gamma) in the comment line
    lines = [str(len(atoms)), "# CELL(abcABC): " + " ".join(f"{value:.10f}" for value in cell) + " cell{angstrom} positions{angstrom}"]
    lines += [f"{symbol} {x:.10f} {y:.10f} {z:.10f}" for symbol, (x, y, z) in zip(atoms.get_chemical_symbols(), atoms.positions)]
    (directory / "init.xyz").write_text("\n".join(lines) + "\n")
    socket = f"mlipkit_pimd_{int(time.time())}"
    (directory / "input.xml").write_text(f"""<simulation verbosity='low' safe_stride='1000'>
  <output prefix='pimd'>
    <properties stride='2' filename='out'> [ step, time{{femtosecond}}, conserved{{electronvolt}}, temperature{{kelvin}},
      potential{{electronvolt}}, kinetic_cv{{electronvolt}} ] </properties>
  </output>
  <total_steps>{arguments.steps}</total_steps>
  <prng><seed>31415</seed></prng>
  <ffsocket name='mlipkit' mode='unix'><address>{socket}</address><latency>1e-4</latency></ffsocket>
  <system>
    <initialize nbeads='{arguments.beads}'>
      <file mode='xyz'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> {arguments.temperature} </velocities>
    </initialize>
    <forces><force forcefield='mlipkit'/></forces>
    <ensemble><temperature units='kelvin'> {arguments.temperature} </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 1.0 </timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
""")
    started = time.perf_counter()
    server = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    time.sleep(2)  # i-PI opens its socket
    driver = subprocess.Popen([str(BIN / "mlip-ipi"), str(Path(arguments.model).resolve()), str(directory / "template.xyz"),
                               "--unix", socket], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server.wait(timeout=3600)
    output, _ = driver.communicate(timeout=120)
    print(f"i-PI PIMD: {len(atoms)} atoms x {arguments.beads} beads, {arguments.steps} steps of 1 fs at "
          f"{arguments.temperature:g} K in {time.perf_counter() - started:.0f} s (i-PI exit {server.returncode}, "
          f"mlip-ipi exit {driver.returncode})")
    print((directory / "pimd.out").read_text())
    if driver.returncode:
        print(output)


if __name__ == "__main__":
    main()
