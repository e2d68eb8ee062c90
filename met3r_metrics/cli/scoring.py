"""``met3r-eval``'s scoring loop: one sequence through the front door, in chunks of pairs.

Each chunk is one :func:`met3r_metrics.functional.score_views` call on the whole sequence with the
chunk's pairs: every frame a chunk needs is encoded once for that chunk, and a pair's score does not
depend on the chunk size, the batch size or how sequences are spread over processes (to float
rounding of the network batches, ~1e-6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
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
    done: PairResults | None = None,
    on_window: Callable[[int, list[float], list[float]], None] | None = None,
) -> PairResults:
    """Score ``pairs`` of one sequence ``views`` (V, 3, H, W) (uint8, or float in the ``normalize`` convention),
    under its known cameras ``geometry`` (1, V, H, W) when given.

    The pairs are scored in windows of :data:`PAIRS_PER_CALL` (window k: pairs ``k*PAIRS_PER_CALL ...``).
    ``done``: the scores of the first windows, from an interrupted run (a whole number of windows): scoring
    resumes after them, and since every window is the same call as in an uninterrupted run, the numbers are
    the same (bitwise on CPU). ``on_window(start, scores, overlap)`` is called after each newly scored window
    (the checkpoint: met3r-eval appends it to the sequence's partial file).
    """
    scores: list[float] = list(done.scores) if done is not None else []
    overlap: list[float] = list(done.overlap) if done is not None else []
    if (len(scores) % PAIRS_PER_CALL and len(scores) != len(pairs)) or len(scores) > len(pairs) or len(overlap) != len(scores) or (return_maps and scores):
        raise ValueError(f"done: expected whole windows of {PAIRS_PER_CALL} pairs (without maps) of the {len(pairs)} "
                         f"pairs, got {len(scores)} scores")
    if progress is not None and scores:
        progress.update(len(scores))
    maps: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    images = views.to(scorer.device).unsqueeze(0)
    if geometry is not None:
        geometry = geometry.to(scorer.device)
    for start in range(len(scores), len(pairs), PAIRS_PER_CALL):
        chunk = [(int(i), int(j)) for i, j in pairs[start : start + PAIRS_PER_CALL]]
        out = score_views(images, settings, normalize=normalize, scorer=scorer, pairs=chunk, return_maps=return_maps,
                          geometry=geometry)
        window_scores = [float(x) for x in out.pair_scores[0].float().cpu()]
        window_overlap = [float(x) for x in out.overlap[0].float().cpu()]
        scores.extend(window_scores)
        overlap.extend(window_overlap)
        if on_window is not None:
            on_window(start, window_scores, window_overlap)
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
