"""The radial MLP that turns an edge's radial embedding into tensor-product weights, and the two ways the
fused kernels run it (inside the convolution op, or with the activation op in force training)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from e3nn.nn import FullyConnectedNet

from mlipkit.nn.activations import activation, scaled_activation


def radial_mlp(
    num_inputs: int,
    hidden: Sequence[int],
    num_outputs: int,
    activation_name: str = "silu",
    variance_scale: float = 1.0,
) -> FullyConnectedNet:
    """e3nn's normalised MLP; ``variance_scale`` multiplies the variance of the initial weights."""
    mlp = FullyConnectedNet([num_inputs, *hidden, num_outputs], activation(activation_name))
    if variance_scale != 1.0:
        with torch.no_grad():
            for parameter in mlp.parameters():
                parameter.mul_(math.sqrt(variance_scale))
    return mlp


def mlp_weight_matrices(mlp: FullyConnectedNet) -> tuple[list[torch.Tensor], list[int], float]:
    """e3nn's MLP as plain matrices: each weight scaled as its layer scales it, the widths, and the factor
    after each hidden activation (normalize2mom's constant)."""
    weights, scale = [], 1.0
    for index, layer in enumerate(mlp):
        if layer.act is not None:
            weights.append(layer.weight / (layer.h_in * layer.var_in) ** 0.5)
            scale = (1.0 if layer.act._is_id else layer.act.cst) * layer.var_out**0.5
        else:
            if index != len(mlp) - 1:
                raise ValueError("the fused kernels take MLPs whose hidden layers all have an activation")
            weights.append(layer.weight / (layer.h_in * layer.var_in / layer.var_out) ** 0.5)
    return weights, list(mlp.hs), scale


def mlp_operands(mlp: FullyConnectedNet) -> tuple[torch.Tensor, list[int], float]:
    """The MLP as the radial convolution op takes it: the matrices of ``mlp_weight_matrices`` flattened."""
    weights, widths, scale = mlp_weight_matrices(mlp)
    return torch.cat([w.reshape(-1) for w in weights]), widths, scale


def mlp_with_activation_op(mlp: FullyConnectedNet, inputs: torch.Tensor, activation_name: str) -> torch.Tensor:
    """``mlp(inputs)`` with each hidden activation (its factor included) one ``mlipkit::activation_derivative``
    call, whose derivatives of every order are one call each: force training differentiates the MLP twice,
    and autograd's own formulas for that take dozens of passes over the [edges, hidden] activations."""
    weights, _, scale = mlp_weight_matrices(mlp)
    hidden = inputs
    for weight in weights[:-1]:
        hidden = scaled_activation(hidden @ weight, activation_name, scale)
    return hidden @ weights[-1]
