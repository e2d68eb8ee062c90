"""Seeded bootstrap resampling of a mean: the one source of the draws behind summary.json's ``met3r_ci95``
(:func:`met3r_metrics.cli.results.bootstrap_ci95`) and the report's intervals (:mod:`met3r_metrics.report.stats`),
so the two never disagree."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["bootstrap_means"]


def bootstrap_means(values: Sequence[float], resamples: int, seed: int) -> torch.Tensor:
    """(resamples,) float64 means of ``values`` resampled with replacement (n indices per resample).

    Chunked so that memory stays bounded for large runs; the draws are the same as one
    ``torch.randint(n, (resamples, n))`` call would make only when a single chunk is used, so the
    chunking rule is part of the result.
    """
    n = len(values)
    x = torch.tensor([float(v) for v in values], dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, min(resamples, (1 << 22) // max(n, 1)))
    means = []
    for start in range(0, resamples, chunk):
        idx = torch.randint(n, (min(chunk, resamples - start), n), generator=gen)
        means.append(x[idx].mean(1))
    return torch.cat(means)
