"""Reusable equivariant blocks shared by every model."""
