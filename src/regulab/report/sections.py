"""The report's extension point: optional sections added after the built-in ones.

A section is a function ``(results) -> (title, html_fragment, figures) | None``: ``results`` is the
study's :class:`~regulab.study.store.Results`; ``html_fragment`` is inserted as markup, so the
section escapes what it puts in it (``markupsafe.escape``); ``figures`` is a list of matplotlib
``Figure`` objects or ``(caption, Figure)`` pairs, inlined as PNG. Return None when the section does
not apply to the study. A section that raises is reported in the page; the rest is still written.

Examples:
    >>> def runs_section(results):
    ...     return "Runs", f"<p>{len(results.runs)} runs</p>", []
    >>> SECTIONS.append(runs_section)   # every later report has it
    >>> SECTIONS.remove(runs_section)
"""
from __future__ import annotations

from collections.abc import Callable

__all__ = ["SECTIONS"]

SECTIONS: list[Callable] = []
