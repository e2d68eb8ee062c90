"""Bootstrap statistics of run results: the interval of a mean, and of a paired mean difference.

Both are percentile bootstraps driven by a seeded ``torch.Generator``, so every process and every
re-run gives the same numbers; the resample count and seed travel with each result
(:class:`Interval`) and are printed next to it in the report and the comparison tables.
With ``resamples=2000, seed=0`` :func:`bootstrap_interval` is the interval ``summary.json`` records
(``met3r_ci95``), so a report and its summary never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from met3r_metrics.bootstrap import bootstrap_means

__all__ = ["RESAMPLES", "SEED", "LEVEL", "Interval", "bootstrap_means", "bootstrap_interval", "paired_interval"]

RESAMPLES = 2000  #: default number of bootstrap resamples
SEED = 0  #: default seed of the resampling generator
LEVEL = 0.95  #: default coverage of the intervals


@dataclass(frozen=True)
class Interval:
    """A mean with its percentile-bootstrap interval (``low``/``high`` None for fewer than 2 values)."""

    mean: float | None
    low: float | None
    high: float | None
    n: int
    resamples: int
    seed: int
    level: float

    def method(self) -> str:
        """One line saying how the interval was computed (for footnotes)."""
        return (f"{self.level:.0%} percentile bootstrap of the mean: {self.resamples} resamples, "
                f"torch.Generator seed {self.seed}")


def _check(resamples: int, seed: int, level: float) -> None:
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"resamples: expected an int >= 1, got {resamples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    if not (isinstance(level, (int, float)) and 0.0 < level < 1.0):
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")


def bootstrap_interval(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Interval:
    """Mean of ``values`` (finite floats) and its percentile-bootstrap interval.

    Raises:
        ValueError: a non-finite value, or invalid ``resamples`` / ``seed`` / ``level``.
    """
    _check(resamples, seed, level)
    vals = [float(v) for v in values]
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise ValueError(f"values: expected finite numbers, got {bad[0]!r} among {len(vals)} values")
    n = len(vals)
    mean = math.fsum(vals) / n if n else None
    if n < 2:
        return Interval(mean, None, None, n, resamples, seed, level)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(bootstrap_means(vals, resamples, seed), q).tolist()
    return Interval(mean, low, high, n, resamples, seed, level)


def paired_interval(
    a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> Interval:
    """Mean of ``a[k] - b[k]`` over matched items (the same sequences scored by two methods) and its
    paired bootstrap interval: sequences are resampled, each keeping both of its scores, so what the
    two methods share per sequence (how hard the scene is) cancels and only their difference varies.

    Raises:
        ValueError: ``a`` and ``b`` of different lengths (they must be matched item by item).
    """
    if len(a) != len(b):
        raise ValueError(f"b: expected as many values as a ({len(a)}, matched by sequence), got {len(b)}")
    return bootstrap_interval([float(x) - float(y) for x, y in zip(a, b)], resamples, seed, level)
