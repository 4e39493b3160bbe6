"""regulab.analysis.stats against scipy.stats and hand computations on known inputs."""
import math

import numpy as np
import pytest
from scipy import stats

from regulab.analysis.stats import Estimate, finite, holm, mean_ci, pair_by_seed, paired_test, ratio

SAMPLES = [
    [0.70, 0.72, 0.74],
    [0.61, 0.65],
    [1.0, 2.0, 4.0, 8.0, 16.0],
    list(np.random.default_rng(0).normal(0.5, 0.1, 10)),
]


@pytest.mark.parametrize("xs", SAMPLES)
@pytest.mark.parametrize("conf", [0.9, 0.95, 0.99])
def test_mean_ci_matches_scipy_t_interval(xs, conf):
    e = mean_ci(xs, conf)
    lo, hi = stats.t.interval(conf, len(xs) - 1, loc=np.mean(xs), scale=stats.sem(xs))
    assert e.mean == pytest.approx(np.mean(xs), rel=1e-12)
    assert (e.low, e.high) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    assert e.sd == pytest.approx(np.std(xs, ddof=1), rel=1e-12)
    assert e.n == len(xs) and e.covers(e.mean)


def test_mean_ci_known_numbers():
    # n = 2: t_{0.975, 1} = 12.706204736...; mean 3, sd √2, half = 12.7062·√2/√2
    e = mean_ci([2.0, 4.0])
    assert stats.t.ppf(0.975, 1) == pytest.approx(12.706204736174698)
    assert (e.low, e.high) == (pytest.approx(3 - 12.706204736174698), pytest.approx(3 + 12.706204736174698))


def test_mean_ci_one_seed_and_missing_values():
    assert mean_ci([0.5]) == Estimate(0.5, None, None, 1, None)
    assert not mean_ci([0.5]).has_ci and mean_ci([0.5]).covers(0.5) is None
    assert mean_ci([None, float("nan")]).mean is None
    assert mean_ci([1.0, None, 3.0]).n == 2
    assert finite([1, None, float("inf"), 2.5]) == [1.0, 2.5]


PAIRS = [
    ([0.75, 0.78, 0.74], [0.70, 0.72, 0.71]),
    ([0.61, 0.65], [0.66, 0.62]),
    (list(np.random.default_rng(1).normal(0.6, 0.05, 8)), list(np.random.default_rng(2).normal(0.6, 0.05, 8))),
]


@pytest.mark.parametrize("x, y", PAIRS)
def test_paired_test_matches_scipy_ttest_rel(x, y):
    r = paired_test(x, y)
    ref = stats.ttest_rel(x, y)
    assert r.t == pytest.approx(ref.statistic, rel=1e-10)
    assert r.p == pytest.approx(ref.pvalue, rel=1e-10)
    d = np.subtract(x, y)
    lo, hi = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert (r.diff.low, r.diff.high) == (pytest.approx(lo, rel=1e-10), pytest.approx(hi, rel=1e-10))
    # the interval excludes 0 exactly when p < 0.05
    assert (r.p < 0.05) == (not r.diff.covers(0.0))


def test_paired_test_degenerate_cases():
    same = paired_test([0.5, 0.6], [0.5, 0.6])
    assert same.p == 1.0 and same.diff.mean == 0.0
    shift = paired_test([0.6, 0.7], [0.5, 0.6])
    assert shift.p == 0.0 and shift.diff.mean == pytest.approx(0.1)
    one = paired_test([0.6], [0.5])
    assert one.p is None and one.t is None and not one.diff.has_ci and one.diff.mean == pytest.approx(0.1)
    # a pair with a missing value is dropped, seeds follow
    r = paired_test([0.6, None, 0.7, 0.9], [0.5, 0.5, 0.65, 0.7], seeds=[10, 11, 12, 13])
    assert r.n == 3 and r.seeds == (10, 12, 13)
    with pytest.raises(ValueError, match="paired_test: y must be as long as x"):
        paired_test([1.0], [1.0, 2.0])


def test_pair_by_seed_uses_common_seeds():
    assert pair_by_seed({0: 1, 1: 2, 2: 3}, {1: 20, 2: 30, 5: 50}) == ([1, 2], [2, 3], [20, 30])
    assert pair_by_seed({}, {0: 1}) == ([], [], [])


def _holm_by_hand(ps):
    """Reference: Holm (1979) written out as a loop over the sorted p-values."""
    m = len(ps)
    order = sorted(range(m), key=lambda i: ps[i])
    adj = [0.0] * m
    prev = 0.0
    for rank, i in enumerate(order):
        prev = max(prev, min(1.0, (m - rank) * ps[i]))
        adj[i] = prev
    return adj


@pytest.mark.parametrize("ps", [
    [0.01, 0.04, 0.03, 0.005],
    [0.5, 0.5, 0.5],
    [0.001],
    list(np.random.default_rng(3).uniform(0, 0.2, 9)),
])
def test_holm_matches_hand_computation(ps):
    assert holm(ps) == pytest.approx(_holm_by_hand(ps), abs=1e-14)


def test_holm_known_values_and_rejections():
    # textbook example: p = .01, .04, .03, .005 -> .03, .06, .06, .02 (m = 4)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # step-down: at alpha .05 only the two smallest are rejected
    assert [p < 0.05 for p in holm([0.01, 0.04, 0.03, 0.005])] == [True, False, False, True]
    assert holm([None, 0.2, None]) == [None, 0.2, None]
    assert all(p <= 1.0 for p in holm([0.9, 0.8, 0.7]))


def test_ratio():
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(1.0, 0.0) is None and ratio(None, 1.0) is None and ratio(1.0, math.nan) is None
