"""numba CPU kernels for the dropout family, on the counter-based bits of :mod:`._rng`.

Same style as :mod:`._kernels`: uint32 lanes with explicit casts, one pass over
memory, parallel over blocks of ``BLOCK`` elements. Every kernel has a torch
reference (next to its op) that uses the same bits and the same float32
operations in the same order, and tests compare the two bit for bit.

Normal variates (Box-Muller) come in pairs: within each aligned chunk of
``BLOCK`` counters, counters ``c + j`` and ``c + HALF + j`` (``j < HALF``) give the
two uniforms ``u1, u2`` of one pair; element ``c + j`` gets ``r·cos θ`` and
element ``c + HALF + j`` gets ``r·sin θ`` (``r = sqrt(−2 ln(1 − u1))``,
``θ = 2π(u2 − ⅛)``). So each element costs one hash, half a log and half a
sqrt. ``log``, ``sin`` and ``cos`` are float32 polynomials (below) so that the
loop vectorises, evaluated with fused multiply-adds (``llvm.fma``: one rounding
each; the torch reference emulates them exactly); the uniforms sit on a 2^-24
grid, so ``|z| <= 5.77``.

Speed: the kernel first hashes a tile of pairs into a small buffer, then runs
the math over it. One loop doing both is one ~100-cycle dependency chain per
vector of pairs, and the out-of-order window can't overlap enough of them;
split, each loop has short chains and the core stays busy (1.45 → 1.0 ns per
element and thread here). θ's quadrant comes from the top two bits of ``u2``
and ``sin``/``cos`` are evaluated on [−π/4, π/4] (shorter polynomials). The
math is bound by the two vector multiply pipes: fused multiply-adds, and steps
that need no multiplier (exponent arithmetic, ``s + s``), took ~10% off.
"""
from __future__ import annotations

import numpy as np
import torch
from llvmlite import ir
from numba import float32, int32, njit, prange, uint32, uint64
from numba.core import types
from numba.extending import intrinsic
from torch import Tensor

from ._kernels import (BLOCK, RUN, flat_operands, parallel_and_serial, pick, run_bounds, run_key, run_word, view_at,
                       word_at)
from ._stream import STREAM_MIN_BYTES, scale_stream, stream_fence

__all__ = ["alpha_affine", "normal_apply", "keep_mask", "uniform", "ln_bits", "HALF"]

HALF = BLOCK // 2  # the two halves of a Box-Muller chunk

F = np.float32
# float32 constants (globals of type np.float32 stay float32 inside numba)
_ONE, _ZERO = F(1.0), F(0.0)
_GRID, _GRID2 = F(2.0**-24), F(2.0**-23)
_LN2 = F(np.log(2.0))
_SQRT2 = F(np.sqrt(2.0))
# ln m = 2s·(1 + s²/3 + s⁴/5 + s⁶/7 + s⁸/9), s = (m−1)/(m+1), |s| <= 0.1716
_L = tuple(F(1.0 / k) for k in (9, 7, 5, 3))
# minimax sin/cos on [−π/4, π/4] (Cephes sinf/cosf); |error| < 1e-7 with the quadrant fix-up
_S = tuple(F(c) for c in (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1))
_C = tuple(F(c) for c in (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2))
_QSTEP = F(np.pi / 2 * 2.0**-22)  # ψ = (w mod 2^22 − 2^21)·_QSTEP in [−π/4, π/4)
_H21, _M22 = int32(1 << 21), np.uint32(0x3FFFFF)
_MANT, _ONEBITS, _EXP1 = np.uint32(0x7FFFFF), np.uint32(0x3F800000), np.uint32(1 << 23)
_M24, _EXPBIAS24, _MHALF = np.uint32(1 << 24), int32(127 + 24), F(-0.5)
_L9, _L7, _L5, _L3 = _L
_S7, _S5, _S3 = _S
_C8, _C6, _C4 = _C


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


@intrinsic
def _fma(typingctx, a, b, c):
    """a·b + c rounded once (LLVM's fma: one vfmadd per vector); the references emulate it exactly."""
    if not (a == b == c == types.float32):
        return None

    def codegen(context, builder, sig, args):
        f = ir.FloatType()
        return builder.call(builder.module.declare_intrinsic("llvm.fma", [f], ir.FunctionType(f, [f, f, f])), args)
    return types.float32(types.float32, types.float32, types.float32), codegen


