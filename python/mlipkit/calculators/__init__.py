"""ASE calculators."""

from mlipkit.calculators.ase import MLIPCalculator

__all__ = ["MLIPCalculator"]
