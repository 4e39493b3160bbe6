"""When an op may skip its registered custom op and run its body directly."""
from __future__ import annotations

import torch
from torch import Tensor

from ._functorch import needs_twin

__all__ = ["plain_eager"]

# bound once: every eager op asks, and right after a large op each module lookup is a cache miss
_is_compiling = torch.compiler.is_compiling
_function_mode_enabled = torch._C._is_torch_function_mode_enabled


def plain_eager(x: Tensor) -> bool:
    """A plain tensor, not under ``torch.compile`` and no ``TorchFunctionMode`` watching.

    Only then may an op skip its ``torch.library`` custom op (whose Python dispatch costs
    ~0.1 ms a call): tracers, compilers, function modes (``regulab doctor`` uses one) and
    ``torch.func`` transforms and forward-mode AD (:mod:`._functorch`) must see the op.
    """
    return (type(x) is torch.Tensor and not _is_compiling() and not _function_mode_enabled()
            and not needs_twin())
