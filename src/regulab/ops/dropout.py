"""Inverted dropout on counter-based random bits; the mask is never stored.

Srivastava et al. 2014, "Dropout: A Simple Way to Prevent Neural Networks from
Overfitting". In training ``y = x·m/(1−p)`` with ``m ~ Bernoulli(1−p)``; in
eval ``y`` is the input object itself.

The keep decision of element ``i`` is ``bits(seed, i) >= round(p·2^32)``
(:mod:`regulab.ops._rng`). One 64-bit seed is drawn per call from torch's
generator; backward applies the same mask to the gradient by recomputing it
from that seed, so nothing per-element is saved.
"""
from __future__ import annotations

import functools
import numbers

import numpy as np
import torch
from torch import Tensor

from .._validate import PROB, check, check_p, register
from ..errors import format_error
from . import _kernels, _native
from ._eager import plain_eager, plain_gradient, written_in_place
from ._functorch import register_autograd_and_twin, tracks_gradient
from ._rng import bits_ref, draw_seed, draw_seed_int, keep_threshold

__all__ = ["dropout", "masked_scale", "masked_scale_ref"]

register("dropout", "p", PROB)
_REF_CHUNK = 1 << 22  # elements per chunk of the torch reference (bounds its int64 temporaries)


def _scales(p: float, p_member: Tensor | None, dtype: torch.dtype, n: int) -> tuple[np.ndarray, Tensor]:
    """Per-member (uint32 drop thresholds, scales in ``dtype``).

    The scalar scale is computed exactly as torch's eager CPU dropout does
    (``ones.div_(1 − p)`` in the input dtype), so kept values match torch bit for bit.
    """
    if p_member is None:
        return _scalar_scales(p, dtype)
    return member_scales(p_member, dtype)


def member_scales(p_member: Tensor, dtype: torch.dtype) -> tuple[np.ndarray, Tensor]:
    """Per-member (uint32 drop thresholds, scales in ``dtype``) of an (M,) rate tensor, as the kernel uses them."""
    return _member_scales(tuple(p_member.tolist()), dtype)


@functools.lru_cache(maxsize=256)
def _member_scales(rates: tuple[float, ...], dtype: torch.dtype) -> tuple[np.ndarray, Tensor]:
    """Cached per rate vector: a study calls dropout with the same per-member rates every step."""
    pm = torch.tensor(rates, dtype=torch.float64)
    thresh = np.minimum(np.rint(pm.numpy() * 2.0**32), 2**32 - 1).astype(np.uint32)
    scale = torch.where(pm < 1, 1.0 / (1.0 - pm), torch.zeros_like(pm)).to(dtype)
    return thresh, scale


@functools.lru_cache(maxsize=256)
def _scalar_scales(p: float, dtype: torch.dtype) -> tuple[np.ndarray, Tensor]:
    """Cached per (p, dtype): a training loop calls dropout with the same p every step."""
    thresh = np.array([min(keep_threshold(p), 2**32 - 1)], dtype=np.uint32)
    thresh.setflags(write=False)
    return thresh, torch.ones(1, dtype=dtype).div_(1 - p)


def masked_scale_ref(x: Tensor, seed: int, p: float, p_member: Tensor | None = None) -> Tensor:
    """Plain torch reference of the kernel (any device and dtype); returns a new contiguous tensor."""
    thresh, scale = _scales(p, p_member, x.dtype, x.numel())
    members = len(thresh)
    flat = x.contiguous().view(members, -1)  # (M, K)
    out = torch.empty_like(flat)
    k = flat.shape[1]
    for m in range(members):
        s, t = scale[m].to(x.device), int(thresh[m])
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        for c0 in range(0, k, _REF_CHUNK):
            c1 = min(k, c0 + _REF_CHUNK)
            keep = bits_ref(seed, m * k + c0, c1 - c0, device=x.device) >= t
            out[m, c0:c1] = flat[m, c0:c1] * torch.where(keep, s, zero)
    return out.view(x.shape)


@functools.lru_cache(maxsize=256)
def _scalar_kernel_scales(p: float, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray] | None:
    """The kernel's (thresholds, scales) for one rate, or None for a dtype it does not serve."""
    if dtype not in _kernels.NUMBA_DTYPES:
        return None
    thresh, scale = _scalar_scales(p, dtype)
    return thresh, scale.numpy()


def _run(x: Tensor, out: Tensor, seed: int, p: float, p_member: Tensor | None) -> Tensor:
    """Fill contiguous ``out`` (may alias contiguous ``x``) with the masked, scaled ``x``."""
    if _kernels.supported(x):
        if p_member is None:
            thresh, scale = _scalar_kernel_scales(p, x.dtype)
        else:
            thresh, st = member_scales(p_member, x.dtype)
            scale = st.numpy()
        _kernels.masked_scale(x, out, seed, thresh, scale)
    else:
        out.copy_(masked_scale_ref(x, seed, p, p_member))
    return out


