"""regulab._numba_cache: processes compiling signatures of one cached function at once leave a sound cache.

numba saves an overload by reading the index, picking a data-file number and writing both, with
no lock: two processes saving at once can pick the same number, and the index then maps one
signature to the other's machine code. The guard makes each save one turn under a file lock.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from regulab import _numba_cache

MODULE = textwrap.dedent("""
    import numpy as np
    from regulab._numba_cache import cached_njit

    @cached_njit
    def total(a):
        s = a.dtype.type(0)
        for v in a:
            s += v * a.dtype.type(3)
        return s
""")
DTYPES = ["float64", "float32", "int64", "int32", "int16", "uint8"]
WORKER = textwrap.dedent("""
    import os, sys, time
    import numpy as np
    from numba.core import caching
    folder, log = sys.argv[1], os.path.join(sys.argv[1], "saves.log")
    sys.path.insert(0, folder)
    save_index, save_data = caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data

    def slow_index(self, overloads):  # widen numba's read-index .. write-data window to 0.4 s
        self._t0 = time.monotonic()
        time.sleep(0.4)
        return save_index(self, overloads)

    def logged_data(self, name, data):
        save_data(self, name, data)
        with open(log, "a") as f:
            f.write(f"{getattr(self, '_t0', time.monotonic())} {time.monotonic()}\\n")

    caching.IndexDataCacheFile._save_index, caching.IndexDataCacheFile._save_data = slow_index, logged_data
    import cachemod
    go = os.path.join(folder, "go")
    while not os.path.exists(go):
        time.sleep(0.001)
    for name in sys.argv[2:]:
        a = np.arange(1, 6, dtype=name)
        assert cachemod.total(a) == 45, (name, cachemod.total(a))
    print("ok", sys.argv[2:])
""")


def _run_all(folder, groups):
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(folder), *g], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for g in groups]
    time.sleep(1.5)  # every worker imported and waiting: they compile together
    (folder / "go").write_text("")
    return [(p.wait(timeout=300), *p.communicate()) for p in procs]


@pytest.mark.skipif(_numba_cache.fcntl is None, reason="no fcntl: numba's own unlocked cache")
def test_concurrent_compiles_leave_every_signature_loadable(tmp_path):
    (tmp_path / "cachemod.py").write_text(MODULE)
    # six processes compile six signatures at once, then each loads them all from the cache
    for rc, out, err in _run_all(tmp_path, [[d] for d in DTYPES]):
        assert rc == 0, err
    # each save (index read .. data written) held the lock: no two overlap in time
    spans = sorted(tuple(map(float, ln.split())) for ln in (tmp_path / "saves.log").read_text().splitlines())
    assert len(spans) == len(DTYPES), spans
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:])), spans
    (tmp_path / "saves.log").unlink()
    (tmp_path / "go").unlink()
    for rc, out, err in _run_all(tmp_path, [DTYPES[i:] + DTYPES[:i] for i in range(3)]):
        assert rc == 0, err  # a signature mapped to another's machine code answers wrong or crashes
    index = [f for f in os.listdir(tmp_path / "__pycache__") if f.endswith(".nbi")]
    data = [f for f in os.listdir(tmp_path / "__pycache__") if f.endswith(".nbc")]
    assert len(index) == 1 and len(data) == len(DTYPES), (index, data)
    assert os.path.exists(tmp_path / "__pycache__" / _numba_cache.LOCK_NAME)


def test_guard_is_idempotent_and_leaves_uncached_dispatchers_alone():
    from numba import njit

    plain = njit(lambda x: x)
    assert _numba_cache.guard_cache(plain) is plain and not hasattr(plain._cache, "_cache_file")
    cached = _numba_cache.cached_njit(lambda x: x + 1)
    save = cached._cache._cache_file.save
    assert _numba_cache.guard_cache(cached)._cache._cache_file.save is save  # not wrapped twice


def test_threads_take_turns_per_lock_name(tmp_path):
    """A long hold of one lock name (the C++ build's) does not stall another name's lock (numba's
    cache) in another thread; the same name does wait, and re-entering one's own lock does not."""
    import threading

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    held, release = threading.Event(), threading.Event()

    def hold(name):
        with _numba_cache.folder_lock(str(a), name) as got:
            assert got
            held.set()
            release.wait(30)

    def attempt(name, seconds=0.5):
        done = threading.Event()

        def run():
            with _numba_cache.folder_lock(str(b), name):
                done.set()
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return done.wait(seconds), t

    holder = threading.Thread(target=hold, args=("regulab-build.lock",), daemon=True)
    holder.start()
    assert held.wait(30)
    other, _ = attempt(_numba_cache.LOCK_NAME)
    assert other  # another name: no wait
    same, waiter = attempt("regulab-build.lock")
    assert not same  # the same name: its turn comes after the holder's
    release.set()
    holder.join(30)
    waiter.join(30)
    assert not waiter.is_alive()
    with _numba_cache.folder_lock(str(a)) as outer, _numba_cache.folder_lock(str(a)) as inner:
        assert outer and inner  # re-entrant in one thread