@njit(inline="always", error_model="numpy")
def _radius(b):
    """sqrt(−2 ln v), v = 1 − u in [2^-24, 1]; ln via exponent + mantissa polynomial.

    The multiplier-free steps keep the two vector multiply pipes (the bottleneck) for the
    polynomials: v·2^24 = 2^24 − (b >> 8) is an exact integer-valued float32 (its exponent
    less 24 is v's), m/2 is an exponent decrement, 2s = s + s and −2·ln v = 0 − (ln v + ln v).
    """
    lnv = ln_bits(_bits_from_f32(float32(int32(_M24 - uint32(b >> uint32(8))))), _EXPBIAS24)
    return np.sqrt(_ZERO - (lnv + lnv))


@njit(inline="always", error_model="numpy")
def ln_bits(vi, bias):
    """ln(v·2^(127 − bias)) for the positive normal float32 v whose bits are ``vi``: its exponent,
    plus the atanh series of its mantissa m in [√½, √2) (one division, no multiplier-free tricks)."""
    # int32 − int32 is int64 in numba: cast back, or the vector loop converts through 64-bit lanes
    e = int32(int32(vi >> uint32(23)) - bias)
    mb = uint32(uint32(vi & _MANT) | _ONEBITS)  # m in [1, 2)
    big = _f32_from_bits(mb) > _SQRT2
    m = _f32_from_bits(uint32(mb - _EXP1)) if big else _f32_from_bits(mb)  # [√½, √2)
    e = int32(e + int32(1)) if big else e
    s = (m - _ONE) / (m + _ONE)
    s2 = s * s
    poly = _fma(_fma(_fma(_fma(_L9, s2, _L7), s2, _L5), s2, _L3), s2, _ONE)
    return _fma(float32(e), _LN2, (s + s) * poly)


@njit(inline="always", error_model="numpy")
def _sincos(b):
    """(cos θ, sin θ) for θ = 2π·(u − ⅛) = q·π/2 + ψ, q the top two bits of u's 24, ψ in [−π/4, π/4).

    Branch-free: the quadrant swaps sin/cos (a select) and flips signs (xor of the sign bit).
    """
    w = uint32(b >> uint32(8))
    q = uint32(w >> uint32(22))
    y = float32(int32(int32(w & _M22) - _H21)) * _QSTEP
    y2 = y * y
    s = _fma(_fma(_fma(_S7, y2, _S5), y2, _S3), y2 * y, y)
    c = _fma(_fma(_fma(_C8, y2, _C6), y2, _C4), y2 * y2, _fma(_MHALF, y2, _ONE))
    odd = (q & uint32(1)) != uint32(0)
    c0 = s if odd else c
    s0 = c if odd else s
    cneg = uint32(uint32(uint32(q + uint32(1)) & uint32(2)) << uint32(30))  # q = 1, 2: cos θ < 0
    sneg = uint32(uint32(q & uint32(2)) << uint32(30))  # q = 2, 3: sin θ < 0
    return (_f32_from_bits(uint32(_bits_from_f32(c0) ^ cneg)),
            _f32_from_bits(uint32(_bits_from_f32(s0) ^ sneg)))


TILE = 2048  # pairs per tile (a multiple of RUN): the tile's normals (2·TILE float32, 16 KiB) stay in L1
assert HALF % TILE == 0 and TILE % RUN == 0


@njit(inline="always", error_model="numpy")
def _hash_tile(w, i0, npair, k0, k1):
    """w[t], w[TILE + t] = the words of counters i0 + t and i0 + HALF + t (``i0`` a multiple of RUN).

    Whole runs: one key per run, its words one vectorised round. A short ``npair`` is rounded
    up to whole runs: the words past it are scratch (TILE is a multiple of RUN).
    """
    for c in range(0, npair, RUN):
        key0 = run_key(i0 + c, k0, k1)
        key1 = run_key(i0 + HALF + c, k0, k1)
        for t in range(RUN):
            w[c + t] = run_word(t, key0)
            w[TILE + c + t] = run_word(t, key1)


