"""met3r_metrics.report.stats against independent computations: exact bootstrap distributions, a slow
pure-Python bootstrap with another generator, the normal approximation, and summary.json's interval."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from met3r_metrics.cli.results import bootstrap_ci95
from met3r_metrics.report.stats import bootstrap_interval, paired_interval


def _slow_bootstrap(values, resamples, seed, level=0.95):
    """Reference: a loop over resamples with Python's own generator, numpy's linear-interpolation quantile."""
    rng = random.Random(seed)
    n = len(values)
    means = [math.fsum(values[rng.randrange(n)] for _ in range(n)) / n for _ in range(resamples)]
    return np.quantile(means, [(1 - level) / 2, (1 + level) / 2])


def _binomial_quantile(n: int, p: float, q: float) -> int:
    """Smallest x with P(Binomial(n, p) <= x) >= q."""
    cdf = 0.0
    for x in range(n + 1):
        cdf += math.comb(n, x) * p**x * (1 - p) ** (n - x)
        if cdf >= q - 1e-12:
            return x
    return n


def test_the_report_interval_is_the_summary_interval():
    """report.html shows summary.json's met3r_ci95: the same resamples, seed and chunking give the same numbers."""
    values = [0.02 + 0.013 * ((7 * k) % 11) for k in range(37)]
    iv = bootstrap_interval(values)
    assert [iv.low, iv.high] == bootstrap_ci95(values)
    assert iv.mean == pytest.approx(sum(values) / len(values), abs=1e-15)
    assert (iv.n, iv.resamples, iv.seed, iv.level) == (37, 2000, 0, 0.95)
    assert "2000 resamples" in iv.method() and "seed 0" in iv.method()


@pytest.mark.parametrize("n,k", [(20, 5), (40, 30)])
def test_paired_interval_follows_the_exact_bootstrap_distribution(n, k):
    """Differences that are 0 or 1 (k ones of n): each resampled mean is Binomial(n, k/n) / n, whatever
    the per-sequence offsets the two methods share, so the interval ends sit at the binomial quantiles."""
    rng = np.random.default_rng(n)
    offsets = rng.uniform(0, 5, n)  # large shared difficulty per sequence: cancels in a paired comparison
    ones = rng.permutation([1.0] * k + [0.0] * (n - k))
    a, b = offsets + ones, offsets
    iv = paired_interval(list(a), list(b), resamples=20000, seed=3)
    lo_x, hi_x = _binomial_quantile(n, k / n, 0.025), _binomial_quantile(n, k / n, 0.975)
    assert abs(iv.low * n - lo_x) <= 1.0 and abs(iv.high * n - hi_x) <= 1.0, (iv, lo_x, hi_x)
    assert iv.mean == pytest.approx(k / n)


def test_interval_matches_a_slow_reference_bootstrap():
    rng = np.random.default_rng(1)
    values = list(rng.gamma(2.0, 0.02, 60))  # skewed, positive, like MEt3R scores
    ours = bootstrap_interval(values, resamples=4000, seed=0)
    ref = _slow_bootstrap(values, 4000, seed=12345)
    se = np.std(values, ddof=1) / math.sqrt(len(values))
    # two Monte-Carlo estimates of the same quantiles: each within ~0.05 standard errors; allow 0.25
    assert abs(ours.low - ref[0]) < 0.25 * se and abs(ours.high - ref[1]) < 0.25 * se, (ours, ref, se)


def test_interval_of_a_normal_sample_is_close_to_mean_pm_1_96_se():
    rng = np.random.default_rng(2)
    values = list(rng.normal(0.05, 0.01, 400))
    iv = bootstrap_interval(values, resamples=5000, seed=1)
    half = 1.96 * np.std(values, ddof=1) / math.sqrt(400)
    assert (iv.high - iv.low) / 2 == pytest.approx(half, rel=0.1)
    assert (iv.high + iv.low) / 2 == pytest.approx(np.mean(values), abs=0.15 * half)


def test_paired_interval_sees_a_difference_the_separate_intervals_hide():
    """Method B is 0.01 worse on every sequence; scenes vary by 0.1. The two methods' own intervals overlap,
    the paired interval of B - A is narrow around 0.01 and excludes 0."""
    rng = np.random.default_rng(4)
    scene = rng.uniform(0.02, 0.12, 50)
    a = scene + rng.normal(0, 0.001, 50)
    b = scene + 0.01 + rng.normal(0, 0.001, 50)
    ia, ib = bootstrap_interval(list(a)), bootstrap_interval(list(b))
    assert ia.high > ib.low  # overlapping: unpaired, no conclusion
    d = paired_interval(list(b), list(a))
    assert 0 < d.low < 0.01 < d.high < 0.011 and d.high - d.low < 0.002
    assert d.mean == pytest.approx(float(np.mean(b - a)))


def test_seed_and_resamples_are_honoured():
    values = [0.1, 0.3, 0.2, 0.5, 0.05, 0.4]
    first = bootstrap_interval(values, resamples=500, seed=7)
    assert bootstrap_interval(values, resamples=500, seed=7) == first  # reproducible
    assert bootstrap_interval(values, resamples=500, seed=8) != first
    assert first.resamples == 500 and first.seed == 7


def test_small_samples_and_bad_arguments():
    one = bootstrap_interval([0.3])
    assert (one.mean, one.low, one.high, one.n) == (0.3, None, None, 1)
    assert bootstrap_interval([]).mean is None
    with pytest.raises(ValueError, match=r"values: expected finite numbers, got nan"):
        bootstrap_interval([0.1, float("nan")])
    with pytest.raises(ValueError, match=r"b: expected as many values as a \(2, matched by sequence\), got 1"):
        paired_interval([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match=r"resamples: expected an int >= 1, got 0"):
        bootstrap_interval([0.1, 0.2], resamples=0)
    with pytest.raises(ValueError, match=r"level: expected a number in \(0, 1\), got 1.5"):
        bootstrap_interval([0.1, 0.2], level=1.5)
