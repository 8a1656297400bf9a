"""An i-PI client (driver) for mlipkit models and artifacts (``pip install mlipkit[ipi]``).

i-PI sends the cell and positions of each bead in atomic units over its
socket protocol and takes back energy, forces, virial and a JSON string of
extras. This module is an i-PI "PES" for i-PI's own Python driver loop: run it
as ``mlip-ipi MODEL TEMPLATE --unix NAME`` (or ``--address HOST --port N``),
or directly as ``i-pi-py_driver -m custom -P <this file> -o model=...,template=...``.
The template (any file ASE reads) gives the atoms' elements and order, as
the positions i-PI sends do not.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np
from ipi.pes._ase import ASEDriver
from ipi.utils.units import unit_to_internal

from mlipkit.calculators import MLIPCalculator
from mlipkit.compile.artifact import model_units

__DRIVER_NAME__ = "mlipkit"
__DRIVER_CLASS__ = "MLIPKitDriver"

#: what the calculator adds for charge models (per-atom charges) and mean-variance models (the energy's σ per
#: atom), sent as i-PI extras
EXTRA_PROPERTIES = ("charges", "energy_uncertainty")
#: i-PI's name of each LAMMPS unit style's energy unit (lengths are Å in both)
ENERGY_UNITS = {"metal": ("electronvolt", 1.0), "real": ("cal/mol", 1000.0)}


class MLIPKitDriver(ASEDriver):
    """i-PI PES of an mlipkit checkpoint or artifact: energy, forces, virial (periodic templates), and as
    extras the partial charges and total dipole (charge models) and the energy's σ (mean-variance models)."""

    def __init__(self, template, model, device="cpu", *args, **kwargs):
        self.model_path, self.device = model, device
        super().__init__(template, *args, **kwargs)

    def check_parameters(self):
        super().check_parameters()
        self.ase_calculator = MLIPCalculator(self.model_path, device=self.device)
        model = self.ase_calculator.model
        unknown = sorted(set(self.template_ase.get_chemical_symbols()) - set(model.type_names))
        if unknown:
            raise ValueError(f"{self.template}: element(s) {unknown} that the model lacks (it knows {list(model.type_names)})")
        self.energy_unit, self.energy_factor = ENERGY_UNITS[model_units(model)]
        if not np.all(self.template_ase.pbc):
            self.capabilities = [name for name in self.capabilities if name != "stress"]

    def compute_structure(self, cell: np.ndarray, pos: np.ndarray):
        cell, pos = self.convert_units(cell, pos)
        structure = self.template_ase.copy()
        structure.positions[:] = pos
        if np.all(structure.pbc):
            structure.cell[:] = cell
        structure.calc = self.ase_calculator
        # (not ASE's get_properties: it refuses the extra results of charge and mean-variance models)
        energy = unit_to_internal("energy", self.energy_unit, structure.get_potential_energy() * self.energy_factor)
        forces = unit_to_internal("energy", self.energy_unit, structure.get_forces() * self.energy_factor)
        forces = unit_to_internal("length", "angstrom", 1.0) ** -1 * forces
        virial = np.zeros((3, 3))
        if "stress" in self.capabilities:
            stress = structure.get_stress(voigt=False)
            virial = unit_to_internal("energy", self.energy_unit, -stress * structure.get_volume() * self.energy_factor).T
        results = self.ase_calculator.results
        extras = {name: np.asarray(results[name]).tolist() for name in EXTRA_PROPERTIES if name in results}
        return np.float64(energy), np.asarray(forces, np.float64), np.asarray(virial, np.float64), json.dumps(extras) if extras else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlip-ipi", description="Connect an mlipkit model to an i-PI server as its force driver.")
    parser.add_argument("model", help="checkpoint (.ckpt) or compiled artifact (.pt2/.pt)")
    parser.add_argument("template", help="a structure file ASE reads: the atoms' elements, in i-PI's order")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="i-PI's UNIX socket name (ffsocket mode='unix', address NAME)")
    where.add_argument("--port", type=int, help="i-PI's TCP port on --address")
    parser.add_argument("--address", default="localhost", help="i-PI's host for --port")
    parser.add_argument("--device", default="cpu")
    arguments = parser.parse_args(argv)
    driver = shutil.which("i-pi-py_driver", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if driver is None:
        print("mlip-ipi: error: i-PI is not installed (pip install mlipkit[ipi])", file=sys.stderr)
        return 1
    for path in (arguments.model, arguments.template):
        if not os.path.isfile(path):
            print(f"mlip-ipi: error: file not found: {path}", file=sys.stderr)
            return 1
    options = f"model={os.path.abspath(arguments.model)},template={os.path.abspath(arguments.template)},device={arguments.device}"
    command = [driver, "-m", "custom", "-P", os.path.abspath(__file__), "-o", options]
    command += ["-u", "-a", arguments.unix] if arguments.unix else ["-a", arguments.address, "-p", str(arguments.port)]
    os.execv(driver, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