@njit(error_model="numpy")
def _normals_tile(z, w, i0, k0, k1):
    """z[t] = r·cos θ and z[TILE + t] = r·sin θ for the TILE pairs of counters ``i0 + t`` (and ``+ HALF``).

    Two vectorised loops: the hashes into ``w``, then the math from ``w`` into ``z``. The trip
    count is the constant TILE: with a variable one LLVM cannot rule out that z[t] and
    z[TILE + t] overlap and runs its scalar loop, ~6x slower.
    """
    _hash_tile(w, i0, TILE, k0, k1)
    for t in range(TILE):
        r = _radius(w[t])
        c, s = _sincos(w[TILE + t])
        z[t] = r * c
        z[TILE + t] = r * s


@njit(error_model="numpy")
def _fused_tile(w, x0, x1, o0, o1, i0, k0, k1, sig0, sig1, additive):
    """A full tile whose cos half (x0 → o0) and sin half (x1 → o1) each lie in one member row.

    Hashes into ``w``, then math and apply in one loop: its loads and stores
    overlap the arithmetic (same float32 steps as ``_normals_tile`` + ``_apply_run``).
    """
    _hash_tile(w, i0, TILE, k0, k1)
    d = x0.dtype.type
    if additive:
        for t in range(TILE):
            r = _radius(w[t])
            c, s = _sincos(w[TILE + t])
            o0[t] = x0[t] + d(sig0 * (r * c))
            o1[t] = x1[t] + d(sig1 * (r * s))
    else:
        for t in range(TILE):
            r = _radius(w[t])
            c, s = _sincos(w[TILE + t])
            o0[t] = x0[t] * d(_fma(sig0, r * c, _ONE))
            o1[t] = x1[t] * d(_fma(sig1, r * s, _ONE))


@njit(error_model="numpy")
def _apply_run(x, out, z, sig, additive):
    """out = x + σz or x·(1 + σz) with one σ for the run (the loop vectorises)."""
    if additive:
        for i in range(x.size):
            out[i] = x[i] + x.dtype.type(sig * z[i])
    else:
        for i in range(x.size):
            out[i] = x[i] * x.dtype.type(_fma(sig, z[i], _ONE))


@njit(error_model="numpy")
def _apply_rows(x, out, z, a, b, pos, sigma, row, additive):
    """``_apply_run`` on x[a:b], split where the member row (σ = sigma[(pos + i) // row]) changes."""
    i = a
    while i < b:
        m = (pos + i) // row
        e = min(b, (m + 1) * row - pos)
        _apply_run(x[i:e], out[i:e], z[i - a:], sigma[m], additive)
        i = e


@njit(error_model="numpy")
def _normal_chunk(x, out, start, k0, k1, sigma, row, pos, additive):
    """One aligned chunk of 2·HALF elements (the last one may be short).

    ``start`` is the counter of x[0] (a multiple of BLOCK); ``pos`` its flat position, which picks the
    member σ = sigma[(pos + i) // row] of element i. Tiles whose halves each sit
    in one row take the fused loop; the rest (short chunks, rows shorter than a
    tile) compute the tile's normals first and apply them row by row.
    """
    n = x.size
    w = np.empty(2 * TILE, dtype=np.uint32)
    z = np.empty(2 * TILE, dtype=np.float32)
    for j0 in range(0, min(n, HALF), TILE):
        a, b = pos + j0, pos + j0 + HALF  # flat positions of the tile's first cos / sin element
        m0, m1 = a // row, b // row
        if j0 + HALF + TILE <= n and (a + TILE - 1) // row == m0 and (b + TILE - 1) // row == m1:
            _fused_tile(w, x[j0:j0 + TILE], x[j0 + HALF:j0 + HALF + TILE], out[j0:j0 + TILE],
                        out[j0 + HALF:j0 + HALF + TILE], start + j0, k0, k1, sigma[m0], sigma[m1], additive)
            continue
        _normals_tile(z, w, start + j0, k0, k1)  # (HALF is a multiple of TILE: whole tiles)
        _apply_rows(x, out, z, j0, min(j0 + TILE, n), pos, sigma, row, additive)  # the cos half
        if j0 + HALF < n:
            _apply_rows(x, out, z[TILE:], j0 + HALF, min(j0 + HALF + TILE, n), pos, sigma, row, additive)


