"""Stage: per-pixel distance maps of the two aligned views of each pair -> masked per-pair scores.

Entry point :func:`score_pairs` (the formulas are :mod:`met3r_metrics.distances`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..distances import pair_scores
from ..settings import Settings

__all__ = ["score_pairs"]


def score_pairs(first: Tensor, second: Tensor, mask: Tensor, settings: Settings, lpips: Any | None = None) -> dict[str, Tensor]:
    """Score directed pairs from their two aligned views.

    Args:
        first, second: (n, C, h, w) view a and view b brought onto view a (renders with non-covered pixels 0,
            or view a and the warped view b).
        mask: (n, h, w) bool, where both views have content (the overlap / validity mask).
        settings: ``distance``, ``cosine_eps``, ``mask_eps``, ``rgb_formulas``.
        lpips: the LPIPS network for ``distance="lpips"``.

    Returns:
        dict with ``score`` (n,) (the official formula: 0 on an empty mask), ``score_map`` (n, h, w),
        ``overlap_mask`` (n, h, w) and ``overlap`` (n,) the fraction of pixels in it.

    >>> import torch
    >>> from met3r_metrics import Settings
    >>> a = torch.ones(1, 3, 2, 2)
    >>> mask = torch.tensor([[[True, True], [False, False]]])
    >>> out = score_pairs(a, -a, mask, Settings.official())
    >>> round(out["score"].item(), 4), out["overlap"].item()  # 1 - cos = 2 on the two masked pixels
    (2.0, 0.5)
    """
    s = settings
    score, score_map = pair_scores(first, second, mask, s.distance, cosine_eps=s.cosine_eps, mask_eps=s.mask_eps,
                                   rgb_formulas=s.rgb_formulas, lpips=lpips)
    return {"score": score, "score_map": score_map, "overlap_mask": mask, "overlap": mask.float().mean((-2, -1))}
