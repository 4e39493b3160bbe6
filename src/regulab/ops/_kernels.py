"""numba CPU kernels on the counter-based bits of :mod:`regulab.ops._rng`.

One pass over memory, parallel over blocks, threads capped by
``torch.get_num_threads()``. Arithmetic stays in uint32 lanes (every
intermediate is cast back to ``uint32``) so LLVM vectorises the hash.
Every kernel here has a torch reference and tests compare the two bit for bit.
"""
from __future__ import annotations

import hashlib
import threading
import types
from pathlib import Path

import numba
import numpy as np
import torch
from numba import carray, float32, njit, prange, uint32, uint64
from numba.core import types as nbtypes
from numba.extending import intrinsic

from .._numba_cache import cached_njit
from ._rng import GOLDEN, M1, M2, MASK32, RUN, RUN_SHIFT, _splitmix64

__all__ = ["masked_scale", "set_threads", "supported", "word_at", "run_key", "run_word", "run_bounds", "RUN", "BLOCK",
           "view_at", "flat_operands", "seed_keys", "masked_scale_new", "pick", "NUMBA_DTYPES", "dense", "layout_of",
           "laid_out_like"]


KERNEL_SOURCES = sorted(Path(__file__).parent.glob("_*.py"))  # this folder's private kernel modules


def drop_stale_caches(cache: Path, sources: list[Path]) -> None:
    """Clear numba's on-disk cache in ``cache`` when any of ``sources`` changed.

    numba invalidates a cached kernel when *its own* file changes, not when a function it
    inlines from another module does (the hash here, the streaming store, the Box-Muller
    helpers): an edit there would keep running the old machine code. So every cache that
    holds kernels built on this folder is keyed by all of its kernel modules together.
    """
    try:
        digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()
        stamp = cache / "regulab-kernels.sha256"
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in cache.glob("*.nb[ic]"):
            f.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest)
    except OSError:  # a read-only install: numba then caches under the user's cache folder
        pass


drop_stale_caches(Path(__file__).parent / "__pycache__", KERNEL_SOURCES)

BLOCK = 1 << 15  # elements per parallel work item; a multiple of RUN
_M1, _M2 = np.uint32(M1), np.uint32(M2)


@njit(inline="always")
def _mix32(x):
    x = uint32(x ^ (x >> uint32(16)))
    x = uint32(x * _M1)
    x = uint32(x ^ (x >> uint32(15)))
    x = uint32(x * _M2)
    return uint32(x ^ (x >> uint32(16)))


_W = np.uint32(GOLDEN)  # the step between a run's hash inputs


@njit(inline="always")
def run_key(i, k0, k1):
    """The key of the run that holds counter ``i`` (int64 >= 0): the two-round hash of its run index."""
    r = i >> RUN_SHIFT
    hk = uint32(uint32(((r >> 32) * GOLDEN) & MASK32) ^ k1)
    return _mix32(uint32(_mix32(uint32(uint32(r & MASK32) ^ k0)) + hk))


@njit(inline="always")
def run_word(l, key):
    """The 32-bit word of the ``l``-th counter (``l < RUN``) of the run with ``key``."""
    return _mix32(uint32(key + uint32(uint32(l) * _W)))


@njit(inline="always")
def word_at(i, k0, k1):
    """The 32-bit word of counter ``i`` on its own (heads and tails of runs, single cells)."""
    return run_word(i & (RUN - 1), run_key(i, k0, k1))


@njit(inline="always")
def run_bounds(start, n):
    """(head, end) for counters start..start+n−1: the first ``head`` elements precede the first run
    boundary, [head, end) is whole runs (key once per run, lanes vectorised), the rest a tail.

    Index the runs' elements with an unsigned ``uint64(c + l)``: numba wraps negative signed
    indices, and LLVM, unable to rule them out in a loop that starts at ``head``, then loads and
    stores element by element (3x slower; in place 15x).
    """
    head = min(n, (-start) & (RUN - 1))
    return head, head + (n - head) // RUN * RUN


