"""The worst pairs of a run, recomputed with their score maps, overlap masks and renders for the report.

met3r-eval keeps per-pair numbers only (sequences.jsonl, pairs.csv), not maps or renders: a 256x256
feature render is megabytes per pair. So at the end of a run the K least consistent pairs are scored
again through the front door (:func:`met3r_metrics.functional.score_views` with ``return_maps`` and
``return_renders``) and their pictures go into ``report.html`` only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from met3r_metrics.functional import score_views
from met3r_metrics.known_geometry import KnownGeometry
from met3r_metrics.settings import Settings

from .images import colormap, data_uri, mask_image, renders_rgb, rgb_image

__all__ = ["PairPictures", "rank_worst_pairs", "worst_pair_pictures"]

#: name -> (views (V, 3, H, W) float in [0, 1], known cameras (1, V, H, W) or None)
ViewLoader = Callable[[str], "tuple[torch.Tensor, KnownGeometry | None]"]


@dataclass
class PairPictures:
    """One pair's numbers (from the run's records) and pictures (``data:`` URIs, label -> URI)."""

    sequence: str
    i: int
    j: int
    score: float
    overlap: float | None
    rescored: float
    pictures: dict[str, str]


def rank_worst_pairs(records: Sequence[dict[str, Any]], k: int, higher_is_better: bool) -> list[tuple[str, int, int, float, float | None]]:
    """The ``k`` least consistent scored pairs: (sequence, i, j, score, overlap), worst first (ties: input order)."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = []
    for r in records:
        if r.get("status") != "ok":
            continue
        for (i, j), s, o in zip(r["pairs"], r["pair_scores"], r["overlap"]):
            if s is not None and math.isfinite(s):
                ranked.append((r["sequence"], int(i), int(j), float(s), o))
    ranked.sort(key=lambda t: -sign * t[3])  # stable: equal scores keep the records' order
    return ranked[:k]


def worst_pair_pictures(
    records: Sequence[dict[str, Any]], k: int, settings: Settings, views_of: ViewLoader, scorer: Any,
) -> list[PairPictures]:
    """Rescore the ``k`` worst pairs of ``records`` with ``scorer`` and draw frames, renders, score map, mask."""
    info = settings.distance_info
    worst = rank_worst_pairs(records, k, info.higher_is_better)
    by_sequence: dict[str, list[tuple[int, int]]] = {}
    for name, i, j, *_ in worst:  # each sequence is read once and its pairs scored in one call
        by_sequence.setdefault(name, []).append((i, j))
    outputs: dict[tuple[str, int, int], tuple] = {}
    for name, pairs in by_sequence.items():
        views, geometry = views_of(name)
        with torch.no_grad():
            out = score_views(views.unsqueeze(0).to(scorer.device), settings, normalize=True, scorer=scorer,
                              pairs=pairs, return_maps=True, return_renders=True,
                              geometry=None if geometry is None else geometry.to(scorer.device))
        for k, (i, j) in enumerate(pairs):
            outputs[(name, i, j)] = (float(out.pair_scores[0, k]), views[i], views[j],
                                     out.score_maps[0, k].float().cpu().numpy(), out.overlap_masks[0, k].cpu().numpy() > 0,
                                     out.renders[0, k].cpu() if out.renders is not None else None)
    scored = [(name, i, j, score, overlap, *outputs[(name, i, j)]) for name, i, j, score, overlap in worst]
    # one colour scale for every map, so that rows compare: up to the 99th percentile of covered pixels
    covered = np.concatenate([smap[mask & np.isfinite(smap)] for *_, smap, mask, _ in scored]) if scored else np.zeros(0)
    vmin = info.lower_bound if info.lower_bound is not None else 0.0
    vmax = max(float(np.percentile(covered, 99)) if covered.size else 1.0, vmin + 1e-6)
    result = []
    for name, i, j, score, overlap, rescored, v1, v2, smap, mask, renders in scored:
        pics = {f"frame {i}": data_uri(rgb_image(v1)), f"frame {j}": data_uri(rgb_image(v2))}
        if renders is not None:
            r1, r2 = renders_rgb(renders)
            pics[f"render of {i} in view {i}"], pics[f"render of {j} in view {i}"] = data_uri(r1), data_uri(r2)
        pics[f"score map ({info.label})"] = data_uri(colormap(smap, mask, vmin, vmax))
        pics[f"overlap mask ({mask.mean():.0%})"] = data_uri(mask_image(mask))
        result.append(PairPictures(name, i, j, score, overlap, rescored, pics))
    return result
