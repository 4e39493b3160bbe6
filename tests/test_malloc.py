"""regulab._malloc: with the thresholds fixed, freed activations are reused, not re-faulted."""
from __future__ import annotations

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
    a = torch.empty(4 << 20).fill_(1.0)
    b = torch.empty(4 << 20).fill_(2.0)
    return float(a[-1] + b[-1])
for _ in range(3):
    step()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
"""


def _faults(retain: bool) -> int:
    out = subprocess.run([sys.executable, "-c", _LOOP.format(retain=retain)], capture_output=True, text=True)
    if out.returncode == 3:
        pytest.skip("the C library is not glibc")
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_retained_memory_is_reused_without_page_faults():
    if not retain_freed_memory():
        pytest.skip("the C library is not glibc")
    # 20 steps x 32 MB would be ~160,000 faults if every step landed in fresh pages
    assert _faults(True) < 2_000
