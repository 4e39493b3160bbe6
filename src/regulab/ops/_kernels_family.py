"""numba CPU kernels for the dropout family, on the counter-based bits of :mod:`._rng`.

Same style as :mod:`._kernels`: uint32 lanes with explicit casts, one pass over
memory, parallel over blocks of ``BLOCK`` elements. Every kernel has a torch
reference (next to its op) that uses the same bits and the same float32
operations in the same order, and tests compare the two bit for bit.

Normal variates (Box-Muller) come in pairs: within each aligned chunk of
``BLOCK`` counters, counters ``c + j`` and ``c + HALF + j`` (``j < HALF``) give the
two uniforms ``u1, u2`` of one pair; element ``c + j`` gets ``r·cos θ`` and
element ``c + HALF + j`` gets ``r·sin θ`` (``r = sqrt(−2 ln(1 − u1))``,
``θ = 2π(u2 − ½)``). So each element costs one hash, half a log and half a
sqrt. ``log``, ``sin`` and ``cos`` are float32 polynomials (below) so that the
loop vectorises; the uniforms sit on a 2^-24 grid, so ``|z| <= 5.77``.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import float32, int32, njit, prange, uint32
from numba.core import types
from numba.extending import intrinsic

from ._kernels import BLOCK, PARALLEL_MIN, bits_at, block_keys, set_threads
from ._rng import MASK32

__all__ = ["alpha_affine", "normal_apply", "keep_mask", "uniform", "HALF"]

HALF = BLOCK // 2  # the two halves of a Box-Muller chunk

F = np.float32
# float32 constants (globals of type np.float32 stay float32 inside numba)
_ONE, _TWO, _HALF_F, _ZERO = F(1.0), F(2.0), F(0.5), F(0.0)
_GRID, _GRID2 = F(2.0**-24), F(2.0**-23)
_LN2 = F(np.log(2.0))
_SQRT2 = F(np.sqrt(2.0))
_PI = F(np.pi)
_M2LN = F(-2.0)
# ln m = 2s·(1 + s²/3 + s⁴/5 + s⁶/7 + s⁸/9), s = (m−1)/(m+1), |s| <= 0.1716
_L = tuple(F(1.0 / k) for k in (9, 7, 5, 3))
# Taylor coefficients on [−π/2, π/2]; truncation error < 6e-8
_S = tuple(F(c) for c in (-1 / 39916800, 1 / 362880, -1 / 5040, 1 / 120, -1 / 6))
_C = tuple(F(c) for c in (1 / 479001600, -1 / 3628800, 1 / 40320, -1 / 720, 1 / 24, -1 / 2))
_MANT, _ONEBITS, _EXPBIAS = np.uint32(0x7FFFFF), np.uint32(0x3F800000), int32(127)
_L9, _L7, _L5, _L3 = _L
_S11, _S9, _S7, _S5, _S3 = _S
_C12, _C10, _C8, _C6, _C4, _C2 = _C


@intrinsic
def _f32_from_bits(typingctx, v):
    """Reinterpret a uint32 as float32 (LLVM bitcast; vectorises)."""
    if v != types.uint32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def _bits_from_f32(typingctx, v):
    """Reinterpret a float32 as uint32."""
    if v != types.float32:
        return None

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@njit(inline="always", error_model="numpy")
def _unit(b):
    """u = (b >> 8)·2^-24 in [0, 1), exact in float32."""
    return float32(int32(b >> uint32(8))) * _GRID


@njit(inline="always", error_model="numpy")
def _radius(b):
    """sqrt(−2 ln v), v = 1 − u in [2^-24, 1]; ln via exponent + mantissa polynomial."""
    v = _ONE - _unit(b)
    vi = _bits_from_f32(v)
    e = int32(vi >> uint32(23)) - _EXPBIAS
    m = _f32_from_bits(uint32(uint32(vi & _MANT) | _ONEBITS))  # [1, 2)
    big = m > _SQRT2
    m = m * _HALF_F if big else m  # [√½, √2)
    e = e + int32(1) if big else e
    s = (m - _ONE) / (m + _ONE)
    s2 = s * s
    poly = (((_L9 * s2 + _L7) * s2 + _L5) * s2 + _L3) * s2 + _ONE
    lnv = float32(e) * _LN2 + _TWO * s * poly
    return np.sqrt(_M2LN * lnv)


@njit(inline="always", error_model="numpy")
def _sincos(b):
    """(cos θ, sin θ) for θ = 2π·(u − ½) via y = θ/2 in [−π/2, π/2)."""
    y = (_unit(b) - _HALF_F) * _PI
    y2 = y * y
    s = ((((_S11 * y2 + _S9) * y2 + _S7) * y2 + _S5) * y2 + _S3) * y2 * y + y
    c = (((((_C12 * y2 + _C10) * y2 + _C8) * y2 + _C6) * y2 + _C4) * y2 + _C2) * y2 + _ONE
    return _ONE - _TWO * (s * s), _TWO * (s * c)


@njit(error_model="numpy")
def _normal_chunk(x, out, start, k0, k1, sigma, additive):
    """One aligned chunk of 2·HALF elements (the last one may be short)."""
    off, hk = block_keys(start, k1)
    n = x.size
    if n == BLOCK:
        for j in range(HALF):
            r = _radius(bits_at(j, off, k0, hk))
            c, s = _sincos(bits_at(j + HALF, off, k0, hk))
            z0, z1 = sigma * (r * c), sigma * (r * s)
            if additive:
                out[j] = x[j] + x.dtype.type(z0)
                out[j + HALF] = x[j + HALF] + x.dtype.type(z1)
            else:
                out[j] = x[j] * x.dtype.type(_ONE + z0)
                out[j + HALF] = x[j + HALF] * x.dtype.type(_ONE + z1)
    else:
        for j in range(min(n, HALF)):
            r = _radius(bits_at(j, off, k0, hk))
            c, s = _sincos(bits_at(j + HALF, off, k0, hk))
            z0, z1 = sigma * (r * c), sigma * (r * s)
            out[j] = x[j] + x.dtype.type(z0) if additive else x[j] * x.dtype.type(_ONE + z0)
            if j + HALF < n:
                out[j + HALF] = x[j + HALF] + x.dtype.type(z1) if additive else x[j + HALF] * x.dtype.type(_ONE + z1)


def _normal_apply_py(x, out, k0, k1, sigma, additive):
    nblocks = (x.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, x.size)
        _normal_chunk(x[st:sp], out[st:sp], st, k0, k1, sigma, additive)


@njit(error_model="numpy")
def _alpha_block(x, out, start, k0, k1, t, a, bk, bd):
    off, hk = block_keys(start, k1)
    z = x.dtype.type(0)
    for j in range(x.size):
        keep = bits_at(j, off, k0, hk) >= t
        # x·a + b_keep when kept, x·0 + b_drop when dropped (two roundings, as torch)
        out[j] = x[j] * (a if keep else z) + (bk if keep else bd)


def _alpha_affine_py(x, out, k0, k1, t, a, bk, bd):
    nblocks = (x.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, x.size)  # blocks are aligned, so none crosses a 2^32 boundary
        _alpha_block(x[st:sp], out[st:sp], st, k0, k1, t, a, bk, bd)


def _keep_mask_py(out, k0, k1, t):
    nblocks = (out.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, out.size)
        off, hk = block_keys(st, k1)
        for j in range(sp - st):
            out[st + j] = bits_at(j, off, k0, hk) >= t


def _uniform_py(out, k0, k1):
    nblocks = (out.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, out.size)
        off, hk = block_keys(st, k1)
        for j in range(sp - st):
            # (2k + 1)·2^-24 with k < 2^23: exact in float32, strictly inside (0, 1)
            out[st + j] = float32(int32(bits_at(j, off, k0, hk) >> uint32(9))) * _GRID2 + _GRID


def _pair(py):
    """(parallel, serial) compilations: small tensors run on the calling thread (waking a pool costs more)."""
    return (njit(parallel=True, cache=True, error_model="numpy")(py), njit(cache=True, error_model="numpy")(py))


_KERNELS = {name: _pair(py) for name, py in (("normal", _normal_apply_py), ("alpha", _alpha_affine_py),
                                               ("keep", _keep_mask_py), ("uniform", _uniform_py))}


def _kernel(name: str, n: int):
    if n >= PARALLEL_MIN:
        set_threads()
        return _KERNELS[name][0]
    return _KERNELS[name][1]


def alpha_affine(x: np.ndarray, out: np.ndarray, k0: int, k1: int, t: int, a, bk, bd) -> None:
    """out = x·a + bk where bits >= t else x·0 + bd (flat arrays, ``out`` may alias ``x``)."""
    d = x.dtype.type
    _kernel("alpha", x.size)(x, out, np.uint32(k0), np.uint32(k1), np.uint32(t), d(a), d(bk), d(bd))


def normal_apply(x: np.ndarray, out: np.ndarray, k0: int, k1: int, sigma: float, additive: bool) -> None:
    """out = x + σz (additive) or x·(1 + σz), z the paired Box-Muller normals (flat arrays)."""
    _kernel("normal", x.size)(x, out, np.uint32(k0), np.uint32(k1), np.float32(sigma), bool(additive))


def keep_mask(n: int, k0: int, k1: int, t: int) -> np.ndarray:
    """Boolean array: bits(i) >= t for i < n."""
    out = np.empty(n, dtype=np.bool_)
    _kernel("keep", n)(out, np.uint32(k0), np.uint32(k1), np.uint32(t))
    return out


def uniform(n: int, k0: int, k1: int) -> np.ndarray:
    """float32 uniforms ((bits(i) >> 9) + ½)·2^-23, strictly inside (0, 1)."""
    out = np.empty(n, dtype=np.float32)
    _kernel("uniform", n)(out, np.uint32(k0), np.uint32(k1))
    return out


del MASK32


def _keep_value_py(out, k0, k1, t, s):
    """out[i] = s if bits(i) >= t else 0 (a small shared mask, already scaled)."""
    nblocks = (out.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, out.size)
        off, hk = block_keys(st, k1)
        z = out.dtype.type(0)
        for j in range(sp - st):
            out[st + j] = s if bits_at(j, off, k0, hk) >= t else z


_KERNELS["keep_value"] = _pair(_keep_value_py)


def keep_value(n: int, k0: int, k1: int, t: int, s) -> np.ndarray:
    """Array of ``s`` (kept) or 0 (dropped) for counters 0..n−1, in ``s``'s numpy dtype."""
    out = np.empty(n, dtype=type(s))
    _kernel("keep_value", n)(out, np.uint32(k0), np.uint32(k1), np.uint32(t), s)
    return out
