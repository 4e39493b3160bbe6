"""Plain-language verdicts: one sentence per arm, honest about uncertainty.

A difference is called significant only when its Holm-adjusted paired p-value is
below :data:`~regulab.report.tables.ALPHA`; otherwise the sentence says "no significant
difference" and still gives the estimate and its interval. Accuracy differences are in
percentage points; the interval is the paired 95% t-interval over seeds.

Examples:
    >>> signed(2.14), signed(-0.4), signed(0.0)
    ('+2.1', '−0.4', '±0.0')
    >>> fmt_p(0.0042), fmt_p(0.00001), fmt_p(0.61)
    ('p=0.004', 'p<0.001', 'p=0.61')
"""
from __future__ import annotations

from dataclasses import dataclass

from .tables import ALPHA, Analysis, ArmStats

__all__ = ["Verdict", "verdict", "verdicts", "signed", "pts", "fmt_p", "fmt_ci"]


@dataclass(frozen=True)
class Verdict:
    arm: str
    text: str        # the whole sentence, starting with the arm's name
    tone: str        # "better", "worse", "same", "baseline", "none" (for colour in the report)


def signed(x: float, nd: int = 1) -> str:
    """A number with an explicit sign (typographic minus)."""
    s = f"{abs(x):.{nd}f}"
    if float(s) == 0:
        return f"±{s}"
    return ("+" if x > 0 else "−") + s


def pts(x: float) -> str:
    """Whole percentage points (no "-0").

    Examples:
        >>> pts(0.312), pts(-0.001)
        ('31', '0')
    """
    return str(int(round(100 * x)))


def fmt_p(p: float) -> str:
    if p < 0.001:
        return "p<0.001"
    return f"p={p:.3f}" if p < 0.01 else f"p={p:.2f}"


def fmt_ci(low: float, high: float, k: float = 100, nd: int = 1, sign: bool = True) -> str:
    f = (lambda v: signed(v * k, nd)) if sign else (lambda v: f"{v * k:.{nd}f}")
    return f"95% CI {f(low)}…{f(high)}"


def _acc(a: ArmStats) -> str:
    e = a.test_acc
    seeds = f"{e.n} seed" + ("s" if e.n != 1 else "")
    if not e.has_ci:
        return f"{100 * e.mean:.1f} % test accuracy ({seeds}: no confidence interval)"
    return f"{100 * e.mean:.1f} % test accuracy ({fmt_ci(e.low, e.high, sign=False)}, {seeds})"


def _comparison(a: ArmStats) -> tuple[str, str]:
    t = a.acc_vs_base
    d = t.diff
    pts = f"{signed(100 * d.mean)} points test accuracy"
    if not d.has_ci:
        return f"{pts} vs {a.baseline} (1 seed: no confidence interval or p-value)", "none"
    inner = f"{fmt_ci(d.low, d.high)}, {fmt_p(a.p_holm)} vs {a.baseline}"
    if a.significant:
        return f"{pts} ({inner})", "better" if d.mean > 0 else "worse"
    after = " after Holm correction" if t.p is not None and t.p < ALPHA else ""
    return f"no significant difference in test accuracy{after} ({signed(100 * d.mean)} points, {inner})", "same"


def _noise(r: float) -> str:
    if r >= 1.05:
        return f"training loss {r:.1f}x noisier"
    if r <= 0.95:
        return f"training loss {r:.1f}x as noisy"
    return "training loss about as noisy"


def _excluded(a: ArmStats) -> str:
    if not a.failed:
        return ""
    reasons = sorted({f["reason"] for f in a.failed})
    return (f"; {len(a.failed)} of {a.runs} runs excluded ({'; '.join(reasons)})")


def verdict(a: ArmStats) -> Verdict:
    """The sentence for one arm (see the module docstring)."""
    if not a.seeds:
        return Verdict(a.arm, f"{a.arm}: no finished runs{_excluded(a)}", "none")
    parts: list[str] = []
    if a.is_baseline or a.acc_vs_base is None:
        parts.append(_acc(a))
        tone = "baseline" if a.is_baseline else "none"
        if a.acc_gap.mean is not None:
            parts.append(f"gap {pts(a.acc_gap.mean)} points (clean train − test accuracy)")
        if not a.is_baseline:
            parts.append("no baseline to compare with")
    else:
        text, tone = _comparison(a)
        parts.append(text)
        if a.noise_ratio is not None:
            parts.append(_noise(a.noise_ratio))
        if a.base_gap is not None and a.base_gap.mean is not None and a.acc_gap.mean is not None:
            parts.append(f"gap {pts(a.base_gap.mean)} → {pts(a.acc_gap.mean)} points")
    return Verdict(a.arm, f"{a.arm}: " + "; ".join(parts) + _excluded(a), tone)


def verdicts(an: Analysis) -> list[Verdict]:
    """One :class:`Verdict` per arm, in the study's order."""
    return [verdict(a) for a in an.arms]
