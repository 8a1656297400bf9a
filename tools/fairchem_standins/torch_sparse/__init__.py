"""Stand-in for torch_sparse (reference environment only): enough for fairchem-core 1.x to import.

Building GemNetOC needs only the name; evaluating it needs the SparseTensor
operations of its triplet/quadruplet index code, which this stand-in does not
provide yet and refuses in its own words.
"""

from __future__ import annotations


class SparseTensor:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError(
            "torch_sparse stand-in: SparseTensor is not implemented; fairchem's GemNetOC can be built and counted, "
            "not evaluated, in this environment"
        )
