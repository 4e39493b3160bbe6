"""What ``regulab doctor`` reports: one :class:`Finding` per problem, with a fix.

A finding has a severity (``error`` makes the CLI exit 1; ``warning`` and
``info`` do not), a stable ``code`` that tests and scripts can match, the
module it is about, a one-paragraph message, a concrete fix, and the
measured numbers behind it in ``details``.

Examples:
    >>> f = Finding("warning", "dropout-p-high", "net.drop", "p=0.9 drops 90% of units", "use p <= 0.5")
    >>> print(format_findings([f]))
    warning [dropout-p-high] net.drop: p=0.9 drops 90% of units
      fix: use p <= 0.5
    1 finding: 0 errors, 1 warning, 0 info
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .._validate import OneOf, check, register

__all__ = ["Finding", "SEVERITIES", "format_findings", "findings_to_json", "has_errors"]

SEVERITIES = ("error", "warning", "info")
_SEVERITY = register("Finding", "severity", OneOf(SEVERITIES))


@dataclass(frozen=True)
class Finding:
    """One problem found in a model.

    Args:
        severity: ``"error"`` (wrong results in eval/training), ``"warning"``
            (legal but likely harmful) or ``"info"``.
        code: stable identifier, e.g. ``"functional-dropout-training"``.
        where: qualified module name (``""`` is the model itself).
        message: what is wrong, with the numbers.
        fix: what to change.
        details: measured values (JSON-serialisable).
    """

    severity: str
    code: str
    where: str
    message: str
    fix: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check("Finding", "severity", self.severity, _SEVERITY)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_errors(findings: list[Finding]) -> bool:
    """True when any finding is error-level (the CLI then exits 1)."""
    return any(f.severity == "error" for f in findings)


def _sorted(findings: list[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: SEVERITIES.index(f.severity))


def format_findings(findings: list[Finding]) -> str:
    """Human-readable report: one block per finding, errors first, then a summary line."""
    lines = []
    for f in _sorted(findings):
        where = f.where or "<model>"
        lines.append(f"{f.severity} [{f.code}] {where}: {f.message}")
        lines.append(f"  fix: {f.fix}")
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    n = len(findings)
    if n == 0:
        lines.append("no findings: eval is deterministic and no risky dropout placement was seen")
    else:
        lines.append(
            f"{n} finding{'s' if n != 1 else ''}: {counts['error']} error{'s' if counts['error'] != 1 else ''}, "
            f"{counts['warning']} warning{'s' if counts['warning'] != 1 else ''}, {counts['info']} info"
        )
    return "\n".join(lines)


def findings_to_json(findings: list[Finding]) -> str:
    """JSON document ``{"findings": [...], "errors": n, "warnings": n, "infos": n}``."""
    return json.dumps(
        {
            "findings": [f.to_dict() for f in _sorted(findings)],
            "errors": sum(f.severity == "error" for f in findings),
            "warnings": sum(f.severity == "warning" for f in findings),
            "infos": sum(f.severity == "info" for f in findings),
        },
        indent=2,
    )
