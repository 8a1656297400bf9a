"""Entry points: thin argument parsing over the library."""
