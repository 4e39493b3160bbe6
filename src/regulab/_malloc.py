"""glibc malloc settings for a training process: keep freed memory for reuse.

glibc hands freed memory back to the kernel when the free space at the top of the
heap passes a threshold that it adapts to the largest recent block. A training loop
frees and reallocates the same megabyte-sized activations every step, so depending on
how the heap happens to be laid out, every step can land in fresh pages: thousands of
page faults, each paid again in zeroing. Whether that happens varies from one process
to the next, so two identical runs can differ 2x in speed.

:func:`retain_freed_memory` fixes the two thresholds: blocks below 32 MiB come from
the heap (glibc's own adaptive ceiling), and the heap is trimmed only past 1 GiB of
free space. The process keeps its peak heap, as jemalloc and tcmalloc do (PyTorch's
CPU tuning guide recommends those for the same reason). ``regulab study`` calls it for
its own process and Ray workers; the library never changes the allocator on import.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["retain_freed_memory"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_state = {"done": False}


def retain_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 1 << 30) -> bool:
    """Set glibc's mmap and trim thresholds (process-wide); False where the C library is not glibc.

    Examples:
        >>> retain_freed_memory() in (True, False)
        True
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1 and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
    _state["done"] = _state["done"] or ok
    return ok


def retaining() -> bool:
    """Whether :func:`retain_freed_memory` succeeded in this process."""
    return _state["done"]
