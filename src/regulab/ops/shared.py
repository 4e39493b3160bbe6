"""Shared-mask dropout: one mask value per cell of a smaller ``noise_shape``, broadcast over ``x``.

Keras ``noise_shape`` in one mechanism: the mask is drawn for a shape with 1
where it is shared (e.g. ``(N, C, 1, 1)`` for channel dropout, ``(N, 1, ...)``
for drop-path, ``(1, B, H)`` for locked dropout) and applied with one
broadcast multiply. The keep decision of mask cell ``i`` (row-major in the
small shape) is ``bits(seed, i) >= round(p·2^32)`` as in :func:`regulab.ops.dropout`.
The op is a ``torch.library.custom_op``: backward redraws the small mask from
the saved 0-dim seed, so nothing but the seed is kept for backward.

Modes of the small factor ``A`` (and offset ``B``): ``"scale"`` (A = m/(1−p)),
``"keep"`` (A = m), ``"alpha"`` (A = a·m, B = α′a(m−1) + α′ap, as torch's
alpha dropout), ``"alpha_linear"`` (A only: the gradient of ``"alpha"``).
"""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ._eager import plain_eager, written_in_place
from ._functorch import register_autograd_and_twin, tracks_gradient

from .._validate import PROB, check_p, register
from ..errors import format_error
from ._kernels_family import keep_mask, keep_value, scale_rows
from ._rng import bits_ref, draw_seed, draw_seed_int, keep_threshold, mix_seed

__all__ = ["shared_dropout", "locked_dropout", "embedding_dropout", "shared_scale", "keep_bits",
           "small_factors", "apply_shared", "eager_plain", "ALPHA"]

ALPHA = 1.7580993408473766  # torch's α′ = λ·α of SELU
_NP = {torch.float32: np.float32, torch.float64: np.float64}
_ROW_MIN = 32  # elements per mask cell from which the row kernel beats mask-then-multiply
register("shared_dropout", "p", PROB)
register("locked_dropout", "p", PROB)
register("embedding_dropout", "p", PROB)


def keep_bits(seed: int, p: float, n: int, device) -> Tensor:
    """Bool (n,): cell ``i`` kept iff ``bits(seed, i) >= round(p·2^32)`` (numba on CPU, torch elsewhere)."""
    t = min(keep_threshold(p), 2**32 - 1)
    if torch.device(device).type == "cpu":
        k0, k1 = mix_seed(seed)
        return torch.from_numpy(keep_mask(n, k0, k1, t))
    return bits_ref(seed, 0, n, device=device) >= t


def _on_cpu(device) -> bool:
    return (device.type if isinstance(device, torch.device) else torch.device(device).type) == "cpu"


@functools.lru_cache(maxsize=256)
def _keep_constants(p: float, np_dtype, mode: str):
    """(drop threshold, kept value) for a rate, per dtype: the same for every call of a layer."""
    one = np_dtype(1)
    return min(keep_threshold(p), 2**32 - 1), (one / np_dtype(1 - p) if mode == "scale" else one)


def small_factors(seed: int, p: float, shape: Sequence[int], dtype, device, mode: str):
    """(A, B or None) of shape ``shape``, computed with torch's own float steps for each mode."""
    np_dtype = _NP.get(dtype)
    if mode in ("scale", "keep") and np_dtype is not None and _on_cpu(device):
        # one numba pass; 1/(1 − p) rounded in the dtype is exactly torch's ones.div_(1 − p)
        t, value = _keep_constants(p, np_dtype, mode)
        k0, k1 = mix_seed(seed)
        return torch.from_numpy(keep_value(math.prod(shape), k0, k1, t, value).reshape(shape)), None
    keep = keep_bits(seed, p, math.prod(shape), device).view(tuple(shape))
    if mode == "keep":
        return keep.to(dtype), None
    if mode == "scale":
        return keep.to(dtype).div_(1 - p), None  # the rounding of torch's noise.div_(1 − p)
    a = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    noise = keep.to(dtype)
    b = noise.add(-1).mul_(ALPHA * a).add_(ALPHA * a * p)  # torch's _dropout_impl, step by step
    return noise.mul_(a), (b if mode == "alpha" else None)


def _row_length(x: Tensor, shape: list[int]) -> int:
    """Elements per mask cell when the cells are whole trailing blocks of contiguous ``x`` (noise
    shape = leading sizes of ``x``, then ones: channel dropout, drop-path); 0 otherwise."""
    k = len(shape)
    while k > 0 and shape[k - 1] == 1:
        k -= 1
    if list(x.shape[:k]) != shape[:k] or not x.is_contiguous():
        return 0
    return math.prod(x.shape[k:])


