"""Python face of the C++ op library (``torch.ops.mlipkit``) and its references."""

from mlipkit.ops.library import library_path, load_library, segment_gather, segment_sum
from mlipkit.ops.reference import segment_gather_reference, segment_sum_reference

__all__ = [
    "library_path",
    "load_library",
    "segment_gather",
    "segment_gather_reference",
    "segment_sum",
    "segment_sum_reference",
]
