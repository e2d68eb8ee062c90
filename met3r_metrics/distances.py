"""Per-pixel comparison of the two renders of a pair and the masked mean over the overlap.

Renders are (N, C, h, w) with non-covered pixels already set to 0 (as MEt3R zeroes them); the
mask is (N, h, w) bool/float, 1 where both renders are covered.

* ``cosine`` (MEt3R): ``1 - <a, b> / (|a| |b| + eps)`` over the feature channels; a dissimilarity
  in [0, 2].
* ``mse`` / ``rmse``: per pixel mean over RGB channels of the squared difference / its square root
  (exactly the official per-pixel maps); the score is their masked mean.
* ``psnr``: computed correctly, ``10 log10(1 / mse)`` of the masked-mean MSE with data range 1
  (the official branch uses peak 255 on [0, 1] images and averages sqrt per pixel; not copied).
  A similarity: higher is better. Its score map is the per-pixel MSE.
* ``ssim``: Gaussian-window SSIM (11 x 11, sigma 1.5, K1 0.01, K2 0.03, data range 1, reflect
  padding) of the two renders, averaged over channels; score = masked mean. A similarity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["score_map", "masked_mean", "pair_scores", "HIGHER_IS_BETTER"]

HIGHER_IS_BETTER = {"cosine": False, "mse": False, "rmse": False, "psnr": True, "ssim": True}
_PSNR_FLOOR = 1e-10  # identical renders -> 100 dB instead of inf


def _cosine_map(a: Tensor, b: Tensor, eps: float) -> Tensor:
    dot = (a * b).sum(1)
    return 1.0 - dot / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _gaussian_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    x = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return (g / g.sum()).to(dtype)


def _ssim_map(a: Tensor, b: Tensor, data_range: float = 1.0, size: int = 11, sigma: float = 1.5) -> Tensor:
    c = a.shape[1]
    g = _gaussian_window(size, sigma, a.dtype, a.device)
    pad = size // 2

    def blur(x: Tensor) -> Tensor:
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        x = F.conv2d(x, g.view(1, 1, 1, size).expand(c, 1, 1, size), groups=c)
        return F.conv2d(x, g.view(1, 1, size, 1).expand(c, 1, size, 1), groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    s_aa = blur(a * a) - mu_a**2
    s_bb = blur(b * b) - mu_b**2
    s_ab = blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return ssim.mean(1)


def score_map(render1: Tensor, render2: Tensor, distance: str = "cosine", *, cosine_eps: float = 1e-5) -> Tensor:
    """Per-pixel map (N, h, w) comparing ``render1`` and ``render2`` (N, C, h, w)."""
    if distance == "cosine":
        return _cosine_map(render1, render2, cosine_eps)
    if distance in ("mse", "psnr"):
        return ((render1 - render2) ** 2).mean(1)
    if distance == "rmse":
        return ((render1 - render2) ** 2).mean(1).sqrt()
    if distance == "ssim":
        return _ssim_map(render1, render2)
    raise ValueError(f"distance: expected one of {sorted(HIGHER_IS_BETTER)}, got {distance!r}")


def masked_mean(values: Tensor, mask: Tensor, eps: float = 1e-5) -> Tensor:
    """``sum(values * mask) / (sum(mask) + eps)`` over (h, w): (N, h, w) -> (N,). Official formula."""
    m = mask.to(values.dtype)
    return (values * m).sum((-2, -1)) / (m.sum((-2, -1)) + eps)


def pair_scores(
    render1: Tensor,
    render2: Tensor,
    mask: Tensor,
    distance: str = "cosine",
    *,
    cosine_eps: float = 1e-5,
    mask_eps: float = 1e-5,
) -> tuple[Tensor, Tensor]:
    """Score of each pair and its per-pixel map.

    Args:
        render1, render2: (N, C, h, w) renders (non-covered pixels zeroed).
        mask: (N, h, w) overlap mask.
        distance: one of cosine, mse, rmse, psnr, ssim.

    Returns:
        ``(scores (N,), maps (N, h, w))``. The official formula gives 0 for an empty mask; the
        caller decides what an empty mask means (MEt3R here: NaN).
    """
    maps = score_map(render1, render2, distance, cosine_eps=cosine_eps)
    scores = masked_mean(maps, mask, mask_eps)
    if distance == "psnr":
        scores = 10.0 * torch.log10(1.0 / scores.clamp_min(_PSNR_FLOOR))
    return scores, maps