def _fresh(x: Tensor, seed: int, p: float, p_member: Tensor | None) -> Tensor:
    """The masked, scaled copy of ``x`` as a new tensor laid out as ``_kernels.layout_of`` says: straight
    into the kernel for a CPU float32/float64 ``x`` with one rate (a training step's call), else
    :func:`_run`. Counters follow ``x``'s logical (row-major) order whatever its strides."""
    xc = _kernels.dense(x)
    scales = _scalar_kernel_scales(p, xc.dtype) if p_member is None and xc.is_cpu else None
    if scales is not None:
        y = _kernels.masked_scale_new(xc, seed, scales[0], scales[1])
    else:
        y = _run(xc, torch.empty_like(xc), seed, p, p_member)
    return _kernels.laid_out_like(x, y)


@torch.library.custom_op("regulab::masked_scale", mutates_args=())
def masked_scale(x: Tensor, seed: Tensor, p: float, p_member: Tensor | None = None) -> Tensor:
    """``x`` times the seeded keep mask times 1/(1−p); linear in ``x``, so it is its own backward."""
    return _fresh(x, int(seed), p, p_member)


@masked_scale.register_fake
def _(x, seed, p, p_member=None):
    return _kernels.layout_of(x)


def _setup_context(ctx, inputs, output):
    _, seed, p, p_member = inputs
    # Only the 0-dim seed (and the tiny per-member rate vector) is saved: no mask.
    ctx.save_for_backward(seed, p_member) if p_member is not None else ctx.save_for_backward(seed)
    ctx.p = p


def _backward(ctx, grad):
    seed, *rest = ctx.saved_tensors
    return _masked_scale_twin.call(grad, seed, ctx.p, rest[0] if rest else None), None, None, None


_masked_scale_twin = register_autograd_and_twin(masked_scale, _setup_context, _backward)


@torch.library.custom_op("regulab::masked_scale_", mutates_args=("x",))
def _masked_scale_(x: Tensor, seed: Tensor, p: float, p_member: Tensor | None = None) -> None:
    if x.is_contiguous() and not x.is_neg():
        _run(x, x, int(seed), p, p_member)
    else:
        xc = _kernels.dense(x)
        x.copy_(_run(xc, torch.empty_like(xc), int(seed), p, p_member).view(x.shape))


class _MaskedScaleFn(torch.autograd.Function):
    """Eager twin of the custom op: same kernel, but the Python custom-op dispatch
    (~0.1 ms a call) is skipped and the seed is kept as a Python int, so autograd
    saves no tensor at all. ``torch.compile`` and tensor subclasses take the custom op."""

    @staticmethod
    def forward(ctx, x, seed: int, p: float, p_member):
        ctx.args = seed, p, p_member
        return _fresh(x, seed, p, p_member)

    @staticmethod
    def backward(ctx, grad):
        if not plain_gradient(grad):  # sparse, batched, ...: times the mask, in torch's own ops
            seed, p, p_member = ctx.args
            return grad * _fresh(torch.ones(grad.shape, dtype=grad.dtype), seed, p, p_member), None, None, None
        if torch.is_grad_enabled():  # create_graph: the gradient must itself be differentiable
            return _MaskedScaleFn.apply(grad, *ctx.args), None, None, None
        return _fresh(grad, *ctx.args), None, None, None


# ``Function.apply`` less its Python wrapper, which only matters under torch.func transforms
# (never here: callers check :func:`plain_eager`) and unwraps dead functorch wrappers (done
# here). Right after a large op each Python call of the wrapper costs microseconds of cache misses.
try:
    _apply_raw = torch._C._FunctionBase.__dict__["apply"].__get__(None, _MaskedScaleFn)
    _unwrap_if_dead = torch._C._functorch.unwrap_if_dead
except (AttributeError, KeyError):  # a torch laid out otherwise: the public apply, which unwraps itself
    _apply_raw, _unwrap_if_dead = _MaskedScaleFn.apply, lambda t: t


def _no_native(x: Tensor, p: float, generator: torch.Generator | None) -> None:
    return None


def _native_first(x: Tensor, p: float, generator: torch.Generator | None) -> Tensor | None:
    """The first eager training call: load (or build) the C++ op, then call it from now on."""
    global _native_dropout
    module = _native.load()
    _native_dropout = module.dropout if module is not None else _no_native
    return _native_dropout(x, p, generator)


# The C++ op (:mod:`._native`): the masked, scaled copy of a CPU float32/float64 tensor with its
# autograd node, or None for any other tensor; bound on first use.
_native_dropout = _native_first


def _apply(x: Tensor, seed: Tensor, p: float, p_member: Tensor | None) -> Tensor:
    """The out-of-place op: the autograd.Function in plain eager mode, the custom op otherwise
    (under torch.compile, tensor subclasses and function modes, which must see the op)."""
    if plain_eager(x):
        return _MaskedScaleFn.apply(x, int(seed), p, p_member)
    return _masked_scale_twin.call(x, seed, p, p_member)


