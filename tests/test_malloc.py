"""regulab._malloc: with the thresholds fixed, freed activations are reused, not re-faulted."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from regulab._malloc import retain_freed_memory

_LOOP = """
import resource, sys, torch
from regulab._malloc import retain_freed_memory
if {retain} and not retain_freed_memory():
    sys.exit(3)
def step():  # a training step's pattern: two 16 MB buffers, both freed before the next step
    bufs = [torch.empty(4 << 20).fill_(1.0) for _ in range(2)]
    return float(sum(b[-1] for b in bufs))
for _ in range(5):
    step()
per_step = []
for _ in range(20):
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    per_step.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
print(" ".join(map(str, per_step)))
"""


def _faults(retain: bool, env: dict[str, str] | None = None) -> list[int]:
    """Page faults of each of 20 steps (after 5 warm-up steps)."""
    out = subprocess.run([sys.executable, "-c", _LOOP.format(retain=retain)], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode == 3:
        pytest.skip("the C library is not glibc")
    assert out.returncode == 0, out.stderr
    return [int(v) for v in out.stdout.split()]


def test_retained_memory_is_reused_without_page_faults():
    if not retain_freed_memory():
        pytest.skip("the C library is not glibc")
    # A step that lands in fresh pages faults ~8,000 times (2 x 16 MB). The heap may still settle
    # once (small objects allocated between the buffers move one up, at a step that varies from
    # run to run); after that every step reuses the same pages.
    faults = _faults(True)
    assert sum(f > 100 for f in faults) <= 2, faults


def test_the_count_sees_a_loop_that_refaults():
    """The control: with every buffer mmapped (glibc's initial 128 KiB threshold, held fixed) the
    same loop returns its buffers to the system and faults them in again on every step. (glibc's
    own default moves its thresholds as it goes: whether it refaults depends on the run.)"""
    faults = _faults(False, {"MALLOC_MMAP_THRESHOLD_": str(128 << 10)})
    assert all(f > 4_000 for f in faults), faults
