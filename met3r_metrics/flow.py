"""The ``backbone="raft"`` path after the network: backward warp by an optical flow, validity mask, pair scores.

What the official MEt3R computes (``MEt3R.warp_image`` + ``_distance``, HEAD 3259e41), for a pair (view 1, view 2)
and the flow ``F`` from view 1 to view 2 (RAFT's last estimate, (N, 2, H, W), x then y, in pixels):

1. the sampling grid is ``p + F(p)`` for every pixel p of view 1, normalised as ``(x / (W - 1) * 2 - 1) +
   F_x / (W - 1) * 2`` (y alike), **clamped to [-1, 1]**; view 2's features (or RGB) are sampled there bilinearly (``align_corners=True``), so a
   target outside view 2 takes the value of the nearest border pixel;
2. the validity mask is ``grid_sample(ones, grid, padding zeros) > 0.999`` on the **clamped** grid: every pixel
   passes (a bug: out-of-view pixels are scored). ``mask="in_bounds"`` computes the same test on the grid before
   the clamp, so pixels whose flow target leaves view 2 are invalid;
3. per-pixel distance between view 1 and the warped view 2 (the distances of :mod:`met3r_metrics.distances`; no
   pixel is zeroed), score = its masked mean ``sum(S M) / (sum(M) + eps)``.

Every score here is per pair. The official ``_distance`` broadcasts the (B, 1, h, w) mask against the (B, 1, h, w)
map to (B, B, 1, h, w), so its (B, 1) result gives each pair the batch mean (golden ``met3r_extras``, cases R, F);
:func:`official_batch_mixed_score` reproduces that for the parity tests only.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .distances import pair_scores
from .settings import FLOW_MASKS

__all__ = ["FLOW_MASKS", "flow_pair_scores", "official_batch_mixed_score", "warp_backward"]

_MASK_THRESHOLD = 0.999


def _sampling_grid(flow: Tensor) -> Tensor:
    """(N, 2, H, W) pixel flow -> (N, H, W, 2) normalised grid of ``p + flow(p)`` (unclamped)."""
    n, _, h, w = flow.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=flow.dtype), torch.arange(w, device=flow.device, dtype=flow.dtype),
        indexing="ij",
    )
    # the official order of operations (normalised pixel grid + normalised flow): bitwise its grid, which
    # matters for PSNR near identical content (1e-7 of |a - b| moves a ~148 dB pixel by up to 1 dB)
    x = (xs / (w - 1) * 2 - 1) + flow[:, 0] / (w - 1) * 2
    y = (ys / (h - 1) * 2 - 1) + flow[:, 1] / (h - 1) * 2
    return torch.stack((x, y), dim=-1)


def warp_backward(source: Tensor, flow: Tensor, *, mask: str = "official") -> tuple[Tensor, Tensor]:
    """Sample ``source`` (view 2) at ``p + flow(p)`` for every pixel p of view 1.

    Args:
        source: (N, C, H, W) features or RGB of view 2.
        flow: (N, 2, H, W) flow from view 1 to view 2 in pixels (channel 0 = x, 1 = y).
        mask: ``"official"`` (computed on the clamped grid: all valid) or ``"in_bounds"`` (before the clamp).

    Returns:
        ``(warped (N, C, H, W), valid (N, H, W) bool)``; out-of-view targets take the border value.

    Raises:
        ValueError: shapes that do not match, or an unknown ``mask``.
    """
    if mask not in FLOW_MASKS:
        raise ValueError(f"mask: expected one of {FLOW_MASKS}, got {mask!r}")
    if flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"flow: expected a (N, 2, H, W) tensor, got shape {tuple(flow.shape)}")
    if source.dim() != 4 or source.shape[0] != flow.shape[0] or source.shape[-2:] != flow.shape[-2:]:
        raise ValueError(f"source: expected (N, C, H, W) with N, H, W of flow {tuple(flow.shape)}, got {tuple(source.shape)}")
    grid = _sampling_grid(flow.to(source.dtype))
    clamped = grid.clamp(-1.0, 1.0)
    warped = F.grid_sample(source, clamped, mode="bilinear", padding_mode="border", align_corners=True)
    ones = torch.ones_like(source[:, :1])
    # the official test, on the grid the official code uses (clamped) or on the true targets (in_bounds)
    hit = F.grid_sample(ones, clamped if mask == "official" else grid, mode="bilinear", padding_mode="zeros",
                        align_corners=True)
    return warped, hit[:, 0] > _MASK_THRESHOLD


def flow_pair_scores(
    view1: Tensor, view2: Tensor, flow: Tensor, distance: str = "cosine", *, mask: str = "official", **distance_kwargs: Any,
) -> dict[str, Tensor]:
    """Scores of pairs on the flow path: view 1 against view 2 warped onto it.

    Args:
        view1, view2: (N, C, H, W) features (cosine) or RGB (in the range the caller chose) of the two views.
        flow: (N, 2, H, W) flow from view 1 to view 2, pixels.
        distance: as :func:`met3r_metrics.distances.pair_scores`.
        mask: see :func:`warp_backward`.
        **distance_kwargs: ``cosine_eps``, ``mask_eps``, ``rgb_formulas``, ``lpips`` of
            :func:`met3r_metrics.distances.pair_scores` (lpips receives ``2 x - 1`` of what it is given, as the
            official call).

    Returns:
        dict with ``score`` (N,), ``score_map`` (N, H, W), ``mask`` (N, H, W) bool, ``overlap`` (N,) fraction of
        valid pixels, ``warped`` (N, C, H, W).
    """
    warped, valid = warp_backward(view2, flow, mask=mask)
    score, score_map = pair_scores(view1, warped, valid, distance, **distance_kwargs)
    return {"score": score, "score_map": score_map, "mask": valid, "overlap": valid.float().mean((-2, -1)),
            "warped": warped}


def official_batch_mixed_score(score_map: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """What the official RAFT path returns for a batch: (B, 1), ``score[i] = mean_j sum(S_j M_i) / (sum(M_i) + eps)``.

    Not a metric (a pair's value depends on its batch); kept to prove parity with the official numbers.
    ``score_map`` (B, h, w), ``mask`` (B, h, w).
    """
    s = score_map[None, :, None]  # (1, B, 1, h, w): the official map (B, 1, h, w) broadcast against ...
    m = mask.to(score_map.dtype)[:, None, None]  # ... mask[:, None] (B, 1, 1, h, w)
    per = (s * m).sum((-2, -1)) / (m.sum((-2, -1)) + eps)  # (B, B, 1)
    return per.mean(1)