def _normal_apply_py(px, pout, n, like, k0, k1, sigma, additive):
    """The ``n`` elements at ``px`` (``like``'s dtype) into ``pout``; ``sigma[m]`` for member row m."""
    x, out = view_at(px, n, like), view_at(pout, n, like)
    row = max(1, n // sigma.size)
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, x.size)
        _normal_chunk(x[st:sp], out[st:sp], st, k0, k1, sigma, row, st, additive)


@njit(inline="always", error_model="numpy")
def _alpha_lanes(x, out, start, k0, k1, t, a, bk, bd):
    z = x.dtype.type(0)
    n = x.size
    head, end = run_bounds(start, n)  # as _kernels.masked_lanes
    for j in range(head):
        keep = word_at(start + j, k0, k1) >= t
        out[j] = x[j] * (a if keep else z) + (bk if keep else bd)
    for c in range(head, end, RUN):
        key = run_key(start + c, k0, k1)
        for l in range(RUN):
            keep = run_word(l, key) >= t
            j = uint64(c + l)  # unsigned: see _kernels.run_bounds
            # x·a + b_keep when kept, x·0 + b_drop when dropped (two roundings, as torch)
            out[j] = x[j] * (a if keep else z) + (bk if keep else bd)
    for j in range(end, n):
        keep = word_at(start + j, k0, k1) >= t
        out[j] = x[j] * (a if keep else z) + (bk if keep else bd)


@njit(error_model="numpy")
def _alpha_block(x, out, start, k0, k1, t, a, bk, bd):
    _alpha_lanes(x, out, start, k0, k1, t, a, bk, bd)


@njit(error_model="numpy")
def _alpha_block_inplace(x, start, k0, k1, t, a, bk, bd):
    # x as both operands inside its own function (see _kernels._fill_inplace): two aliased
    # array arguments send the loop to LLVM's scalar fallback, about 5x slower
    _alpha_lanes(x, x, start, k0, k1, t, a, bk, bd)


def _alpha_affine_py(px, pout, n, k0, k1, t, a, bk, bd):
    """The ``n`` elements at ``px`` (``a``'s dtype) into ``pout`` (in place when they are one address)."""
    x, out = view_at(px, n, a), view_at(pout, n, a)
    inplace = px == pout
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, x.size)
        if inplace:
            _alpha_block_inplace(x[st:sp], st, k0, k1, t, a, bk, bd)
        else:
            _alpha_block(x[st:sp], out[st:sp], st, k0, k1, t, a, bk, bd)


@njit(inline="always")
def _map_words(out, k0, k1, conv, t, s):
    """out[i] = conv(bits(i), t, s) for every i < out.size, in parallel blocks: a run's key once,
    its words one vectorised round (blocks start at multiples of RUN)."""
    nblocks = (out.size + BLOCK - 1) // BLOCK
    for b in prange(nblocks):
        st = b * BLOCK
        sp = min(st + BLOCK, out.size)
        end = st + (sp - st) // RUN * RUN
        for c in range(st, end, RUN):
            key = run_key(c, k0, k1)
            for l in range(RUN):
                out[uint64(c + l)] = conv(run_word(l, key), t, s)  # unsigned: see _kernels.run_bounds
        for j in range(end, sp):
            out[j] = conv(word_at(j, k0, k1), t, s)


@njit(inline="always")
def _keep_of(b, t, s):
    return b >= t


@njit(inline="always")
def _value_of(b, t, s):
    return s if b >= t else s - s  # s - s: the dtype's 0 (s is finite)


@njit(inline="always")
def _uniform_of(b, t, s):
    """(2k + 1)·2^-24 with k = b >> 9 < 2^23: exact in float32, strictly inside (0, 1)."""
    return float32(int32(b >> uint32(9))) * _GRID2 + _GRID


def _keep_mask_py(out, k0, k1, t):
    _map_words(out, k0, k1, _keep_of, t, t)


def _keep_value_py(out, k0, k1, t, s):
    """out[i] = s if bits(i) >= t else 0 (a shared mask, already scaled)."""
    _map_words(out, k0, k1, _value_of, t, s)


def _uniform_py(out, k0, k1):
    _map_words(out, k0, k1, _uniform_of, 0, 0)  # (a uniform needs no threshold or value)


def _pair(py):
    """(parallel, serial) compilations: small tensors run on the calling thread (waking a pool costs more)."""
    return parallel_and_serial(py, error_model="numpy")


