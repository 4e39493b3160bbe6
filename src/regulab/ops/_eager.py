"""When an op may skip its registered custom op and run its body directly."""
from __future__ import annotations

import torch
from torch import Tensor

from ._functorch import needs_twin

__all__ = ["plain_eager", "plain_gradient", "written_in_place"]

# bound once: every eager op asks, and right after a large op each module lookup is a cache miss
_is_compiling = torch.compiler.is_compiling
_function_mode_enabled = torch._C._is_torch_function_mode_enabled
_tracing_state = torch._C._get_tracing_state
_inference_mode_enabled = torch.is_inference_mode_enabled
_bump_version = torch.autograd.graph.increment_version
_has_storage = getattr(torch._C, "_has_storage", lambda t: t.layout == torch.strided)


def plain_eager(x: Tensor) -> bool:
    """A plain tensor, not under ``torch.compile`` or ``torch.jit.trace`` and no ``TorchFunctionMode``
    watching.

    Only then may an op skip its ``torch.library`` custom op (whose Python dispatch costs
    ~0.1 ms a call): tracers, compilers, function modes (``regulab doctor`` uses one) and
    ``torch.func`` transforms and forward-mode AD (:mod:`._functorch`) must see the op. (A
    kernel writing memory directly is invisible to ``torch.jit.trace``: the trace would replay
    the output's allocation alone.)
    """
    return (type(x) is torch.Tensor and not _is_compiling() and not _function_mode_enabled()
            and not needs_twin() and _tracing_state() is None)


def plain_gradient(g: Tensor) -> bool:
    """A gradient an eager backward may hand its kernel: a plain strided tensor with memory of its own,
    outside any transform (not the sparse gradient of an embedding, not the batched one of
    ``autograd.grad(..., is_grads_batched=True)``, which has no storage)."""
    return (type(g) is torch.Tensor and g.layout == torch.strided and not g.is_nested and _has_storage(g)
            and not needs_twin())


def written_in_place(x: Tensor, where: str) -> None:
    """What torch does for an in-place op, for a kernel about to write ``x`` through its address:
    refuse an inference tensor outside ``torch.inference_mode``, and bump ``x``'s version counter
    (shared with its views), so that a backward through a graph that saved ``x`` raises instead of
    using the new values."""
    if x.is_inference() and not _inference_mode_enabled():
        raise RuntimeError(f"{where}: in place on an inference tensor outside torch.inference_mode() (torch "
                           "refuses it too); clone it first, or run under inference_mode")
    _bump_version(x)
