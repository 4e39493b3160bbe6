"""Multiplicative Gaussian dropout and additive Gaussian noise on counter-based normals.

Srivastava et al. 2014 §10 (Gaussian dropout): ``y = x·r``, ``r ~ N(1, σ²)``,
``σ² = p/(1−p)`` with ``p`` the drop probability; no rescaling at inference.
Additive noise (Keras ``GaussianNoise``): ``y = x + σ·z``. Both return the input
itself in eval.

Normals: paired Box-Muller on the counter-based bits (layout and float32
polynomials in :mod:`._kernels_family`); the torch reference below performs the
same float32 operations in the same order (each fused multiply-add emulated
exactly), so kernel and reference agree bit for bit. The noise is computed in
float32 for every input dtype; the uniforms sit on a 2^-24 grid, so
``|z| <= 5.77`` (as torch's own ``randn``, whose uniforms have 24 bits too).
Backward redraws the noise from the seed.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from .._validate import NONNEG, PROB_OPEN_RIGHT, all_within, check, check_p, register
from ..errors import format_error
from . import _kernels_family as K
from ._kernels import BLOCK, dense, laid_out_like, layout_of, supported
from ._rng import bits_ref, draw_seed, draw_seed_int, mix_seed
from ._functorch import register_autograd_and_twin
from ._eager import written_in_place
from .shared import eager_plain

__all__ = ["gaussian_dropout", "gaussian_noise", "normal_ref", "gaussian_apply_ref", "add_member_noise_"]

register("gaussian_dropout", "p", PROB_OPEN_RIGHT)
register("gaussian_noise", "sigma", NONNEG)
_REF_CHUNK = 1 << 22  # a multiple of BLOCK
_f = lambda c: float(c)  # noqa: E731  (the float32 constants, as exact Python floats)


def _fma_ref(a, b, c) -> Tensor:
    """The kernel's float32 ``fma(a, b, c)``: a·b + c rounded once, emulated exactly.

    a·b is exact in float64 (24 + 24 bits); the float64 sum is made *round-to-odd* (its exact
    error, from TwoSum, moves an even result to the odd neighbour on the error's side), and a
    round-to-odd float64 rounds to float32 as the exact value would (53 >= 24 + 2 bits): no
    double rounding.
    """
    a, b, c = (torch.as_tensor(v).double() for v in (a, b, c))
    p = a * b
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(torch.int64) & 1) == 0
    odd = torch.nextafter(s, torch.where(err > 0, math.inf, -math.inf))
    return torch.where((err != 0) & even, odd, s).float()


def _radius_ref(b: Tensor) -> Tensor:
    v = 1 - (b >> 8).to(torch.int32).to(torch.float32) * _f(K._GRID)  # exact: an integer times 2^-24
    vi = v.view(torch.int32)
    e = (vi >> 23) - 127
    m = ((vi & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # [1, 2)
    big = m > _f(K._SQRT2)
    m = torch.where(big, m * 0.5, m)  # [√½, √2)
    e = torch.where(big, e + 1, e)
    s = (m - 1) / (m + 1)
    s2 = s * s
    poly = _f(K._L9)
    for c in (K._L7, K._L5, K._L3, 1.0):
        poly = _fma_ref(poly, s2, _f(c))
    lnv = _fma_ref(e.to(torch.float32), _f(K._LN2), (s + s) * poly)
    # torch.sqrt on CPU is not correctly rounded; float64 sqrt then rounding is (53 >= 2·24 + 2)
    return torch.sqrt((0 - (lnv + lnv)).double()).float()


def _sincos_ref(b: Tensor) -> tuple[Tensor, Tensor]:
    w = b >> 8
    q = w >> 22
    y = ((w & 0x3FFFFF) - (1 << 21)).to(torch.int32).to(torch.float32) * _f(K._QSTEP)  # [−π/4, π/4)
    y2 = y * y
    s = _fma_ref(_fma_ref(_f(K._S7), y2, _f(K._S5)), y2, _f(K._S3))
    s = _fma_ref(s, y2 * y, y)
    c = _fma_ref(_fma_ref(_f(K._C8), y2, _f(K._C6)), y2, _f(K._C4))
    c = _fma_ref(c, y2 * y2, _fma_ref(-0.5, y2, 1.0))
    odd = (q & 1) == 1
    c0, s0 = torch.where(odd, s, c), torch.where(odd, c, s)
    # negation flips the sign bit exactly, as the kernel's xor
    return torch.where(((q + 1) & 2) != 0, -c0, c0), torch.where((q & 2) != 0, -s0, s0)


def normal_ref(seed: int, start: int, count: int, sigma: float = 1.0, device=None) -> Tensor:
    """σ·z (float32) for counters ``start .. start+count−1``; ``start`` must be a multiple of BLOCK."""
    n_chunks = -(-count // BLOCK)
    bits = bits_ref(seed, start, n_chunks * BLOCK, device=device).view(n_chunks, 2, K.HALF)  # (chunks, 2, HALF)
    r = _radius_ref(bits[:, 0])
    c, s = _sincos_ref(bits[:, 1])
    sig = torch.tensor(sigma, dtype=torch.float32)
    z = torch.stack([sig * (r * c), sig * (r * s)], dim=1)  # (chunks, 2, HALF): cos half, then sin half
    return z.view(-1)[:count]


def _rows(sigma, numel: int, device) -> tuple[Tensor, int]:
    """σ as a float32 (M,) tensor on ``device`` and the row length numel // M (x viewed as (M, -1))."""
    sig = torch.as_tensor(sigma, dtype=torch.float32).detach().reshape(-1).to(device)  # (M,)
    return sig, max(1, numel // sig.numel())


def gaussian_apply_ref(x: Tensor, seed: int, sigma, additive: bool) -> Tensor:
    """Torch reference: ``x + σz`` or ``x·(1 + σz)`` with the kernel's normals.

    ``sigma`` is a number or an (M,) tensor, one σ per row of ``x`` viewed as (M, -1).
    """
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    sig, row = _rows(sigma, flat.numel(), x.device)
    for c0 in range(0, flat.numel(), _REF_CHUNK):
        c1 = min(flat.numel(), c0 + _REF_CHUNK)
        m = torch.arange(c0, c1, device=x.device) // row  # member of each element
        rc = normal_ref(seed, c0, c1 - c0, 1.0, device=x.device)  # 1·v == v: r·c as the kernel has it
        if additive:
            out[c0:c1] = flat[c0:c1] + (sig[m] * rc).to(x.dtype)
        else:
            out[c0:c1] = flat[c0:c1] * _fma_ref(sig[m], rc, 1.0).to(x.dtype)
    return out.view(x.shape)


@functools.lru_cache(maxsize=256)
def _sigma_array(sigma: float) -> np.ndarray:
    """The one-member σ array of a float σ, rounded to float32 as ``torch.as_tensor`` does (cached: a
    layer calls with the same σ every step)."""
    a = np.array([sigma], dtype=np.float32)
    a.setflags(write=False)
    return a


def _run(x: Tensor, seed: int, sigma: float, additive: bool, member_sigma: Tensor | None) -> Tensor:
    xc = dense(x)
    out = torch.empty_like(xc)
    if supported(xc):
        k0, k1 = mix_seed(seed)
        sig = _sigma_array(sigma) if member_sigma is None else _rows(member_sigma, xc.numel(), "cpu")[0].numpy()
        K.normal_apply(xc, out, k0, k1, sig, additive)
    else:
        out.copy_(gaussian_apply_ref(xc, seed, sigma if member_sigma is None else member_sigma, additive))
    return laid_out_like(x, out)


@torch.library.custom_op("regulab::gaussian_apply", mutates_args=())
def gaussian_apply(x: Tensor, seed: Tensor, sigma: float, additive: bool,
                   member_sigma: Tensor | None = None) -> Tensor:
    """``x + σz`` (additive) or ``x·(1 + σz)`` with seeded normals ``z``.

    With ``member_sigma`` (an (M,) tensor) row ``m`` of ``x`` viewed as (M, -1) uses
    ``member_sigma[m]`` and ``sigma`` is ignored.
    """
    return _run(x, int(seed), sigma, additive, member_sigma)


def _apply(x: Tensor, generator: torch.Generator | None, sigma: float, additive: bool,
           member_sigma: Tensor | None = None) -> Tensor:
    """One seed drawn from ``generator``; the body directly in plain eager mode (the seed as a
    Python int), the custom op (its twin under transforms) otherwise."""
    if eager_plain(x):
        return _run(x, draw_seed_int(generator), sigma, additive, member_sigma)
    return _gaussian_twin.call(x, draw_seed(generator), sigma, additive, member_sigma)


@gaussian_apply.register_fake
def _(x, seed, sigma, additive, member_sigma=None):
    return layout_of(x)


def _setup_context(ctx, inputs, output):
    ctx.sigma, ctx.additive, ctx.members = inputs[2], inputs[3], inputs[4] is not None
    # the 0-dim seed (and the (M,) σ, if any): never the noise
    ctx.save_for_backward(inputs[1], *([inputs[4]] if ctx.members else []))


def _backward(ctx, grad):
    if ctx.additive:
        return grad, None, None, None, None
    seed, *member_sigma = ctx.saved_tensors
    # linear in x: the same noise
    return _gaussian_twin.call(grad, seed, ctx.sigma, False, member_sigma[0] if ctx.members else None), None, None, None, None


_gaussian_twin = register_autograd_and_twin(gaussian_apply, _setup_context, _backward)


def gaussian_dropout(x: Tensor, p: float = 0.5, training: bool = True, *,
                     generator: torch.Generator | None = None) -> Tensor:
    """Multiplicative Gaussian noise with the variance of dropout at rate ``p``.

    Srivastava et al. 2014, §10. Formula: ``y = x·(1 + σz)``, ``z ~ N(0, 1)``,
    ``σ = sqrt(p/(1−p))``; ``E[y] = x``. ``y`` is ``x`` itself in eval, for ``p == 0``
    or empty ``x``.

    Args:
        x: input of any shape, dtype and device.
        p: drop probability in [0, 1) that sets σ.
        training: apply the noise (True) or return ``x``.
        generator: torch generator the per-call seed is drawn from.

    Shape:
        Input (*), output (*), same shape.

    Returns:
        A new tensor in training, else ``x``.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.gaussian_dropout(torch.ones(100_000), 0.5)  # σ = 1
        >>> abs(float(y.mean()) - 1) < 0.02 and abs(float(y.std()) - 1) < 0.02
        True
    """
    p = check_p("gaussian_dropout", p, PROB_OPEN_RIGHT)
    if not training or x.numel() == 0 or p == 0.0:
        return x
    return _apply(x, generator, math.sqrt(p / (1 - p)), False)


def add_member_noise_(x: Tensor, sigma: np.ndarray, generator: torch.Generator | None = None) -> Tensor:
    """In place: ``x[m] += σ[m]·z`` for ``x`` (M, ...) and float32 ``sigma`` (M,), validated by the caller.

    The draws of ``gaussian_noise(x, torch.from_numpy(sigma), generator=generator)`` (one seed,
    the same normals), without its checks and, on the kernel's path (contiguous CPU float),
    without its new tensor: the stacked trainer calls it on every step.
    """
    if not (supported(x) and x.is_contiguous() and not x.is_neg()):
        return x.copy_(gaussian_noise(x, torch.from_numpy(sigma), generator=generator))
    written_in_place(x, "add_member_noise_")
    k0, k1 = mix_seed(draw_seed_int(generator))
    K.normal_apply(x, x, k0, k1, sigma, True)
    return x


def _member_sigma(where: str, sigma: Tensor, x: Tensor) -> Tensor:
    """Validate an (M,) σ tensor (floating, non-empty, every value >= 0) against ``x`` of shape (M, ...)."""
    ok = sigma.ndim == 1 and sigma.numel() > 0 and sigma.is_floating_point() and all_within(sigma, NONNEG)
    if not ok:
        shown = sigma if sigma.numel() <= 8 else f"tensor of shape {tuple(sigma.shape)}"
        raise ValueError(format_error(where, "sigma", f"{NONNEG} (or a 1-D tensor of them)", shown))
    m = sigma.shape[0]
    if x.ndim == 0 or x.shape[0] != m:
        raise ValueError(format_error(where, "input", f"stacked on a leading member dim of size {m} to match "
                                      f"sigma of shape ({m},)", f"shape {tuple(x.shape)}"))
    return sigma.detach().to("cpu", torch.float32)


def gaussian_noise(x: Tensor, sigma: float | Tensor = 0.1, training: bool = True, *,
                   generator: torch.Generator | None = None) -> Tensor:
    """Additive Gaussian noise ``y = x + σz`` in training (Keras ``GaussianNoise``).

    Formula: ``y = x + σz``, ``z ~ N(0, 1)``; ``y`` is ``x`` itself in eval, for ``σ == 0``
    or empty ``x``. The gradient is the identity (σ is a constant: no gradient reaches it).
    Bishop 1995: training with input noise is close to Tikhonov regularisation.

    Args:
        x: input of any shape, dtype and device; ``(M, B, ...)`` when ``sigma`` is per member.
        sigma: standard deviation σ >= 0, or an ``(M,)`` tensor: one σ per member of
            inputs stacked on a leading member dim (a stacked study's arms).
        training: apply the noise (True) or return ``x``.
        generator: torch generator the per-call seed is drawn from (same seed, same noise).

    Shape:
        Input (*), output (*), same shape.

    Returns:
        A new tensor in training, else ``x``.

    Examples:
        >>> import torch, regulab
        >>> y = regulab.ops.gaussian_noise(torch.zeros(100_000), sigma=0.5)
        >>> abs(float(y.mean())) < 0.01 and abs(float(y.std()) - 0.5) < 0.01
        True
        >>> y = regulab.ops.gaussian_noise(torch.zeros(2, 50_000), torch.tensor([0.0, 2.0]))  # (M, B)
        >>> float(y[0].abs().max()), round(float(y[1].std()), 1)
        (0.0, 2.0)
    """
    if isinstance(sigma, Tensor) and sigma.ndim >= 1:
        member_sigma = _member_sigma("gaussian_noise", sigma, x)
        if not training or x.numel() == 0 or not bool(member_sigma.any()):
            return x
        return _apply(x, generator, 0.0, True, member_sigma)
    if isinstance(sigma, Tensor) and sigma.ndim == 0:
        sigma = sigma.item()
    sigma = float(check("gaussian_noise", "sigma", sigma, NONNEG))
    if not training or x.numel() == 0 or sigma == 0.0:
        return x
    return _apply(x, generator, sigma, True)
