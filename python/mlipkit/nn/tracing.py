"""Whether a forward pass runs on real values or is being traced for export."""

from __future__ import annotations

import torch


def is_eager() -> bool:
    """Whether tensors hold values here (not traced or compiled), so that data-dependent checks can run."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is None and not torch.compiler.is_compiling()
