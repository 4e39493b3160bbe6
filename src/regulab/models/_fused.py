"""Fused elementwise passes of the stacked MLP's hand-written training path (ReLU layers).

Forward, per hidden layer, after ``z = h·Wᵀ``: ``z += b`` (kept for backward),
``out = [h +] relu(z)``, then inverted dropout on the members ``lo:hi`` - one kernel
instead of four ops (bias, activation, skip, dropout). Backward: the dropout mask on
``gh`` (in place: the skip connection needs the masked gradient too),
``gz = gh·[not z <= 0]`` and the bias gradient ``Σ_b gz`` - one kernel instead of three.
Each member's rows are done at once: the mask is a second sweep over them while they are
in cache, the loop of :func:`regulab.ops._kernels.masked_lanes` (a loop that also does
the rest vectorises the hash at half the speed). ``prange`` gives each thread a contiguous
run of members, as torch's ``bmm`` splits its batch: what a thread writes is in its own
core's cache when the adjacent GEMM reads it. (Dealing members out round-robin, to share
the dropout members evenly, made a stacked training epoch ~8% slower.)

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
from numba import prange

from ..ops._kernels import KERNEL_SOURCES, drop_stale_caches, masked_lanes, parallel_and_serial, pick

drop_stale_caches(Path(__file__).parent / "__pycache__", [*KERNEL_SOURCES, Path(__file__)])

__all__ = ["relu_forward", "relu_backward"]


def _relu_forward_py(z, bias, h, skip, out, lo, hi, k0, k1, thresh, scale):
    M, B, H = z.shape
    zero = z.dtype.type(0)
    for m in prange(M):
        for b in range(B):
            zr, orow, hr, br = z[m, b], out[m, b], h[m, b], bias[m]
            for j in range(H):
                v = zr[j] + br[j]
                zr[j] = v
                a = v if v > zero or v != v else zero  # relu; NaN stays NaN, as torch.relu
                orow[j] = hr[j] + a if skip else a
        if lo <= m < hi:  # the member's rows, still in cache, masked in place: its counters from (m − lo)·B·H
            flat = out[m].reshape(B * H)
            masked_lanes(flat, flat, (m - lo) * B * H, k0, k1, thresh[m - lo], scale[m - lo])


def _relu_backward_py(gh, z, gz, gb, lo, hi, k0, k1, thresh, scale):
    M, B, H = gh.shape
    zero = gh.dtype.type(0)
    for m in prange(M):
        if lo <= m < hi:
            flat = gh[m].reshape(B * H)
            masked_lanes(flat, flat, (m - lo) * B * H, k0, k1, thresh[m - lo], scale[m - lo])
        acc = gb[m]
        acc[:] = zero
        for b in range(B):
            gr, zr, gzr = gh[m, b], z[m, b], gz[m, b]
            for j in range(H):
                v = zero if zr[j] <= zero else gr[j]  # threshold_backward(g, z, 0): a NaN z passes g
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
