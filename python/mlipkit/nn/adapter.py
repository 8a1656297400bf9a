"""Adapters for parameter-efficient fine-tuning (AdapterGNN, Li et al. 2023), as PhysicsML's adapter models.

Every message-passing layer gets one small bottleneck network on its input and
one on its output, added with learnable weights (``initial_s`` at the start)
to the batch-normalised layer output:
x = BN(out) + s_before * adapter_before(in) + s_after * adapter_after(out).
"""

from __future__ import annotations

import torch
from e3nn import o3
from e3nn.nn import Activation, BatchNorm
from torch import nn

from mlipkit.nn.feature_scale_shift import EquivariantAffine
from mlipkit.nn.linear import Linear


class EquivariantBatchNorm(BatchNorm):
    """e3nn's batch norm; with running statistics, the same map as a per-copy scale and 0e shift.

    With fixed statistics e3nn's normalisation is an affine map per irrep copy;
    written that way it traces and exports (e3nn's own forward does not
    compile). ``batch_statistics``: in training mode, normalise by the batch and
    update the running statistics (e3nn's and PhysicsML's behaviour); otherwise
    the running statistics are used in training too.
    """

    def __init__(self, irreps: o3.Irreps, batch_statistics: bool = True):
        super().__init__(irreps)
        self.batch_statistics = batch_statistics
        self.layout = EquivariantAffine(irreps)
        # exactly the identity until statistics arrive: (running_var + eps)^-1/2 = 1
        self.running_var.fill_(1.0 - self.eps)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.training and self.batch_statistics:
            return super().forward(features)
        copy_scale = self.weight * (self.running_var + self.eps).pow(-0.5)
        scalar_shift = self.bias - self.running_mean * copy_scale.index_select(0, self.layout.scalar_copies)
        return self.layout.affine(features, copy_scale, scalar_shift)


class Adapter(nn.Module):
    """Linear down to mul // ratio copies of each irrep, SiLU on the even scalars, linear up, batch norm."""

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, ratio_adapter_down: int, batch_statistics: bool):
        super().__init__()
        irreps_down = o3.Irreps([(mul // ratio_adapter_down, ir) for mul, ir in irreps_in if mul >= ratio_adapter_down])
        if irreps_down.dim == 0:
            raise ValueError(
                f"ratio_adapter_down={ratio_adapter_down} leaves no channels of the layer features {irreps_in}; "
                "use a ratio no larger than the number of channels"
            )
        self.down = Linear(irreps_in, irreps_down)
        self.act = Activation(irreps_down, [torch.nn.functional.silu if ir == o3.Irrep("0e") else None for _, ir in irreps_down])
        self.up = Linear(irreps_down, irreps_out)
        self.norm = EquivariantBatchNorm(irreps_out, batch_statistics)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(self.up(self.act(self.down(features))))


class LayerAdapters(nn.Module):
    """The adapters of one layer, used through the message-passing ``layer_adapters`` hook."""

    def __init__(
        self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, ratio_adapter_down: int, initial_s: float, batch_statistics: bool
    ):
        super().__init__()
        self.before = Adapter(irreps_in, irreps_out, ratio_adapter_down, batch_statistics)
        self.after = Adapter(irreps_out, irreps_out, ratio_adapter_down, batch_statistics)
        self.norm = EquivariantBatchNorm(irreps_out, batch_statistics)
        self.s_before = nn.Parameter(torch.tensor(float(initial_s)))
        self.s_after = nn.Parameter(torch.tensor(float(initial_s)))

    def forward(self, layer_input: torch.Tensor, layer_output: torch.Tensor) -> torch.Tensor:
        return self.norm(layer_output) + self.s_before * self.before(layer_input) + self.s_after * self.after(layer_output)
