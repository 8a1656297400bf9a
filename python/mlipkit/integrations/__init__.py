"""Adapters for the engines people run MLIPs in (torch-sim, i-PI, OpenMM); each imports its engine lazily."""
