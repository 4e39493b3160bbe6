"""Statistics over seeds: t-intervals, paired t-tests, Holm correction, ratios.

Pure functions on plain sequences of floats (one value per seed). A study runs every
arm with the same seeds (same initialisation and data order), so arms are compared
*paired by seed*: the difference arm − baseline is computed per seed and the
t-interval and t-test are taken over those differences (Student 1908; scipy's
``ttest_rel``). Several arms against one baseline are a family of tests: their
p-values are adjusted with Holm's step-down method (Holm 1979), which controls the
family-wise error rate without assuming independence.

With one seed there is no spread, so no interval and no p-value: the functions
return ``None`` for them instead of inventing one.

Examples:
    >>> e = mean_ci([0.70, 0.72, 0.74])
    >>> round(e.mean, 3), round(e.low, 3), round(e.high, 3), e.n
    (0.72, 0.67, 0.77, 3)
    >>> t = paired_test([0.75, 0.78, 0.74], [0.70, 0.72, 0.71])
    >>> round(t.diff.mean, 3), round(t.p, 4)
    (0.047, 0.0339)
    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _sp

__all__ = ["Estimate", "PairedTest", "mean_ci", "paired_test", "pair_by_seed", "holm", "ratio", "finite"]


@dataclass(frozen=True)
class Estimate:
    """Mean of ``n`` values with a two-sided t-interval; ``low``/``high``/``sd`` are None when n < 2."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    sd: float | None
    confidence: float = 0.95

    @property
    def has_ci(self) -> bool:
        return self.low is not None

    def covers(self, value: float) -> bool | None:
        """Whether the interval contains ``value`` (None without an interval)."""
        return None if not self.has_ci else self.low <= value <= self.high

    def scaled(self, k: float) -> Estimate:
        """The same estimate in other units (e.g. ``k=100`` for percentage points)."""
        f = (lambda v: None if v is None else v * k)
        return Estimate(f(self.mean), f(self.low), f(self.high), self.n, f(self.sd) if k >= 0 else None,
                        self.confidence)

    def clipped(self, lo: float, hi: float) -> Estimate:
        """The interval cut to a quantity's range (an accuracy lies in [0, 1]; coverage is unchanged).

        Examples:
            >>> mean_ci([0.9, 0.99]).clipped(0.0, 1.0).high
            1.0
        """
        if not self.has_ci:
            return self
        return Estimate(self.mean, max(self.low, lo), min(self.high, hi), self.n, self.sd, self.confidence)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n, "sd": self.sd}


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison ``x − y`` over seeds: the mean difference with its interval and p-value."""

    diff: Estimate
    t: float | None
    p: float | None
    seeds: tuple = ()

    @property
    def n(self) -> int:
        return self.diff.n


def finite(values) -> list[float]:
    """The values that are real finite numbers (None and NaN are dropped).

    Examples:
        >>> finite([1.0, None, float("nan"), 2])
        [1.0, 2.0]
    """
    return [float(v) for v in values if v is not None and math.isfinite(v)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Mean and two-sided t-interval: mean ± t_{(1+c)/2, n−1} · sd/√n (sd with n − 1).

    None and NaN values are ignored. With no values the mean is None; with one value
    there is no interval (``low``/``high``/``sd`` are None).

    Examples:
        >>> mean_ci([2.0, 4.0]).low < 3.0 < mean_ci([2.0, 4.0]).high
        True
        >>> mean_ci([5.0])
        Estimate(mean=5.0, low=None, high=None, n=1, sd=None, confidence=0.95)
        >>> mean_ci([]).mean is None
        True
    """
    xs = finite(values)
    n = len(xs)
    if n == 0:
        return Estimate(None, None, None, 0, None, confidence)
    m = math.fsum(xs) / n
    if n == 1:
        return Estimate(m, None, None, 1, None, confidence)
    sd = math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (n - 1))
    half = float(_sp.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(m, m - half, m + half, n, sd, confidence)


def paired_test(x: Sequence[float], y: Sequence[float], confidence: float = 0.95,
                seeds: Sequence = ()) -> PairedTest:
    """Paired t-test of ``x − y`` (equal-length sequences, aligned by seed).

    t = mean(d) / (sd(d)/√n) with n − 1 degrees of freedom, two-sided p-value; the same
    numbers as ``scipy.stats.ttest_rel(x, y)``. When every difference is equal there is
    no spread: p is 1 if they are all 0 and 0 otherwise (a constant, non-zero shift).
    Pairs where either value is None or NaN are dropped.

    Examples:
        >>> paired_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p
        1.0
        >>> paired_test([1.0], [0.5]).p is None
        True
        >>> paired_test([1.0, 2.0], [0.5])
        Traceback (most recent call last):
        ...
        ValueError: paired_test: y must be as long as x (2), got 1 values
    """
    if len(x) != len(y):
        raise ValueError(f"paired_test: y must be as long as x ({len(x)}), got {len(y)} values")
    keep = [i for i in range(len(x)) if finite([x[i]]) and finite([y[i]])]
    d = [float(x[i]) - float(y[i]) for i in keep]
    seeds = tuple(seeds[i] for i in keep) if seeds else tuple(keep)
    est = mean_ci(d, confidence)
    if est.n < 2:
        return PairedTest(est, None, None, seeds)
    if est.sd == 0.0:
        return PairedTest(est, None if est.mean == 0 else math.copysign(math.inf, est.mean),
                          1.0 if est.mean == 0 else 0.0, seeds)
    t = est.mean / (est.sd / math.sqrt(est.n))
    p = float(2 * _sp.t.sf(abs(t), est.n - 1))
    return PairedTest(est, t, min(p, 1.0), seeds)


def pair_by_seed(a: Mapping, b: Mapping) -> tuple[list, list[float], list[float]]:
    """Align two ``{seed: value}`` maps on their common seeds (sorted).

    Examples:
        >>> pair_by_seed({0: 1.0, 1: 2.0, 2: 3.0}, {2: 30.0, 0: 10.0})
        ([0, 2], [1.0, 3.0], [10.0, 30.0])
    """
    seeds = sorted(set(a) & set(b))
    return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm step-down adjusted p-values (None entries are kept and not counted).

    Sort the m p-values ascending; the k-th smallest (k = 0…m−1) becomes
    max_{j ≤ k} min(1, (m − j)·p_(j)). Reject at level α where the adjusted p < α.

    Examples:
        >>> holm([0.01, 0.02, 0.03, 0.04])
        [0.04, 0.06, 0.06, 0.06]
        >>> holm([None, 0.5, 0.01])
        [None, 0.5, 0.02]
        >>> holm([])
        []
    """
    idx = sorted((i for i, p in enumerate(pvalues) if p is not None), key=lambda i: pvalues[i])
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for k, i in enumerate(idx):
        running = max(running, min(1.0, (m - k) * pvalues[i]))
        out[i] = round(running, 15)
    return out


def ratio(num: float | None, den: float | None) -> float | None:
    """``num / den``, or None when either is missing or ``den`` is 0.

    Examples:
        >>> ratio(1.8, 1.0), ratio(1.0, 0.0), ratio(None, 2.0)
        (1.8, None, None)
    """
    if num is None or den is None or den == 0 or not math.isfinite(num) or not math.isfinite(den):
        return None
    return num / den