_KERNELS = {name: _pair(py) for name, py in (("normal", _normal_apply_py), ("alpha", _alpha_affine_py),
                                               ("keep", _keep_mask_py), ("keep_value", _keep_value_py),
                                               ("uniform", _uniform_py))}


def _kernel(name: str, n: int):
    return pick(_KERNELS[name], n)


def alpha_affine(x: Tensor, out: Tensor, k0: int, k1: int, t: int, a, bk, bd) -> None:
    """out = x·a + bk where bits >= t else x·0 + bd (contiguous CPU tensors; ``out`` may be ``x``)."""
    px, pout, n, like = flat_operands(x, out)
    d = type(like)
    _kernel("alpha", n)(px, pout, n, np.uint32(k0), np.uint32(k1), np.uint32(t), d(a), d(bk), d(bd))


def normal_apply(x: Tensor, out: Tensor, k0: int, k1: int, sigma: np.ndarray, additive: bool) -> None:
    """out = x + σz (additive) or x·(1 + σz), z the paired Box-Muller normals (contiguous CPU tensors).

    ``sigma`` is float32 with one σ per member row: ``x`` is viewed as (len(sigma), -1).
    ``out`` may be ``x``: the kernel then writes a scratch tensor, copied back (given two
    aliased arrays its loops take LLVM's scalar fallback, about 8x slower).
    """
    px, pout, n, like = flat_operands(x, out)
    dst = torch.empty_like(out) if pout == px and n else out
    _kernel("normal", n)(px, dst.data_ptr(), n, like, np.uint32(k0), np.uint32(k1), sigma, bool(additive))
    if dst is not out:
        out.copy_(dst)


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


def keep_value(n: int, k0: int, k1: int, t: int, s) -> np.ndarray:
    """Array of ``s`` (kept) or 0 (dropped) for counters 0..n−1, in ``s``'s numpy dtype."""
    out = np.empty(n, dtype=type(s))
    _kernel("keep_value", n)(out, np.uint32(k0), np.uint32(k1), np.uint32(t), s)
    return out


@njit(error_model="numpy")
def _scale_row(x, out, v):
    """out = x·v: its own function, so LLVM vectorises the loop on two fresh arrays (inlined into
    the row loop it ran about 25% slower)."""
    for j in range(x.size):
        out[j] = x[j] * v


@njit(inline="always")
def _row_value(r, k0, k1, t, s, z):
    return s if word_at(r, k0, k1) >= t else z


def _rows_py(px, pout, n, k0, k1, t, s, inner, stream):
    """The ``n`` elements at ``px`` (``s``'s dtype) viewed as (rows, inner), into ``pout``:
    out[r] = x[r]·s if bits(r) >= t else x[r]·0 (one mask cell per row).

    The same cells as :func:`keep_value` (cell ``r`` uses counter ``r``), applied without
    materialising the mask; ``stream``: non-temporal stores (large outputs). Streaming work
    items are runs of rows of about BLOCK elements, one store fence each (a fence per short
    row costs more than the stores save); ordinary stores go row by row (measured faster).
    """
    x, out = view_at(px, n, s), view_at(pout, n, s)
    rows = n // inner
    z = x.dtype.type(0)
    if stream:
        per = max(1, BLOCK // inner)
        for it in prange((rows + per - 1) // per):
            for r in range(it * per, min(rows, (it + 1) * per)):
                a = r * inner
                scale_stream(out[a:a + inner], x[a:a + inner], _row_value(r, k0, k1, t, s, z))
            stream_fence()
    else:
        for r in prange(rows):
            a = r * inner
            _scale_row(x[a:a + inner], out[a:a + inner], _row_value(r, k0, k1, t, s, z))


_KERNELS["rows"] = _pair(_rows_py)


def scale_rows(x: Tensor, out: Tensor, k0: int, k1: int, t: int, s, inner: int) -> None:
    """out = x·(s or 0) per row of ``inner`` elements, the row's cell drawn as in :func:`keep_value`
    (contiguous CPU tensors; ``out`` may be ``x``); streaming stores from :data:`._stream.STREAM_MIN_BYTES`."""
    px, pout, n, like = flat_operands(x, out)
    s = type(like)(s)
    _kernel("rows", n)(px, pout, n, np.uint32(k0), np.uint32(k1), np.uint32(t), s, np.int64(inner),
                       n * s.itemsize >= STREAM_MIN_BYTES)
