"""Shared timing helpers for the benchmarks (not tests).

Competitors are timed *interleaved* (one call of each per round) so that the
noise of a shared machine hits them alike; we report medians and ratios.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch

from regulab._malloc import retain_freed_memory, retaining

# Every benchmark process, all competitors alike, runs with glibc's thresholds fixed as
# `regulab study` sets them (see regulab._malloc): otherwise whether a loop re-faults its
# freed megabytes each iteration depends on the heap layout, and varies 2-4x between runs.
retain_freed_memory()


def median_seconds(fns: dict[str, Callable[[], object]], repeats: int = 9, warmup: int = 2,
                   inner: int = 1, settle: bool = False) -> dict[str, float]:
    """Median wall seconds of one call of each function, measured interleaved.

    ``settle``: each timed call follows an untimed call of the same function, so it meets the
    cache state its own previous call left (steady state, as in a loop of that op). For
    memory-bound ops this matters: without it a call pays to write back the dirty output
    lines of the competitor timed just before, while an op with non-temporal stores leaves
    none for the next one: plain alternation charges it for torch's write-backs and never
    torch for its own.
    """
    for f in fns.values():
        for _ in range(warmup):
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            if settle:
                f()
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def environment() -> dict[str, object]:
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "malloc": "glibc mmap 32 MiB / trim 1 GiB, all competitors" if retaining() else "default",
    }


def emit(name: str, result: dict[str, object]) -> None:
    """Print the benchmark's one JSON line."""
    print(json.dumps({"bench": name, **result, "env": environment()}, sort_keys=False))
