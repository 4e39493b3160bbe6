"""Fused elementwise passes of the stacked MLP's hand-written training path (ReLU layers).

Forward, per hidden layer, after ``z = h·Wᵀ``: ``z += b`` (kept for backward),
``out = [h +] relu(z)``, then inverted dropout on the members ``lo:hi`` - one pass
instead of four (bias, activation, skip, dropout). Backward: the dropout mask on
``gh`` (in place: the skip connection needs the masked gradient too),
``gz = gh·[not z <= 0]`` and the bias gradient ``Σ_b gz`` - one pass instead of three.

A stacked step works on (M, B, H) = (24, 100, 100)-sized tensors, where each torch
op costs more in dispatch than in arithmetic; one numba pass saves both.

The dropout mask is that of :func:`regulab.ops.dropout` on ``out[lo:hi]`` with
per-member rates: element ``i`` of the flattened slice uses counter ``i`` and the
keys of the call's seed, so the masks, and backward's regenerated masks, are the
ones the unfused ops draw. ``tests/test_models_stacked.py`` checks fused ==
unfused.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit, prange, uint32

from ..ops._kernels import KERNEL_SOURCES, bits_at, block_keys, drop_stale_caches, parallel_and_serial, pick

drop_stale_caches(Path(__file__).parent / "__pycache__", [*KERNEL_SOURCES, Path(__file__)])

__all__ = ["relu_forward", "relu_backward"]


@njit(inline="always")
def _drop_params(m, lo, hi, row, k1, thresh, scale, zero):
    """(drops?, off, hk, threshold, scale) of member ``m``: its rows start at counter (m − lo)·row."""
    if lo <= m < hi:
        off, hk = block_keys((m - lo) * row, k1)
        return True, off, hk, thresh[m - lo], scale[m - lo]
    off, hk = block_keys(0, k1)
    return False, off, hk, thresh[0], zero


def _relu_forward_py(z, bias, h, skip, out, lo, hi, k0, k1, thresh, scale):
    M, B, H = z.shape
    zero = z.dtype.type(0)
    for m in prange(M):
        drop, off, hk, t, s = _drop_params(m, lo, hi, B * H, k1, thresh, scale, zero)
        for b in range(B):
            zr, orow, hr, br = z[m, b], out[m, b], h[m, b], bias[m]
            base = uint32(off + uint32(b * H))  # the row's counters base + j stay in uint32 lanes
            for j in range(H):
                v = zr[j] + br[j]
                zr[j] = v
                a = v if v > zero or v != v else zero  # relu; NaN stays NaN, as torch.relu
                o = hr[j] + a if skip else a
                if drop:
                    # x·0 (not a literal 0) for dropped elements: NaN/inf as in regulab.ops.dropout
                    o = o * (s if bits_at(j, base, k0, hk) >= t else zero)
                orow[j] = o


def _relu_backward_py(gh, z, gz, gb, lo, hi, k0, k1, thresh, scale):
    M, B, H = gh.shape
    zero = gh.dtype.type(0)
    for m in prange(M):
        drop, off, hk, t, s = _drop_params(m, lo, hi, B * H, k1, thresh, scale, zero)
        acc = gb[m]
        acc[:] = zero
        for b in range(B):
            gr, zr, gzr = gh[m, b], z[m, b], gz[m, b]
            base = uint32(off + uint32(b * H))
            for j in range(H):
                g = gr[j]
                if drop:
                    g = g * (s if bits_at(j, base, k0, hk) >= t else zero)
                    gr[j] = g
                v = zero if zr[j] <= zero else g  # threshold_backward(g, z, 0): a NaN z passes g
                gzr[j] = v
                acc[j] += v


_fwd_par, _fwd_ser = parallel_and_serial(_relu_forward_py)
_bwd_par, _bwd_ser = parallel_and_serial(_relu_backward_py)
_PARALLEL_MIN = 1 << 15  # elements: below, one thread (waking the pool costs more)


def relu_forward(z, bias, h, skip: bool, out, lo: int, hi: int, k0: int, k1: int, thresh, scale) -> None:
    """Numpy views of (M, B, H) ``z`` (updated to z + b), (M, H) ``bias``, ``h`` (read when ``skip``),
    ``out``; dropout on members ``lo:hi`` (``lo == hi``: none) with per-member ``thresh``/``scale``."""
    kernel = pick((_fwd_par, _fwd_ser), z.size, _PARALLEL_MIN)  # threads capped at torch's
    kernel(z, bias, h, skip, out, np.int64(lo), np.int64(hi), np.uint32(k0), np.uint32(k1), thresh, scale)


def relu_backward(gh, z, gz, gb, lo: int, hi: int, k0: int, k1: int, thresh, scale) -> None:
    """``gh`` masked in place on members ``lo:hi``, ``gz = gh·[not z <= 0]``, ``gb = Σ_b gz`` (numpy views)."""
    kernel = pick((_bwd_par, _bwd_ser), gh.size, _PARALLEL_MIN)
    kernel(gh, z, gz, gb, np.int64(lo), np.int64(hi), np.uint32(k0), np.uint32(k1), thresh, scale)