@njit(inline="always")
def masked_lanes(x, out, start, k0, k1, t, s):
    """out[j] = x[j]·s if bits(start + j) >= t else x[j]·0 (1-D arrays; pass one array twice for in place)."""
    z = x.dtype.type(0)
    n = x.size
    head, end = run_bounds(start, n)
    # x·0 (not a literal 0) for dropped elements: NaN/inf/-0.0 behave as in torch
    for j in range(head):
        out[j] = x[j] * (s if word_at(start + j, k0, k1) >= t else z)
    for c in range(head, end, RUN):
        key = run_key(start + c, k0, k1)
        for l in range(RUN):
            j = uint64(c + l)  # see run_bounds
            out[j] = x[j] * (s if run_word(l, key) >= t else z)
    for j in range(end, n):
        out[j] = x[j] * (s if word_at(start + j, k0, k1) >= t else z)


@njit
def _fill(x, out, start, k0, k1, t, s):
    masked_lanes(x, out, start, k0, k1, t, s)


@njit
def _fill_inplace(x, start, k0, k1, t, s):
    # Its own compiled function, with x as both operands of the inlined loop: given two
    # array arguments (aliased when out is x) LLVM's runtime overlap check sends the loop
    # to its scalar fallback, about 10x slower.
    masked_lanes(x, x, start, k0, k1, t, s)


@njit(inline="always")
def _fill_any(x, out, start, k0, k1, t, s, inplace):
    if inplace:
        _fill_inplace(x, start, k0, k1, t, s)
    else:
        _fill(x, out, start, k0, k1, t, s)


@njit(inline="always")
def for_each_block(n_members, row):
    """Number of work items and blocks per member row for a (n_members, row) view."""
    per_row = (row + BLOCK - 1) // BLOCK
    return n_members * per_row, per_row


def _masked_scale_py(px, pout, n, seed, thresh, scale, base, inplace):
    """out[i] = x[i]·scale[m] if bits(base + i) >= thresh[m] else x[i]·0, with m = i // row, for the
    ``n`` elements at addresses ``px``/``pout`` viewed as (thresh.size, row) (``out`` is ignored and
    ``x`` overwritten when ``inplace``); the keys are mixed from the int64 ``seed`` here."""
    x, out = view_at(px, n, scale), view_at(pout, n, scale)
    k0, k1 = seed_keys(seed)
    row = n // thresh.size
    nitems, per_row = for_each_block(thresh.size, row)
    for b in prange(nitems):
        m = b // per_row
        st = m * row + (b % per_row) * BLOCK
        sp = min(st + BLOCK, (m + 1) * row)
        _fill_any(x[st:sp], out[st:sp], base + st, k0, k1, thresh[m], scale[m], inplace)


# Small tensors run on the calling thread: waking a thread pool costs more than it saves.
PARALLEL_MIN = 1 << 16  # two blocks: from here two threads beat one (measured on a 2-core machine)


def _renamed(py, suffix: str):
    """A copy of function ``py`` whose qualified name ends in ``suffix``."""
    f = types.FunctionType(py.__code__, py.__globals__, py.__name__ + suffix, py.__defaults__, py.__closure__)
    f.__qualname__, f.__module__, f.__doc__ = py.__qualname__ + suffix, py.__module__, py.__doc__
    return f


def parallel_and_serial(py, **options):
    """(parallel, serial) cached numba compilations of the prange kernel ``py``.

    numba's on-disk cache is keyed by the function's name, line and signature, not by
    ``parallel=``: two dispatchers of one function would share one cache entry, and
    whichever compiled first would serve both (a serial "parallel" kernel, for good).
    So each twin compiles its own renamed copy.
    """
    return (cached_njit(_renamed(py, "_par"), parallel=True, **options),
            cached_njit(_renamed(py, "_ser"), **options))


_MASKED_SCALE = _masked_scale_par, _masked_scale_ser = parallel_and_serial(_masked_scale_py)


# torch dtype -> numpy dtype the kernels serve (numpy's dtype objects are singletons: test with ``is``)
NUMBA_DTYPES = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