def _apply(x: Tensor, out: Tensor | None, seed: int, p: float, shape: list[int], mode: str) -> Tensor:
    """``x·A (+ B)`` into ``out`` (``x`` itself for in place), or a new tensor when ``out`` is None."""
    if mode in ("scale", "keep") and x.dtype in _NP and x.is_cpu and not x.is_neg():  # kernels read memory
        inner = _row_length(x, shape)
        if inner >= _ROW_MIN:  # one pass, no mask tensor; streaming stores for large outputs
            t, value = _keep_constants(p, _NP[x.dtype], mode)
            k0, k1 = mix_seed(seed)
            out = torch.empty_like(x) if out is None else out
            scale_rows(x, out, k0, k1, t, value, inner)
            return out
    a, b = small_factors(seed, p, shape, x.dtype, x.device, mode)
    # a new output from mul itself, laid out as x (as torch's x·noise): not empty_like + mul(out=)
    out = torch.mul(x, a) if out is None else torch.mul(x, a, out=out)
    return out.add_(b) if b is not None else out


@torch.library.custom_op("regulab::shared_scale", mutates_args=())
def shared_scale(x: Tensor, seed: Tensor, p: float, shape: list[int], mode: str) -> Tensor:
    """``x·A (+ B)`` with the small seeded factors broadcast over ``x``."""
    return _apply(x, None, int(seed), p, shape, mode)


@shared_scale.register_fake
def _(x, seed, p, shape, mode):
    return torch.empty_like(x)


def _setup_context(ctx, inputs, output):
    _, seed, p, shape, mode = inputs
    ctx.save_for_backward(seed)  # only the 0-dim seed: the mask is redrawn in backward
    ctx.p, ctx.shape, ctx.mode = p, shape, mode


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    mode = "alpha_linear" if ctx.mode == "alpha" else ctx.mode
    return _shared_scale_twin.call(grad, seed, ctx.p, ctx.shape, mode), None, None, None, None


_shared_scale_twin = register_autograd_and_twin(shared_scale, _setup_context, _backward)


@torch.library.custom_op("regulab::shared_scale_", mutates_args=("x",))
def _shared_scale_(x: Tensor, seed: Tensor, p: float, shape: list[int], mode: str) -> None:
    _apply(x, x, int(seed), p, shape, mode)


def eager_plain(x: Tensor) -> bool:
    """No autograd and no tracing: the implementation can run without the custom-op dispatch.

    The Python custom-op dispatcher costs ~0.1–0.3 ms per call; when nothing needs a
    graph (no gradient, not under ``torch.compile``, a plain tensor) the op's body runs directly.
    """
    return plain_eager(x) and not (x.requires_grad and torch.is_grad_enabled())  # plain_eager: no transform


def apply_shared(x: Tensor, p: float, shape: Sequence[int], inplace: bool, mode: str,
                 generator: torch.Generator | None) -> Tensor:
    """Special cases first, then one seeded shared-mask op (``p`` already validated, training on)."""
    if x.numel() == 0 or p == 0.0:
        return x
    if p == 1.0:  # torch: input·0 for every mode (alpha included)
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return x.mul_(zero) if inplace else x.mul(zero)
    shape = [int(s) for s in shape]
    if eager_plain(x):  # the same single draw, as a Python int
        if inplace:
            written_in_place(x, "dropout")
        return _apply(x, x if inplace else None, draw_seed_int(generator), p, shape, mode)
    seed = draw_seed(generator)
    op = _shared_scale_twin.call
    if not inplace:
        return op(x, seed, p, shape, mode)
    if tracks_gradient(x):
        return x.copy_(op(x, seed, p, shape, mode))  # autograd sees a copy: no mask kept
    _shared_scale_(x, seed, p, shape, mode)
    return x


def _check_noise_shape(where: str, x: Tensor, noise_shape) -> list[int]:
    want = f"a sequence of {x.dim()} sizes, each 1, None or the input's size (input shape {tuple(x.shape)})"
    if noise_shape is None:
        return list(x.shape)
    if isinstance(noise_shape, (str, bytes)) or not isinstance(noise_shape, Sequence) or len(noise_shape) != x.dim():
        raise ValueError(format_error(where, "noise_shape", want, noise_shape))
    out = []
    for s, d in zip(noise_shape, map(int, x.shape)):  # int: under torch.jit.trace sizes are 0-dim tensors
        s = d if s is None else s
        if not isinstance(s, numbers.Integral) or s not in (1, d):
            raise ValueError(format_error(where, "noise_shape", want, tuple(noise_shape)))
        out.append(int(s))
    return out


