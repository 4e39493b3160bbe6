"""Non-temporal ("streaming") stores for memory-bound numba kernels.

An ordinary store to memory that is not in cache first reads the line in (a
read-for-ownership), so an op that writes a fresh output moves three bytes for
every two it needs: read x, read out, write out. A non-temporal store writes
whole lines straight to memory, skipping that read. For an output far larger
than the caches it makes a memory-bound op (a shared-mask multiply) about 1.2-1.4x
faster; for a small output, which the next op would find in cache, it is a loss,
so callers use it only above :data:`STREAM_MIN_BYTES` (glibc's ``memcpy`` makes the
same trade for large copies). Compute-bound kernels (the per-element hash of
:func:`regulab.ops.dropout`) gain nothing and do not use it; the Gaussian kernel's
2^22-element output, computed into an L1 tile and streamed from there, measured
~17% slower than its ordinary stores.

LLVM's loop vectoriser keeps ``!nontemporal`` stores scalar, so
:func:`scale_stream` writes its vector loop in LLVM IR directly: a scalar head up
to the first 32-byte aligned destination address, 32-byte vector loads,
multiplies and ``!nontemporal`` stores, and a scalar tail. Non-temporal stores are
weakly ordered: a kernel calls :func:`stream_fence` after its run of them.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["scale_stream", "stream_fence", "STREAM_MIN_BYTES"]

STREAM_MIN_BYTES = 8 << 20  # outputs from 8 MiB: well past a core's L2, a large share of L3
_VEC_BYTES = 32  # AVX: one ymm register, the unit of the aligned non-temporal store


@intrinsic
def scale_stream(typingctx, dst, src, v):
    """``dst[i] = src[i]·v`` for every ``i`` (1-D contiguous float arrays of equal length, ``v`` of
    their dtype), with non-temporal stores for the 32-byte aligned body of ``dst``."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype
            and dst.dtype in (types.float32, types.float64) and v == dst.dtype and dst.ndim == src.ndim == 1):
        return None
    sig = types.void(dst, src, v)

    def codegen(context, builder, sig, args):
        dst_t, src_t = sig.args[0], sig.args[1]
        darr = context.make_array(dst_t)(context, builder, args[0])
        sarr = context.make_array(src_t)(context, builder, args[1])
        d, s, n, val = darr.data, sarr.data, darr.nitems, args[2]
        scalar = val.type
        size = 4 if isinstance(scalar, ir.FloatType) else 8
        lanes = _VEC_BYTES // size
        vec = ir.VectorType(scalar, lanes)
        i64 = n.type
        one = ir.Constant(i64, 1)

        def scalar_loop(start, stop):
            with cgutils.for_range_slice(builder, start, stop, one, intp=i64) as (i, _):
                x = builder.load(builder.gep(s, [i]))
                builder.store(builder.fmul(x, val), builder.gep(d, [i]))

        # elements before the first 32-byte aligned address of dst (numpy data is element-aligned)
        addr = builder.ptrtoint(d, i64)
        head_bytes = builder.and_(builder.sub(ir.Constant(i64, 0), addr), ir.Constant(i64, _VEC_BYTES - 1))
        head = builder.udiv(head_bytes, ir.Constant(i64, size))
        head = builder.select(builder.icmp_signed("<", n, head), n, head)
        nvec = builder.udiv(builder.sub(n, head), ir.Constant(i64, lanes))
        body_end = builder.add(head, builder.mul(nvec, ir.Constant(i64, lanes)))
        scalar_loop(ir.Constant(i64, 0), head)
        splat = ir.Constant(vec, ir.Undefined)
        for k in range(lanes):
            splat = builder.insert_element(splat, val, ir.Constant(ir.IntType(32), k))
        nontemporal = builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)])
        with cgutils.for_range(builder, nvec) as loop:
            i = builder.add(head, builder.mul(loop.index, ir.Constant(i64, lanes)))
            x = builder.load(builder.bitcast(builder.gep(s, [i]), vec.as_pointer()), align=size)
            st = builder.store(builder.fmul(x, splat), builder.bitcast(builder.gep(d, [i]), vec.as_pointer()),
                               align=_VEC_BYTES)
            st.set_metadata("nontemporal", nontemporal)
        scalar_loop(body_end, n)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def stream_fence(typingctx):
    """Order the streamed stores before everything after (call once per run of :func:`scale_stream`)."""
    sig = types.void()

    def codegen(context, builder, sig, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return sig, codegen
