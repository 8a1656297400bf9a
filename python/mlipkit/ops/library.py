"""Loading ``libmlipkit_ops`` and calling its ops."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

_LIBRARY_NAME = "libmlipkit_ops.so"


def library_path() -> Path:
    """Where the installed op library lives (the C++ runtime loads the same file)."""
    return Path(__file__).resolve().parent.parent / "lib" / _LIBRARY_NAME


@functools.cache
def load_library() -> None:
    """Register ``torch.ops.mlipkit.*`` once per process."""
    path = library_path()
    if not path.is_file():
        raise RuntimeError(
            f"mlipkit's C++ op library is missing ({path}); reinstall mlipkit with "
            "'pip install --no-build-isolation .' so that csrc/ is built"
        )
    torch.ops.load_library(str(path))


def has_kernels(device: torch.device) -> bool:
    """Whether the fused kernels (convolution, symmetric contraction, GemNet-OC's triplet sums) run on ``device``:
    always on the CPU; on a GPU where the op library was built with CUDA (elsewhere the models take the
    reference path)."""
    return device.type == "cpu" or (device.type == "cuda" and _built_with_cuda_kernels())


@functools.cache
def _built_with_cuda_kernels() -> bool:
    load_library()
    return torch._C._dispatch_has_kernel_for_dispatch_key("mlipkit::tensor_product_convolution", "CUDA")


def emulation_library_path() -> Path:
    """The CPU emulation of the device ops (``torch.ops.mlipkit_emulated``), which only tests load."""
    return library_path().with_name("libmlipkit_device_emulation.so")


def segment_sum(src: torch.Tensor, sorted_index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Deterministic sum of the rows of ``src`` into ``num_segments`` rows by a sorted index."""
    load_library()
    return torch.ops.mlipkit.segment_sum(src, sorted_index, num_segments)


def segment_gather(values: torch.Tensor, sorted_index: torch.Tensor) -> torch.Tensor:
    """``values[sorted_index]``, whose derivative is ``segment_sum``."""
    load_library()
    return torch.ops.mlipkit.segment_gather(values, sorted_index)


def tensor_product_convolution(
    node_features: torch.Tensor,
    edge_sh: torch.Tensor,
    edge_weights: torch.Tensor,
    edge_index: torch.Tensor,
    couplings: torch.Tensor,
    paths: list[int],
    num_out_features: int,
) -> torch.Tensor:
    """Fused gather, channelwise tensor product and receiver sum (see csrc/kernels/convolution.cpp).

    Features are components-outer, channels-inner per irrep; ``paths`` holds 8
    integers per path (l1, l2, l3, mul, input, harmonics, output and weight
    columns) and ``couplings`` each path's Clebsch-Gordan block times its weight.
    """
    load_library()
    return torch.ops.mlipkit.tensor_product_convolution(
        node_features, edge_sh, edge_weights, edge_index, couplings, paths, num_out_features
    )


def activation_derivative(
    x: torch.Tensor, activation: str, order: int = 0, scale: float = 1.0, factor: torch.Tensor | None = None
) -> torch.Tensor:
    """``scale * f^(order)(x) * factor`` for an activation ``f`` by its config name, in one pass; its
    derivatives are the op again (see csrc/kernels/activation.cpp)."""
    load_library()
    return torch.ops.mlipkit.activation_derivative(x, activation, order, scale, factor)


def radial_convolution(
    node_features: torch.Tensor,
    edge_sh: torch.Tensor,
    edge_radial: torch.Tensor,
    mlp_weights: torch.Tensor,
    mlp_widths: list[int],
    activation: str,
    activation_scale: float,
    edge_index: torch.Tensor,
    couplings: torch.Tensor,
    paths: list[int],
    num_out_features: int,
) -> torch.Tensor:
    """``tensor_product_convolution`` with the edge weights made inside, tile by tile, by the radial MLP
    (see csrc/kernels/radial_convolution.cpp): the [E, W] weights are never stored.

    ``mlp_weights`` holds the MLP's normalised weight matrices ([widths[i], widths[i + 1]],
    row-major) one after another; hidden layers apply ``activation`` and multiply by
    ``activation_scale``.
    """
    load_library()
    return torch.ops.mlipkit.radial_convolution(
        node_features,
        edge_sh,
        edge_radial,
        mlp_weights,
        mlp_widths,
        activation,
        activation_scale,
        edge_index,
        couplings,
        paths,
        num_out_features,
    )


def channelwise_polynomial(
    features: torch.Tensor,
    node_weights: torch.Tensor,
    coefficients: torch.Tensor,
    terms: list[int],
    num_outputs: int,
) -> torch.Tensor:
    """A sparse polynomial in each node's features, channel by channel (see csrc/kernels/polynomial.cpp).

    features [N, D, C], node_weights [N, E] (how much of each coefficient set a
    node takes), coefficients [E, K, C] -> [N, num_outputs, C]. ``terms`` holds
    8 integers per term: output row, coefficient row, multiplier, degree and 4
    feature rows (the first ``degree`` used, the rest -1).
    """
    load_library()
    return torch.ops.mlipkit.channelwise_polynomial(features, node_weights, coefficients, terms, num_outputs)


def segment_outer_sum(
    basis: torch.Tensor, features: torch.Tensor, source: torch.Tensor, sorted_target: torch.Tensor, num_targets: int
) -> torch.Tensor:
    """``out[o, s, c] = sum over rows t with sorted_target[t] == o of basis[t, s] * features[source[t], c]``.

    GemNet-OC's triplet and quadruplet contraction without the [rows, C] gather
    or a padded matrix (see csrc/ops/segment_outer.cpp); deterministic, and its
    derivatives of any order run on its two companion ops.
    """
    load_library()
    return torch.ops.mlipkit.segment_outer_sum(basis, features, source, sorted_target, num_targets)


def halo_exchange(node_features: torch.Tensor) -> torch.Tensor:
    """Node rows [N, W] whose ghost rows take their owners' values (see csrc/ops/halo_exchange.cpp).

    The identity (a copy) unless a caller holding part of a system, a LAMMPS
    rank, registered its exchange; the derivative sums ghost rows onto owners.
    """
    load_library()
    return torch.ops.mlipkit.halo_exchange(node_features)


def kernel_isa() -> str:
    """The instruction set the fused CPU kernels run with (MLIPKIT_CPU_ISA overrides the choice)."""
    load_library()
    return torch.ops.mlipkit.kernel_isa()
