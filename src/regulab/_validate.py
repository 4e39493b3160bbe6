"""Argument constraints kept as data, checked in one place.

Each public constructor/functional op validates with :func:`check`, so the
error text is uniform and the bad-value tests can be generated from
:data:`CONSTRAINTS` (see ``tests/test_constraints.py``).
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

from .errors import format_error

__all__ = ["Interval", "OneOf", "check", "check_p", "CONSTRAINTS"]


@dataclass(frozen=True)
class Interval:
    """A real interval; ``closed`` says which ends are included ("both", "left", "right", "neither")."""

    lo: float = -math.inf
    hi: float = math.inf
    closed: str = "both"
    integer: bool = False

    def contains(self, v: object) -> bool:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            return False
        if self.integer and not isinstance(v, numbers.Integral):
            return False
        v = float(v)
        if math.isnan(v):
            return False
        lo_ok = v >= self.lo if self.closed in ("both", "left") else v > self.lo
        hi_ok = v <= self.hi if self.closed in ("both", "right") else v < self.hi
        return lo_ok and hi_ok

    def __str__(self) -> str:
        kind = "an integer" if self.integer else "a number"
        if self.lo == -math.inf and self.hi == math.inf:
            return kind
        if self.hi == math.inf:
            return f"{kind} {'>=' if self.closed in ('both', 'left') else '>'} {_fmt(self.lo)}"
        if self.lo == -math.inf:
            return f"{kind} {'<=' if self.closed in ('both', 'right') else '<'} {_fmt(self.hi)}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"{kind} in {left}{_fmt(self.lo)}, {_fmt(self.hi)}{right}"

    def bad_values(self) -> list[object]:
        """Values that must be refused (used to generate tests)."""
        out: list[object] = [float("nan"), "0.5", None]
        if self.lo != -math.inf:
            out.append(self.lo - 1 if self.integer else self.lo - 0.1)
            if self.closed in ("right", "neither"):
                out.append(self.lo)
        if self.hi != math.inf:
            out.append(self.hi + 1 if self.integer else self.hi + 0.1)
            if self.closed in ("left", "neither"):
                out.append(self.hi)
        if self.integer:
            out.append(1.5)
        return out


@dataclass(frozen=True)
class OneOf:
    """A value from a fixed set of choices."""

    choices: tuple

    def contains(self, v: object) -> bool:
        return v in self.choices

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(c) for c in self.choices)

    def bad_values(self) -> list[object]:
        return ["__not_a_choice__", None]


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


PROB = Interval(0.0, 1.0, "both")
PROB_OPEN_RIGHT = Interval(0.0, 1.0, "left")
POSITIVE = Interval(0.0, math.inf, "neither")
NONNEG = Interval(0.0, math.inf, "left")
POS_INT = Interval(1, math.inf, "left", integer=True)
NONNEG_INT = Interval(0, math.inf, "left", integer=True)

# (where, param) -> constraint. Public callables register here so that the
# generated bad-value tests cover them all.
CONSTRAINTS: dict[tuple[str, str], Interval | OneOf] = {}


def register(where: str, param: str, constraint: Interval | OneOf) -> Interval | OneOf:
    CONSTRAINTS[(where, param)] = constraint
    return constraint


def check(where: str, param: str, value: object, constraint: Interval | OneOf, fix: str | None = None):
    """Raise ``ValueError`` in house style unless ``value`` satisfies ``constraint``.

    Examples:
        >>> check("Dropout", "p", 0.5, PROB)
        0.5
        >>> check("Dropout", "p", -1, PROB)
        Traceback (most recent call last):
        ...
        ValueError: Dropout: p must be a number in [0, 1], got -1
    """
    if not constraint.contains(value):
        raise ValueError(format_error(where, param, str(constraint), value, fix))
    return value


def check_p(where: str, p: object, constraint: Interval = PROB) -> float:
    """Validate a drop probability and return it as a float."""
    if type(p) is float and 0.0 < p < 1.0 and (constraint is PROB or constraint is PROB_OPEN_RIGHT):  # the usual rate
        return p
    return float(check(where, "p", p, constraint))


def all_within(t, c: Interval) -> bool:
    """Every element of the floating tensor ``t`` satisfies ``c`` (NaN never does).

    A per-member strength is short and checked on every training step: as Python
    floats that costs microseconds, where a chain of tensor ops costs tens of them.
    """
    import torch

    t = t.detach()
    if t.numel() <= 4096 and t.device.type == "cpu":
        return all(c.contains(v) for v in t.tolist())
    lo = t >= c.lo if c.closed in ("both", "left") else t > c.lo
    hi = t <= c.hi if c.closed in ("both", "right") else t < c.hi
    return bool(torch.all(lo & hi & ~torch.isnan(t)))

