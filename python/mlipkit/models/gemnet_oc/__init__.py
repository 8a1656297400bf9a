"""GemNet-OC (Gasteiger et al. 2022), being built (issue 15): directional message passing over edges,
triplets and quadruplets, with every index set derived from one edge list inside the model."""
