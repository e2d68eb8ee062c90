"""``met3r-eval``'s scoring loop: one sequence through the front door, in chunks of pairs.

Each chunk is one :func:`met3r_metrics.functional.score_views` call on the whole sequence with the
chunk's pairs: every frame a chunk needs is encoded once for that chunk, and a pair's score does not
depend on the chunk size, the batch size or how sequences are spread over processes (to float
rounding of the network batches, ~1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from met3r_metrics.functional import score_views
from met3r_metrics.known_geometry import KnownGeometry
from met3r_metrics.scorer import MEt3RScorer
from met3r_metrics.settings import Settings

__all__ = ["PairResults", "score_sequence", "finite_mean", "PAIRS_PER_CALL"]

#: pairs per front-door call: bounds the per-pair maps held at once, sets the progress granularity
PAIRS_PER_CALL = 64


@dataclass
class PairResults:
    """Scores of a list of pairs: ``scores``/``overlap`` (P,) with NaN = no overlap; maps (P, h, w) optional."""

    scores: list[float]
    overlap: list[float]
    score_maps: torch.Tensor | None = None
    masks: torch.Tensor | None = None


@torch.no_grad()
def score_sequence(
    views: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    settings: Settings,
    scorer: MEt3RScorer,
    *,
    normalize: bool = True,
    return_maps: bool = False,
    progress: Any = None,
    geometry: KnownGeometry | None = None,
) -> PairResults:
    """Score ``pairs`` of one sequence ``views`` (V, 3, H, W) (uint8, or float in the ``normalize`` convention),
    under its known cameras ``geometry`` (1, V, H, W) when given."""
    scores: list[float] = []
    overlap: list[float] = []
    maps: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    images = views.to(scorer.device).unsqueeze(0)
    if geometry is not None:
        geometry = geometry.to(scorer.device)
    for start in range(0, len(pairs), PAIRS_PER_CALL):
        chunk = [(int(i), int(j)) for i, j in pairs[start : start + PAIRS_PER_CALL]]
        out = score_views(images, settings, normalize=normalize, scorer=scorer, pairs=chunk, return_maps=return_maps,
                          geometry=geometry)
        scores.extend(float(x) for x in out.pair_scores[0].float().cpu())
        overlap.extend(float(x) for x in out.overlap[0].float().cpu())
        if return_maps:
            maps.append(out.score_maps[0].float().cpu())
            masks.append(out.overlap_masks[0].float().cpu())
        if progress is not None:
            progress.update(len(chunk))
    return PairResults(
        scores=scores,
        overlap=overlap,
        score_maps=torch.cat(maps) if maps else None,
        masks=torch.cat(masks) if masks else None,
    )


def finite_mean(values: Sequence[float]) -> float | None:
    """Mean of the finite values (NaN = zero-overlap pairs are excluded), ``None`` if none."""
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else None