def _nested(x: Tensor, p, training: bool, inplace: bool, generator: torch.Generator | None) -> Tensor:
    """Dropout of a nested tensor, as torch's: of its jagged values buffer, or of each strided component."""
    if isinstance(p, Tensor):
        raise ValueError(format_error("dropout", "p", "a float for a nested tensor", "a tensor of per-member rates"))
    if x.layout == torch.jagged:
        values = x.values()
        out = dropout(values, p, training, inplace, generator=generator)
        if out is values:  # eval, p = 0, in place
            return x
        return torch.nested.nested_tensor_from_jagged(out, x.offsets(), lengths=x.lengths(), jagged_dim=x._ragged_idx)
    parts = x.unbind()
    outs = [dropout(t, p, training, inplace, generator=generator) for t in parts]
    if all(o is t for o, t in zip(outs, parts)):
        return x
    return torch.nested.as_nested_tensor(outs, layout=torch.strided)


def _check_member_p(p: Tensor, x: Tensor) -> Tensor:
    if p.dim() != 1 or x.dim() == 0 or p.shape[0] != x.shape[0]:
        rows = x.shape[0] if x.dim() else 0
        raise ValueError(format_error("dropout", "p", f"a float or a 1-D tensor of x.shape[0]={rows} per-member rates",
                                      f"tensor of shape {tuple(p.shape)}"))
    if p.numel() == 0:
        return p
    rates = p.tolist()
    lo, hi = min(rates), max(rates)
    if not all(0.0 <= r <= 1.0 for r in rates):  # also refuses NaN
        raise ValueError(format_error("dropout", "p", "in [0, 1] for every member", f"values in [{lo}, {hi}]"))
    return p


def dropout(x: Tensor, p: float | Tensor = 0.5, training: bool = True, inplace: bool = False, *,
            generator: torch.Generator | None = None) -> Tensor:
    """Inverted dropout with a seeded, mask-free kernel; a drop-in for ``F.dropout``.

    Formula: ``y = x·m/(1−p)``, ``m ~ Bernoulli(1−p)`` in training; ``y = x`` (the same
    object) when ``training`` is False, ``p == 0`` or ``x`` is empty; ``y = x·0`` when ``p == 1``.

    Args:
        x: input of any shape, stride, floating dtype and device.
        p: drop probability in [0, 1]; or a 1-D tensor with one rate per leading-dim member
            (stacked models: ``x`` of shape (M, ...), ``p`` of shape (M,)).
        training: apply dropout (True) or return ``x`` unchanged.
        inplace: write the result into ``x``.
        generator: the torch generator the per-call seed is drawn from (default: torch's default CPU one).

    Shape:
        Input (*), output (*), same shape.

    Returns:
        The dropped-out tensor (``x`` itself when nothing is dropped or ``inplace``).

    Examples:
        >>> import torch, regulab
        >>> _ = torch.manual_seed(0)
        >>> y = regulab.ops.dropout(torch.ones(8), p=0.5)
        >>> sorted(set(y.tolist())) == [0.0, 2.0]
        True
        >>> x = torch.ones(3)
        >>> regulab.ops.dropout(x, 0.5, training=False) is x
        True
    """
    if x.is_nested:
        return _nested(x, p, training, inplace, generator)
    p_member = None
    if type(p) is float and 0.0 < p < 1.0:  # the usual call (a layer's rate): valid, nothing special
        if not training or x.numel() == 0:
            return x
        if not inplace and plain_eager(x):  # one C++ call, else the autograd.Function
            x = _unwrap_if_dead(x)
            y = _native_dropout(x, p, generator)
            if y is not None:
                return y
            if x.requires_grad and torch.is_grad_enabled():  # tracks_gradient, as no transform is active
                return _apply_raw(x, draw_seed_int(generator), p, None)
            return _fresh(x, draw_seed_int(generator), p, None)  # nothing to differentiate: no node
    elif isinstance(p, Tensor):
        p_member = _check_member_p(p, x)
        p = 0.0
    elif not isinstance(p, numbers.Real) or isinstance(p, bool):
        check("dropout", "p", p, PROB)
    else:
        p = check_p("dropout", p)
    if not training or x.numel() == 0 or (p_member is None and p == 0.0):
        return x
    if p_member is None and p == 1.0:
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return x.mul_(zero) if inplace else x.mul(zero)
    if not inplace and plain_eager(x):  # the C++ op for one rate, else the autograd.Function
        if p_member is None:
            y = _native_dropout(_unwrap_if_dead(x), p, generator)
            if y is not None:
                return y
        return _MaskedScaleFn.apply(x, draw_seed_int(generator), p, p_member)
    seed = draw_seed(generator)
    if not inplace:
        return _apply(x, seed, p, p_member)
    if tracks_gradient(x):
        return x.copy_(_apply(x, seed, p, p_member))  # autograd sees a copy: no mask kept
    if plain_eager(x):
        if x.is_contiguous() and not x.is_neg():
            written_in_place(x, "dropout")
            _run(x, x, int(seed), p, p_member)
        else:
            x.copy_(_apply(x, seed, p, p_member))
    else:
        _masked_scale_(x, seed, p, p_member)
    return x
