"""numba's on-disk cache, made safe for several processes compiling at once.

numba saves a compiled overload by reading the function's index file, picking the
first unused data-file number, writing the data file and rewriting the index.
Two processes that compile *different* signatures of one function at the same
time (the test suite's workers, a study's Ray tasks, two notebooks) both pick
number 1: the last index written maps its signature to a data file the other
process may have written last. Every later process then loads machine code
compiled for other argument types, and crashes. :func:`cached_njit` compiles
with ``cache=True`` and serialises each cache-file read and write with an
exclusive ``flock`` on a file beside the cache (where no lock can be taken, for
example on a platform without ``fcntl``, numba's own behaviour is kept).
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading

from numba import njit

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

__all__ = ["cached_njit", "guard_cache", "folder_lock", "LOCK_NAME"]

LOCK_NAME = "regulab-numba-cache.lock"
_held: dict[str, list] = {}  # lock path -> [file, depth]: a thread re-entering keeps its lock
_mutexes: dict[str, threading.RLock] = {}  # lock name -> the threads' turn on every lock of that name
_guard = threading.Lock()


def _mutex(name: str) -> threading.RLock:
    with _guard:
        return _mutexes.setdefault(name, threading.RLock())


@contextlib.contextmanager
def folder_lock(folder: str, name: str = LOCK_NAME):
    """An exclusive ``flock`` on ``folder/name`` across processes (re-entrant in one process;
    the system releases it when its holder dies). Yields whether it holds the lock: False where
    none can be taken (a read-only folder, no ``fcntl``), and the caller goes on unlocked.

    The threads of one process take turns per lock *name*: one thread at a time holds any
    numba-cache lock (so a thread nesting two cache folders cannot deadlock with another),
    while a minute-long C++ build under its own name stalls no thread's cache reads."""
    path = os.path.join(folder, name)
    with _mutex(name):
        entry = _held.get(path)
        if entry is None:
            try:
                if fcntl is None:
                    raise OSError("no fcntl")
                f = open(path, "a+b")
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except OSError:  # a read-only folder: the caller's own (unlocked) behaviour
                yield False
                return
            entry = _held[path] = [f, 0]
        entry[1] += 1
        try:
            yield True
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del _held[path]
                fcntl.flock(entry[0].fileno(), fcntl.LOCK_UN)
                entry[0].close()


def guard_cache(dispatcher):
    """Serialise ``dispatcher``'s cache-file loads and saves across processes; returns it."""
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if cache_file is None or fcntl is None or getattr(cache_file, "_regulab_guarded", False):
        return dispatcher
    folder = cache_file._cache_path

    def locked(method):
        @functools.wraps(method)
        def run(*args, **kwargs):
            with folder_lock(folder):
                return method(*args, **kwargs)
        return run

    cache_file.save, cache_file.load = locked(cache_file.save), locked(cache_file.load)
    cache_file._regulab_guarded = True
    return dispatcher


def cached_njit(py_func=None, **options):
    """``numba.njit(cache=True, **options)`` with :func:`guard_cache`; usable bare or with options."""
    if py_func is None:
        return lambda f: guard_cache(njit(cache=True, **options)(f))
    return guard_cache(njit(cache=True, **options)(py_func))
