"""Error types and the one wording every user-facing error uses.

Every refusal reads ``<where>: <param> must be <constraint>, got <value>``
followed by a fix when one exists. The CLI turns any :class:`RegulabError`
into one line on stderr and exit code 2.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "RegulabError",
    "SpecError",
    "DatasetError",
    "StudyError",
    "format_error",
    "did_you_mean",
    "first_line",
]


class RegulabError(Exception):
    """Base class of every error regulab raises for bad user input or state."""


class SpecError(RegulabError, ValueError):
    """A study spec (TOML file or CLI flags) is invalid."""


class DatasetError(RegulabError, ValueError):
    """A dataset could not be loaded or is malformed."""


class StudyError(RegulabError, RuntimeError):
    """A study folder is unusable (locked, corrupted, foreign, disk full...)."""


def format_error(where: str, param: str, constraint: str, value: object, fix: str | None = None) -> str:
    """Build the house-style message.

    Examples:
        >>> format_error("Dropout", "p", "in [0, 1]", 1.5)
        'Dropout: p must be in [0, 1], got 1.5'
    """
    msg = f"{where}: {param} must be {constraint}, got {value!r}"
    if fix:
        msg += f"; {fix}"
    return msg


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """Return ``"did you mean 'x'?"`` for the closest choice, or None.

    Examples:
        >>> did_you_mean("dropuot", ["dropout", "l2"])
        "did you mean 'dropout'?"
    """
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean {match[0]!r}?" if match else None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (``(no message)`` when empty), for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else "(no message)"
