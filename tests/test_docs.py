"""The guides in docs/ run as doctests, so their commands and printed output cannot drift.

Each guide is a Markdown file whose ``>>>`` lines run under
``doctest.testfile`` with ELLIPSIS and NORMALIZE_WHITESPACE: every printed line
must match what the guide shows. Check one guide by hand with
``python -m doctest -o ELLIPSIS -o NORMALIZE_WHITESPACE docs/guides/03-eval-mode.md``.

Why a fresh interpreter: the guides train small networks, and the digits they
print depend on the order of floating-point sums, which changes with the
thread count and with the SIMD code path the CPU picks (checked: forcing
torch's scalar path changes guide 3's accuracies in the second decimal). The
guides run with one thread and, on x86-64, torch's and MKL's AVX2 code paths
pinned (``MKL_CBWR`` is MKL's reproducibility switch), which should make a CPU
with AVX-512 print the digits the guides were written with (an AVX2 machine);
the pins must be set before torch is imported, hence the new process.
"""
from __future__ import annotations

import doctest
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = sorted((DOCS / "guides").glob("[0-9][0-9]-*.md"))
PINNED = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if platform.machine().lower() in ("x86_64", "amd64"):
    PINNED |= {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}
# as pyproject's filterwarnings: warnings are errors, except one raised inside torch's own imports
WARNINGS = ["-W", "error", "-W", "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"]


def test_every_guide_is_listed_and_linked():
    assert len(GUIDES) >= 7, [g.name for g in GUIDES]
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    readme = (DOCS.parent / "README.md").read_text(encoding="utf-8")
    for g in GUIDES:
        assert f"guides/{g.name}" in index, f"docs/index.md does not link {g.name}"
        assert f"docs/guides/{g.name}" in readme, f"README.md does not link {g.name}"


def test_links_between_guides_resolve():
    for page in [DOCS / "index.md", *GUIDES]:
        for target in re.findall(r"\]\(([^)#]+\.md)", page.read_text(encoding="utf-8")):
            assert (page.parent / target).is_file(), f"{page.name}: broken link {target}"


# Runs in the fresh interpreter: every guide as doctest.testfile does it (a new namespace per guide),
# one summary line per guide, exit status 1 if any example failed.
RUNNER = """
import doctest, sys
flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
failed = []
for path in sys.argv[1:]:
    r = doctest.testfile(path, module_relative=False, encoding="utf-8", optionflags=flags)
    print(f"GUIDE {path.rsplit('/', 1)[-1]}: {r.attempted - r.failed} of {r.attempted} examples passed", flush=True)
    if r.failed or not r.attempted:
        failed.append(path)
sys.exit(1 if failed else 0)
"""


def test_guides_run(tmp_path):
    # One interpreter for all guides: torch, regulab and the numba kernels load once (seconds each).
    # Its working folder is a temporary one: guides that write files (a model file for `regulab doctor`) write there.
    done = subprocess.run([sys.executable, *WARNINGS, "-c", RUNNER, *map(str, GUIDES)], cwd=tmp_path,
                          env={**os.environ, **PINNED}, capture_output=True, text=True, timeout=900)
    summary = [line for line in done.stdout.splitlines() if line.startswith("GUIDE ")]
    assert len(summary) == len(GUIDES), f"not every guide ran:\n{done.stdout}{done.stderr}"
    assert done.returncode == 0, f"a guide's output drifted:\n{done.stdout}{done.stderr}"