def supported(x: torch.Tensor) -> bool:
    """The numba fast path handles CPU float32/float64 tensors."""
    return x.is_cpu and x.dtype in NUMBA_DTYPES


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous tensor whose memory holds its values: a negative view (``.imag`` of a
    conjugate, say) is resolved, as its memory holds −x and the kernels read memory."""
    xc = x.contiguous()
    return xc.resolve_neg() if xc.is_neg() else xc


def layout_of(x: torch.Tensor) -> torch.Tensor:
    """An empty tensor laid out as an elementwise op's output on ``x`` (what the custom ops' fakes
    return): like ``x`` when ``x`` is dense but not row-major (channels_last, transposed), as
    torch's own elementwise ops, and row-major otherwise."""
    return torch.empty_like(x, memory_format=torch.contiguous_format) if x.is_contiguous() else torch.empty_like(x)


def laid_out_like(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``y``, a kernel's row-major result on :func:`dense` ``x``, laid out as :func:`layout_of` says.
    The counters follow the logical order either way, so the draws do not depend on the layout."""
    if x.is_contiguous():
        return y
    like = torch.empty_like(x)
    return y if like.is_contiguous() else like.copy_(y)


_threads = threading.local()  # numba's thread count is per calling thread


_pool_launched = False


def set_threads() -> None:
    """Cap numba's threads at torch's current setting (cheap when unchanged).

    numba's first parallel use launches its OpenMP threads and sets OpenMP's thread count to all
    cores; torch's ``omp_set_num_threads``/``omp_get_max_threads`` can bind to that same runtime,
    so a process at ``torch.set_num_threads(1)`` (a Ray task, ``regulab study --threads 1``)
    would silently go back to every core. The launch happens here, once, and torch's count is
    put back.

    The common case (torch's count as at this thread's last call, numba's set from it) is one
    torch call and two dict reads: right after a large op every further lookup is a cache miss.
    """
    t = torch.get_num_threads()
    known = _threads.__dict__
    if known.get("torch") == t and known.get("n") is not None:
        return
    global _pool_launched
    if not _pool_launched:
        numba.get_num_threads()  # launches numba's threads
        if torch.get_num_threads() != t:
            torch.set_num_threads(t)
        _pool_launched = True
    n = max(1, min(t, numba.config.NUMBA_NUM_THREADS))
    if getattr(_threads, "n", None) != n:
        numba.set_num_threads(n)
        _threads.n = n
    _threads.torch = t


def pick(pair, n: int, minimum: int = PARALLEL_MIN):
    """The parallel twin of a (parallel, serial) kernel pair from ``minimum`` elements (its
    threads capped at torch's), the serial one below."""
    if n >= minimum:
        set_threads()
        return pair[0]
    return pair[1]


# The kernels take the tensors' addresses, not numpy views: making the two views (``detach``,
# ``numpy``, ``reshape``) is most of the Python cost of a small call, and right after a large op
# (a GEMM, a memory-bound pass) every object it touches is out of cache. Each kernel builds its
# views itself: a cached function that calls another *cached* one can store code that jumps into
# the other's copy in the compiling process, and crash every process that loads it.
_LIKE = {t: d.type(0) for t, d in NUMBA_DTYPES.items()}  # a zero of each dtype: its kernels' type tag


@intrinsic
def _pointer(typingctx, addr, like):
    """The int64 ``addr`` as a pointer to ``like``'s element type (``like``: a float scalar or array)."""
    dtype = like.dtype if isinstance(like, nbtypes.Array) else like
    if not (isinstance(addr, nbtypes.Integer) and isinstance(dtype, nbtypes.Float)):
        return None
    sig = nbtypes.CPointer(dtype)(addr, like)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))
    return sig, codegen


@njit(inline="always")
def view_at(addr, n, like):
    """The 1-D array of ``n`` elements of ``like``'s float type at ``addr`` (see :func:`flat_operands`)."""
    return carray(_pointer(addr, like), n)


def flat_operands(x: torch.Tensor, out: torch.Tensor) -> tuple[int, int, int, object]:
    """(x's address, out's address, numel, a numpy zero of their dtype) for a kernel entry point.

    The checks guard the raw addresses: both CPU tensors, contiguous, of one supported
    dtype and size (``out`` may be ``x``: the in-place case), neither a negative view
    (whose memory holds −x: see :func:`dense`).
    """
    like = _LIKE.get(x.dtype)
    n = x.numel()
    if (like is None or out.dtype != x.dtype or out.numel() != n or not x.is_cpu or not out.is_cpu
            or not x.is_contiguous() or not out.is_contiguous() or x.is_neg() or out.is_neg()):
        raise ValueError(f"kernel operands: contiguous CPU float32/float64 tensors of one dtype and size, not "
                         f"negative views, got {x.dtype}/{out.dtype}, {n}/{out.numel()} elements, contiguous "
                         f"{x.is_contiguous()}/{out.is_contiguous()}, negative views {x.is_neg()}/{out.is_neg()}, "
                         f"devices {x.device}/{out.device}")
    return x.data_ptr(), out.data_ptr(), n, like


_SM_GAMMA, _SM_M1, _SM_M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_SM_STREAM0 = np.uint64(_splitmix64(0))


@njit(inline="always")
def _splitmix64_nb(z):
    z = uint64(z + _SM_GAMMA)
    z = uint64(uint64(z ^ (z >> uint64(30))) * _SM_M1)
    z = uint64(uint64(z ^ (z >> uint64(27))) * _SM_M2)
    return uint64(z ^ (z >> uint64(31)))


@njit(inline="always")
def seed_keys(seed):
    """:func:`._rng.mix_seed` of an int64 ``seed`` (stream 0) inside numba: the two uint32 keys."""
    z = _splitmix64_nb(uint64(uint64(seed) ^ _SM_STREAM0))
    return uint32(z & uint64(MASK32)), uint32(z >> uint64(32))


def masked_scale_new(x: torch.Tensor, seed: int, thresh: np.ndarray, scale: np.ndarray) -> torch.Tensor:
    """:func:`masked_scale` of ``x`` into a new tensor (an activation's forward, a gradient's backward).

    The hot path of a training step, so it checks only what its raw addresses need of ``x``
    and ``scale`` (``empty_like`` of such an ``x`` is contiguous, of the same dtype and size),
    not everything :func:`flat_operands` checks.
    """
    if not (x.is_contiguous() and x.is_cpu and scale.dtype is NUMBA_DTYPES.get(x.dtype) and not x.is_neg()):
        flat_operands(x, x)  # raises, naming what it got
        raise ValueError(f"kernel operands: a scale of the tensors' dtype {x.dtype}, got {scale.dtype}")
    out = torch.empty_like(x)
    n = x.numel()
    pick(_MASKED_SCALE, n)(x.data_ptr(), out.data_ptr(), n, seed, thresh, scale, 0, False)
    return out


def masked_scale(x: torch.Tensor, out: torch.Tensor, seed: int,
                 thresh: np.ndarray, scale: np.ndarray, base: int = 0) -> None:
    """Run the dropout kernel on contiguous ``x`` into contiguous ``out`` (may alias ``x``).

    ``seed`` is an int64 (as drawn); the keys are mixed from it inside numba.

    ``thresh`` (uint32) and ``scale`` (x's dtype) have one entry per member row;
    ``x`` is viewed as (len(thresh), -1). Element ``i`` uses counter ``base + i``
    (``base`` exists so tests can reach counters beyond 2^32 without 16 GB tensors).
    """
    px, pout, n, like = flat_operands(x, out)
    if scale.dtype != like.dtype:  # the kernel reads x's memory as scale's type
        raise ValueError(f"kernel operands: a scale of the tensors' dtype {x.dtype}, got {scale.dtype}")
    pick(_MASKED_SCALE, n)(px, pout, n, seed, thresh, scale, base, pout == px)


del float32
