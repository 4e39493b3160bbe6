"""Alpha dropout for SELU networks: dropped units go to SELU's negative saturation.

Klambauer et al. 2017, "Self-Normalizing Neural Networks". With
``α′ = 1.7580993408473766`` (= λα of SELU), ``a = ((α′²p + 1)(1 − p))^(−1/2)`` and
``b = a·α′·p``: ``y = a·x + b`` where kept, ``y = −a·α′ + b`` where dropped, so a
zero-mean unit-variance input keeps mean 0 and variance 1. The float steps are
those of torch's ``_dropout_impl`` (``noise·a`` and ``(noise − 1)·α′a + α′ap`` in the
input dtype, then ``x·noise + b``), so kept and dropped values match torch bit for bit.

``alpha_dropout`` draws one bit per element in a numba kernel (one pass) on CPU
float32/float64; ``feature_alpha_dropout`` shares one value per (N, C) via the
shared-mask op. Backward redraws the mask from the seed: nothing is stored.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .._validate import PROB, check_p, register
from ._kernels import dense, laid_out_like, layout_of, supported
from ._kernels_family import alpha_affine
from ._rng import bits_ref, draw_seed, draw_seed_int, keep_threshold, mix_seed
from ._eager import written_in_place
from ._functorch import register_autograd_and_twin
from .channel import feature_shape
from .shared import ALPHA, apply_shared, eager_plain

__all__ = ["alpha_dropout", "feature_alpha_dropout", "alpha_affine_ref", "alpha_constants"]

register("alpha_dropout", "p", PROB)
register("feature_alpha_dropout", "p", PROB)
_REF_CHUNK = 1 << 22


@functools.lru_cache(maxsize=256)
def alpha_constants(p: float, dtype: torch.dtype, linear: bool = False) -> tuple[float, float, float]:
    """(a, b_keep, b_drop) rounded to ``dtype`` as torch computes them; ``linear``: the gradient's (a, −0, −0).

    Cached per (p, dtype, linear): a layer calls with the same rate every step, and the torch
    steps that reproduce torch's roundings cost more than the kernel on a small input."""
    noise = torch.tensor([1.0, 0.0], dtype=dtype)  # (kept, dropped), torch's steps below
    av = 1.0 / math.sqrt((ALPHA * ALPHA * p + 1) * (1 - p))
    b = noise.add(-1).mul_(ALPHA * av).add_(ALPHA * av * p)
    a_t = noise.mul_(av)
    if linear:
        return float(a_t[0]), -0.0, -0.0  # x + (−0) == x exactly: the gradient is grad·a or grad·0
    return float(a_t[0]), float(b[0]), float(b[1])


def alpha_affine_ref(x: Tensor, seed: int, p: float, linear: bool = False) -> Tensor:
    """Torch reference of the kernel: ``x·A + B`` with (A, B) = (a, b_keep) or (0, b_drop) per element."""
    a, bk, bd = alpha_constants(p, x.dtype, linear)
    t = min(keep_threshold(p), 2**32 - 1)
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    for c0 in range(0, flat.numel(), _REF_CHUNK):
        c1 = min(flat.numel(), c0 + _REF_CHUNK)
        keep = bits_ref(seed, c0, c1 - c0, device=x.device) >= t
        f = lambda u, v: torch.where(keep, torch.tensor(u, dtype=x.dtype, device=x.device),  # noqa: E731
                                     torch.tensor(v, dtype=x.dtype, device=x.device))
        out[c0:c1] = flat[c0:c1] * f(a, 0.0) + f(bk, bd)
    return out.view(x.shape)


def _run(x: Tensor, out: Tensor, seed: int, p: float, linear: bool) -> Tensor:
    if supported(x):
        k0, k1 = mix_seed(seed)
        a, bk, bd = alpha_constants(p, x.dtype, linear)
        alpha_affine(x, out, k0, k1, min(keep_threshold(p), 2**32 - 1), a, bk, bd)
    else:
        out.copy_(alpha_affine_ref(x, seed, p, linear))
    return out


@torch.library.custom_op("regulab::alpha_affine", mutates_args=())
def alpha_affine_op(x: Tensor, seed: Tensor, p: float, linear: bool) -> Tensor:
    """Per-element seeded alpha dropout (``linear``: its gradient, ``x·a`` or ``x·0``)."""
    xc = dense(x)
    return laid_out_like(x, _run(xc, torch.empty_like(xc), int(seed), p, linear))


@alpha_affine_op.register_fake
def _(x, seed, p, linear):
    return layout_of(x)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])  # the 0-dim seed only
    ctx.p = inputs[2]


def _backward(ctx, grad):
    (seed,) = ctx.saved_tensors
    return _alpha_twin.call(grad, seed, ctx.p, True), None, None, None


_alpha_twin = register_autograd_and_twin(alpha_affine_op, _setup_context, _backward)


def alpha_dropout(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
                  generator: torch.Generator | None = None) -> Tensor:
    """Alpha dropout with a seeded one-pass kernel; a drop-in for ``F.alpha_dropout``.

    Formula: ``y = a·x + b`` where kept, ``y = −a·α′ + b`` where dropped (constants above);
    ``y`` is ``x`` itself in eval, for ``p == 0`` or empty ``x``; ``x·0`` for ``p == 1``.

    Args:
        x: input of any shape, dtype and device.
        p: drop probability in [0, 1].
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (*), output (*), same shape.

    Returns:
        The dropped-out tensor (``x`` itself when nothing is dropped).

    Examples:
        >>> import torch, regulab
        >>> _ = torch.manual_seed(0)
        >>> y = regulab.ops.alpha_dropout(torch.randn(100_000), 0.2)
        >>> abs(float(y.mean())) < 0.02 and abs(float(y.var()) - 1) < 0.02
        True
    """
    p = check_p("alpha_dropout", p)
    if not training or x.numel() == 0 or p == 0.0:
        return x
    if p == 1.0:
        zero = torch.zeros((), dtype=x.dtype, device=x.device)
        return x.mul_(zero) if inplace else x.mul(zero)
    if eager_plain(x):  # no graph needed: skip the custom-op dispatch; the seed as a Python int
        xc = dense(x)  # x itself when contiguous and not a negative view: then in place
        own = inplace and xc is x
        if own:
            written_in_place(x, "alpha_dropout")
        y = _run(xc, xc if own else torch.empty_like(xc), draw_seed_int(generator), p, False)
        if not inplace:
            y = laid_out_like(x, y)
    else:
        y = _alpha_twin.call(x, draw_seed(generator), p, False)
    return x if y is x else (x.copy_(y) if inplace else y)


def feature_alpha_dropout(x: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False, *,
                          generator: torch.Generator | None = None) -> Tensor:
    """Alpha dropout of whole channels (one value per (N, C)); a drop-in for ``F.feature_alpha_dropout``.

    Formula: as :func:`alpha_dropout` with the mask of shape (N, C, 1, ...).

    Args:
        x: (N, C, *), at least 2-D.
        p: drop probability of a channel in [0, 1].
        training: apply dropout (True) or return ``x``.
        inplace: write the result into ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (N, C, *), output the same.

    Returns:
        The dropped-out tensor (``x`` itself in eval).

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.feature_alpha_dropout(torch.zeros(2, 3, 4), 0.5)
        >>> bool((y == y[..., :1]).all())
        True
    """
    p = check_p("feature_alpha_dropout", p)
    shape = feature_shape("feature_alpha_dropout", x.shape)
    return x if not training else apply_shared(x, p, shape, inplace, "alpha", generator)
