"""The guides in docs/ run as doctests, so their commands and printed output cannot drift.

Each guide is a Markdown file whose ``>>>`` lines are executed in a fresh
namespace; every printed line must match what the guide shows (ELLIPSIS and
NORMALIZE_WHITESPACE on). Run one guide with ``pytest tests/test_docs.py -k 03``.
"""
from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest
import torch

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = sorted((DOCS / "guides").glob("[0-9][0-9]-*.md"))
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


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


@pytest.mark.parametrize("path", GUIDES, ids=lambda p: p.stem)
def test_guide_runs(path, monkeypatch, tmp_path):
    # Guides that write files (a study folder) write them into a temporary folder.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "100")  # rich tables in shell output: a fixed width
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    torch.set_num_threads(1)  # one thread: the same float sums, hence the same digits, on any machine
    try:
        result = doctest.testfile(str(path), module_relative=False, encoding="utf-8", optionflags=FLAGS,
                                  verbose=False, report=True)
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
    assert result.attempted > 0, f"{path.name} has no examples"
    assert result.failed == 0, f"{path.name}: {result.failed} of {result.attempted} examples failed (see output above)"