def shared_dropout(x: Tensor, p: float = 0.5, noise_shape: Sequence[int | None] | None = None,
                   training: bool = True, inplace: bool = False, *, scale: bool = True,
                   generator: torch.Generator | None = None) -> Tensor:
    """Dropout with a mask shared along the dimensions where ``noise_shape`` is 1 (Keras ``noise_shape``).

    Formula: ``y = x·m/(1−p)`` with ``m ~ Bernoulli(1−p)`` of shape ``noise_shape``
    broadcast over ``x`` (``y = x·m`` when ``scale`` is False); ``y`` is ``x`` itself in
    eval, for ``p == 0`` and for empty ``x``; ``x·0`` for ``p == 1``.

    Args:
        x: input of any shape, dtype and device.
        p: drop probability in [0, 1].
        noise_shape: one entry per dim of ``x``: 1 (shared), ``None`` or ``x``'s size
            (independent). ``None`` (default): one mask value per element.
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        scale: divide kept values by 1−p (inverted dropout).
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (*), output (*), same shape.

    Returns:
        The dropped-out tensor (``x`` itself when nothing is dropped or ``inplace``).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.shared_dropout(torch.ones(2, 3, 4), 0.5, noise_shape=(2, 3, 1))
        >>> bool((y == y[..., :1]).all())  # one value per (row, channel), shared over the last dim
        True
    """
    p = check_p("shared_dropout", p)
    shape = _check_noise_shape("shared_dropout", x, noise_shape)
    if not training:
        return x
    return apply_shared(x, p, shape, inplace, "scale" if scale else "keep", generator)


def locked_dropout(x: Tensor, p: float = 0.5, training: bool = True, batch_first: bool = False, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """Locked (variational) dropout: one mask per sequence and feature, shared over time.

    Gal & Ghahramani 2016, "A Theoretically Grounded Application of Dropout in Recurrent
    Neural Networks"; Merity et al. 2018 (AWD-LSTM ``LockedDropout``).
    Formula: ``y[t] = x[t]·m/(1−p)`` with the same ``m`` for every time step ``t``.

    Args:
        x: (T, B, *) or, with ``batch_first``, (B, T, *); at least 2-D.
        p: drop probability in [0, 1].
        training: apply dropout (True) or return ``x``.
        batch_first: time is dim 1 instead of dim 0.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (T, B, H) or (B, T, H), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.locked_dropout(torch.ones(5, 2, 3), 0.5)
        >>> bool((y == y[0]).all())  # the same mask at every time step
        True
    """
    p = check_p("locked_dropout", p)
    if x.dim() < 2:
        raise ValueError(format_error("locked_dropout", "input", "at least 2-D (time and batch dims)",
                                      f"a {x.dim()}-D tensor"))
    shape = list(x.shape)
    shape[1 if batch_first else 0] = 1  # (1, B, H) or (B, 1, H)
    return x if not training else apply_shared(x, p, shape, False, "scale", generator)


def embedding_dropout(weight: Tensor, p: float = 0.1, training: bool = True, *,
                      generator: torch.Generator | None = None) -> Tensor:
    """Drop whole rows (words) of an embedding matrix: AWD-LSTM's ``embedded_dropout``.

    Merity et al. 2018, "Regularizing and Optimizing LSTM Language Models" (after Gal &
    Ghahramani 2016). Formula: ``W' = W·m/(1−p)``, ``m ~ Bernoulli(1−p)`` of shape (V, 1):
    every occurrence of a dropped word is zero in the whole batch.

    Args:
        weight: the (V, D) embedding matrix.
        p: drop probability of a row in [0, 1].
        training: apply dropout (True) or return ``weight``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (V, D), output (V, D).

    Returns:
        The masked weight (``weight`` itself in eval); look rows up with ``F.embedding``.

    Examples:
        >>> import torch, regulab
        >>> w = regulab.ops.embedding_dropout(torch.ones(6, 4), 0.5)
        >>> bool(((w == 0).all(1) | (w == 2).all(1)).all())
        True
    """
    p = check_p("embedding_dropout", p)
    if weight.dim() != 2:
        raise ValueError(format_error("embedding_dropout", "weight", "a 2-D (V, D) matrix", f"a {weight.dim()}-D tensor"))
    return weight if not training else apply_shared(weight, p, [weight.shape[0], 1], False, "scale", generator)

