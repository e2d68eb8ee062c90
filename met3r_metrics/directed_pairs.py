"""The bookkeeping of the scorer's one sequence loop: directed work items, per-item records, the assembled result.

A batch of B sequences with P pairs becomes B * P directed items (2 B P when symmetric); the loop scores them
in chunks, :func:`record` keeps what is returned and frees frames no later item needs, and :func:`assemble`
turns the items back into (B, P) tensors (symmetric mean, NaN on no overlap).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import Tensor

from .settings import Settings

__all__ = ["Item", "directed_items", "record", "assemble"]

Item = tuple[int, int, int, int, int]  # (sequence, pair index, direction, view a rendered into, view b)


def directed_items(
    s: Settings, b: int, v: int, pairs: Sequence[tuple[int, int]] | Tensor | None
) -> tuple[list[tuple[int, int]], list[Item], Counter]:
    """Validated pairs, the directed work items (both directions when symmetric) and how many items use each
    (sequence, frame)."""
    if pairs is None:
        pairs = s.pairs(v)
    pair_list = [(int(i), int(j)) for i, j in (pairs.tolist() if isinstance(pairs, Tensor) else pairs)]
    for i, j in pair_list:
        if not (0 <= i < v and 0 <= j < v) or i == j:
            raise ValueError(f"pairs: expected index pairs (i, j), i != j, in [0, {v}), got ({i}, {j})")
    dirs = [0, 1] if s.symmetric else [0]
    items = [(bi, pi, d, *(pair_list[pi] if d == 0 else pair_list[pi][::-1]))
             for bi in range(b) for pi in range(len(pair_list)) for d in dirs]
    return pair_list, items, Counter((bi, fv) for bi, _, _, fa, fb in items for fv in (fa, fb))


def record(results: dict, chunk: Sequence[Item], out: dict[str, Tensor], keep: set[str], uses: Counter, cache: dict) -> None:
    """Store a chunk's per-item outputs (only what is returned: maps of long sequences would otherwise pile
    up) and free the cached frames that no later item needs."""
    kept = {k: t for k, t in out.items() if k in keep}
    for k, (bi, pi, d, fa, fb) in enumerate(chunk):
        results[(bi, pi, d)] = {name: t[k] for name, t in kept.items()}
        for key in ((bi, fa), (bi, fb)):
            uses[key] -= 1
            if uses[key] == 0:
                cache.pop(key, None)


def assemble(results: dict, s: Settings, b: int, pair_list: list[tuple[int, int]], *, return_maps: bool,
              return_renders: bool) -> dict[str, Tensor]:
    """Per directed item results -> :meth:`~met3r_metrics.scorer.MEt3RScorer.score_sequences`' dict (symmetric mean, NaN on no
    overlap, maps of both directions)."""
    num_p = len(pair_list)

    def gather(name: str, d: int) -> Tensor:
        return torch.stack([torch.stack([results[(bi, pi, d)][name] for pi in range(num_p)]) for bi in range(b)])

    fwd, overlap = gather("score", 0), gather("overlap", 0)
    empty = overlap == 0
    out: dict[str, Tensor] = {"pairs": torch.tensor(pair_list, dtype=torch.long).view(num_p, 2)}
    scores = fwd
    if s.symmetric:
        rev, overlap_r = gather("score", 1), gather("overlap", 1)
        empty = empty | (overlap_r == 0)
        scores, overlap = 0.5 * (fwd + rev), 0.5 * (overlap + overlap_r)
        out["forward_scores"], out["reverse_scores"] = fwd, rev
    if s.nan_on_no_overlap:
        scores = torch.where(empty, torch.full_like(scores, float("nan")), scores)
    out.update(pair_scores=scores, overlap=overlap, no_overlap=empty)
    if return_maps:
        out["score_maps"], out["overlap_masks"] = gather("score_map", 0), gather("overlap_mask", 0)
        if s.symmetric:
            out["score_maps_reverse"], out["overlap_masks_reverse"] = gather("score_map", 1), gather("overlap_mask", 1)
    if return_renders:
        out["renders"] = gather("renders", 0)
    return out
