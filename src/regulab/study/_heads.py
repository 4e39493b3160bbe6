"""The stacked trainer's loss heads as numba kernels: softmax cross-entropy per member.

Logits arrive class-major, ``(M, C, b)`` with ``b`` contiguous (the stacked MLP computes
them so), and every loop below runs over ``b``: it vectorises. As torch ops a head is
~10 small ops on ~24k elements each step, whose dispatch and passes cost more than the
arithmetic; here it is one pass per member, in L1.

* :func:`train_head`: per-member mean cross-entropy against label-smoothed one-hot targets
  (``(1 − ε)·onehot(y) + ε/C``, the convention of
  :func:`regulab.regularizers.label_smoothing_cross_entropy`) and its gradient
  ``(softmax − target)/b``.
* :func:`eval_head`: per-member summed cross-entropy and count of correct predictions
  (torch.argmax's: the first maximum; a NaN counts as a maximum, the first NaN wins).

``exp`` and ``log`` are float32 polynomials (Cephes ``expf``, within 1.5 ulp on [−87, 0];
the atanh series of :mod:`regulab.ops._kernels_family`, within 1 ulp (or 2^-23 below 1)
on the sums of exps, [1, C]; both tested): libm's scalar calls would not vectorise, and torch's ops
on these (M, C, b) shapes cost more in dispatch than in arithmetic (the kernel heads made
a training epoch of the standard study ~10% faster). A NaN or +inf logit makes its
sample's loss NaN, as torch's ops do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import float32, int32, njit, uint32

from .._numba_cache import cached_njit
from ..ops._kernels import KERNEL_SOURCES, drop_stale_caches
from ..ops._kernels_family import _bits_from_f32, _f32_from_bits, _fma, ln_bits

drop_stale_caches(Path(__file__).parent / "__pycache__", [*KERNEL_SOURCES, Path(__file__)])

__all__ = ["train_head", "eval_head", "exp_nonpos", "log_pos"]

F = np.float32
_ONE, _ZERO, _HALF = F(1.0), F(0.0), F(0.5)
_LOG2E = F(1.4426950408889634)
_LN2_HI, _LN2_LO = F(-0.693359375), F(2.12194440e-4)  # −ln 2 in two parts (Cephes): n·hi is exact
_EXP_MIN = F(-87.0)  # below, exp(x) < 2^-125: 0 beside the maximum term's 1
_NMIN = F(-126.0)
_E = tuple(F(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                          1.6666665459e-1, 5.0000001201e-1))
_E6, _E5, _E4, _E3, _E2, _E1 = _E
_BIAS = int32(127)


@njit(inline="always", error_model="numpy")
def exp_nonpos(x):
    """exp(x) for float32 x <= 0 (or NaN: NaN); 0 below −87."""
    t = _fma(x, _LOG2E, _HALF)
    n = np.floor(t)
    n = n if n > _NMIN else _NMIN  # also NaN → −126: a valid exponent, the NaN stays in r
    r = _fma(n, _LN2_HI, x)
    r = _fma(n, _LN2_LO, r)
    p = _fma(_fma(_fma(_fma(_fma(_E6, r, _E5), r, _E4), r, _E3), r, _E2), r, _E1)
    p = _fma(p, r * r, r) + _ONE
    scale = _f32_from_bits(uint32(uint32(int32(int32(n) + _BIAS)) << uint32(23)))
    return p * scale if x >= _EXP_MIN or x != x else _ZERO


@njit(inline="always", error_model="numpy")
def log_pos(s):
    """ln s for a positive normal float32 s (NaN and inf pass through)."""
    out = ln_bits(_bits_from_f32(s), _BIAS)
    return out if s < np.float32(np.inf) else s  # NaN, inf


@njit(inline="always", error_model="numpy")
def _scan(x, y, mx, xy, xs):
    """mx[j] = max_c x[c, j] (NaN-blind: a NaN reaches the sum of exps), xy[j] = x[y[j], j] (0 for an
    out-of-range label) and xs[j] = Σ_c x[c, j], in one pass."""
    C, b = x.shape
    for j in range(b):
        v = x[0, j]
        mx[j] = v
        xs[j] = v
        xy[j] = v if y[j] == 0 else _ZERO
    for c in range(1, C):
        for j in range(b):
            v = x[c, j]
            mx[j] = v if v > mx[j] else mx[j]
            xs[j] += v
            xy[j] += v if y[j] == c else _ZERO


@njit(inline="always", error_model="numpy")
def _exps(x, mx, e, s):
    """e[c, j] = exp(x[c, j] − mx[j]) and s[j] = Σ_c e[c, j]."""
    C, b = x.shape
    for j in range(b):
        s[j] = _ZERO
    for c in range(C):
        for j in range(b):
            v = exp_nonpos(x[c, j] - mx[j])
            e[c, j] = v
            s[j] += v


@njit(inline="always")
def _sum(v):
    """Σ v in float64, in order (a loop of its own: an ordered reduction would keep the loop
    that computes the terms from vectorising)."""
    acc = 0.0
    for j in range(v.size):
        acc += v[j]
    return acc


@cached_njit(error_model="numpy")
def _train(logits, y, eps, loss, grad):
    M, C, b = logits.shape
    mx, s, xy, xs = np.empty(b, np.float32), np.empty(b, np.float32), np.empty(b, np.float32), np.empty(b, np.float32)
    inv_b = _ONE / float32(b)
    for m in range(M):
        x, g, ym = logits[m], grad[m], y[m]
        _scan(x, ym, mx, xy, xs)
        _exps(x, mx, g, s)
        e = eps[m]
        off = e / float32(C)
        on = _ONE - e + off
        if e == _ZERO:  # lse − x_y (finite beside a −inf logit, as F.cross_entropy)
            for j in range(b):
                xy[j] = log_pos(s[j]) + mx[j] - xy[j]
                s[j] = inv_b / s[j]
        else:  # lse − Σ_c t_c·x_c, t = (1 − ε)·onehot + ε/C
            for j in range(b):
                xy[j] = log_pos(s[j]) + mx[j] - (_ONE - e) * xy[j] - off * xs[j]
                s[j] = inv_b / s[j]
        loss[m] = float32(_sum(xy)) * inv_b
        on_b, off_b = on * inv_b, off * inv_b
        for c in range(C):  # (softmax − t)/b
            for j in range(b):
                g[c, j] = g[c, j] * s[j] - (on_b if ym[j] == c else off_b)


@cached_njit(error_model="numpy")
def _eval(logits, y, scratch, loss, correct):
    M, C, n = logits.shape
    mx, s, xy, xs = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
    arg = np.empty(n, np.int32)
    for m in range(M):
        x = logits[m]
        _scan(x, y, mx, xy, xs)
        _exps(x, mx, scratch, s)
        # torch.argmax: the first maximum; a NaN beats all but an earlier NaN. (xs, the class sum,
        # serves only the smoothed training loss: its buffer holds the running maximum here.)
        for j in range(n):
            arg[j] = int32(0)
            xs[j] = x[0, j]
        for c in range(1, C):
            for j in range(n):
                v, bv = x[c, j], xs[j]
                take = (v > bv) | ((v != v) & (bv == bv))
                xs[j] = v if take else bv
                arg[j] = int32(c) if take else arg[j]
        hits = 0
        for j in range(n):
            xy[j] = log_pos(s[j]) + mx[j] - xy[j]
            hits += 1 if arg[j] == y[j] else 0
        loss[m] += float32(_sum(xy))
        correct[m] += float32(hits)


def train_head(logits: np.ndarray, y: np.ndarray, eps: np.ndarray, loss: np.ndarray, grad: np.ndarray) -> None:
    """float32 ``logits`` (M, C, b) C-contiguous, int32 labels ``y`` (M, b), float32 ``eps`` (M,):
    writes the mean loss per member into ``loss`` (M,) and its gradient into ``grad`` (M, C, b)."""
    _train(logits, y, eps, loss, grad)


def eval_head(logits: np.ndarray, y: np.ndarray, loss: np.ndarray, correct: np.ndarray) -> None:
    """float32 ``logits`` (M, C, n) C-contiguous, labels ``y`` (n,) shared by every member: adds
    each member's summed cross-entropy to ``loss`` (M,) and its count of correct argmaxes to
    ``correct`` (M,)."""
    _eval(logits, y, np.empty(logits.shape[1:], np.float32), loss, correct)
