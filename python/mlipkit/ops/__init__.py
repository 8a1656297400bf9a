"""Python face of the C++ op library (``torch.ops.mlipkit``) and its references."""

from mlipkit.ops.library import (
    activation_derivative,
    channelwise_polynomial,
    emulation_library_path,
    halo_exchange,
    has_kernels,
    kernel_isa,
    library_path,
    load_library,
    radial_convolution,
    segment_gather,
    segment_outer_sum,
    segment_sum,
    tensor_product_convolution,
)
from mlipkit.ops.reference import (
    channelwise_polynomial_reference,
    radial_convolution_reference,
    segment_gather_reference,
    segment_outer_sum_reference,
    segment_sum_reference,
    tensor_product_convolution_reference,
)

__all__ = [
    "activation_derivative",
    "channelwise_polynomial",
    "channelwise_polynomial_reference",
    "emulation_library_path",
    "halo_exchange",
    "has_kernels",
    "kernel_isa",
    "library_path",
    "load_library",
    "radial_convolution",
    "radial_convolution_reference",
    "segment_gather",
    "segment_gather_reference",
    "segment_outer_sum",
    "segment_outer_sum_reference",
    "segment_sum",
    "segment_sum_reference",
    "tensor_product_convolution",
    "tensor_product_convolution_reference",
]
