"""numba's on-disk cache must never hand a serial compilation to a parallel kernel.

numba keys its cache files by the Python function's qualified name and first line
(and the signature), not by ``parallel=``: two dispatchers built from one function
share one cache entry, and whichever compiled first serves both, in every later
process. A parallel kernel then runs on one thread for good.
"""
from __future__ import annotations

from collections import defaultdict

from numba.core.registry import CPUDispatcher

from regulab.models import _fused
from regulab.ops import _kernels, _kernels_family


def _dispatchers():
    found = [v for v in vars(_kernels).values() if isinstance(v, CPUDispatcher)]
    found += [v for v in vars(_kernels_family).values() if isinstance(v, CPUDispatcher)]
    found += [d for pair in _kernels_family._KERNELS.values() for d in pair]
    found += [v for v in vars(_fused).values() if isinstance(v, CPUDispatcher)]
    return found


def test_parallel_and_serial_twins_never_share_a_cache_entry():
    by_key = defaultdict(set)
    for d in _dispatchers():
        f = d.py_func
        by_key[(f.__module__, f.__qualname__, f.__code__.co_firstlineno)].add(bool(d.targetoptions.get("parallel")))
    assert all(len(modes) == 1 for modes in by_key.values()), {k: v for k, v in by_key.items() if len(v) > 1}


def test_every_fast_path_has_a_parallel_twin():
    pairs = [(_kernels._masked_scale_par, _kernels._masked_scale_ser), *_kernels_family._KERNELS.values(),
             (_fused._fwd_par, _fused._fwd_ser), (_fused._bwd_par, _fused._bwd_ser)]
    for par, ser in pairs:
        assert par.targetoptions.get("parallel") and not ser.targetoptions.get("parallel")
        assert par.py_func.__qualname__ != ser.py_func.__qualname__
        assert par.py_func.__code__ is ser.py_func.__code__  # one body, two compilations


def test_a_kernel_source_edit_clears_the_folders_numba_cache(tmp_path):
    """numba only watches a kernel's own file: any edit to the folder's kernel modules drops every cache entry."""
    src = [tmp_path / "_a.py", tmp_path / "_b.py"]
    for p in src:
        p.write_text("x = 1\n")
    cache = tmp_path / "__pycache__"
    cache.mkdir()
    (cache / "_a.k-1.py311.nbi").write_text("index")
    _kernels.drop_stale_caches(cache, src)
    assert not (cache / "_a.k-1.py311.nbi").exists()
    (cache / "_a.k-1.py311.nbi").write_text("index")  # compiled again, sources unchanged: kept
    _kernels.drop_stale_caches(cache, src)
    assert (cache / "_a.k-1.py311.nbi").exists()
    src[1].write_text("x = 2\n")  # an edit in a module the kernel only inlines from: dropped
    _kernels.drop_stale_caches(cache, src)
    assert not (cache / "_a.k-1.py311.nbi").exists()


def test_no_cached_kernel_calls_another_cached_one():
    """A cached function compiled where its cached callee came from disk can store code that jumps into
    that process's copy of the callee, and crash every process that loads it (it did: SIGSEGV after
    concurrent first runs). Cached kernels call only uncached or inlined numba functions."""
    from regulab.study import _flat_regs

    def cached(v):
        return isinstance(v, CPUDispatcher) and type(v._cache).__name__ == "FunctionCache"

    found = _dispatchers() + [v for v in vars(_flat_regs).values() if isinstance(v, CPUDispatcher)]
    for d in filter(cached, found):
        f = d.py_func
        callees = [n for n in f.__code__.co_names if cached(f.__globals__.get(n))]
        assert not callees, (f.__qualname__, callees)
