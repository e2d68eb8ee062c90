"""Per-pixel comparison of the two renders of a pair and the masked mean over the overlap.

Renders are (N, C, h, w) with non-covered pixels already set to 0 (as MEt3R zeroes them); the
mask is (N, h, w) bool/float, 1 where both renders are covered. Every score is per pair: no
quantity is shared between the pairs of a batch (the official code mixes pairs for lpips and
ssim; see docs/metric.md).

* ``cosine`` (MEt3R): ``1 - <a, b> / (|a| |b| + eps)`` over the feature channels; a dissimilarity
  in [0, 2].
* ``mse`` / ``rmse``: per pixel mean over RGB channels of the squared difference / its square root
  (exactly the official per-pixel maps); the score is their masked mean.
* ``lpips``: LPIPS (AlexNet trunk, v0.1 linear layers, spatial map) of ``2 a - 1`` and ``2 b - 1``
  (the official call on [0, 1] renders); the score is the masked mean of its map. Needs the LPIPS
  network (:class:`met3r_metrics.models.lpips.LPIPS`).
* ``psnr`` and ``ssim`` have two forms, chosen by ``rgb_formulas``:

  * ``"official"``: the official per-pixel formulas, per pair. PSNR map
    ``20 log10(255 / (mean_c |a - b| + 1e-5))`` (not a PSNR: peak 255 on [0, 1] renders, absolute
    difference), score = its masked mean. SSIM: Gaussian SSIM (11 x 11, sigma 1.5, K1 0.01, K2 0.03,
    reflect padding, as torchmetrics) with the data range inferred from the pair itself,
    ``max(max a - min a, max b - min b)``; score = masked mean averaged over channels.
  * ``"standard"``: PSNR ``10 log10(1 / m)`` of the masked-mean MSE ``m`` (peak 1; map = per-pixel
    MSE); SSIM as above with the fixed data range 1.

  Both are similarities: higher is better. The SSIM map returned is the channel mean (the official
  code returns channel 0 only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .settings import DISTANCES, RGB_FORMULAS

__all__ = ["score_map", "masked_mean", "pair_scores", "pair_data_range", "HIGHER_IS_BETTER", "RGB_FORMULAS"]

#: Direction of each distance, read from its one definition (:data:`met3r_metrics.settings.DISTANCES`).
HIGHER_IS_BETTER = {name: info.higher_is_better for name, info in DISTANCES.items()}
_OFFICIAL_PSNR_PEAK = 255.0
_OFFICIAL_PSNR_EPS = 1e-5
_PSNR_FLOOR = 1e-10  # identical renders -> 100 dB instead of inf


def _cosine_map(a: Tensor, b: Tensor, eps: float) -> Tensor:
    dot = (a * b).sum(1)
    return 1.0 - dot / (a.norm(dim=1) * b.norm(dim=1) + eps)


def _gaussian_kernel_2d(size: int, sigma: float, channels: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(channels, 1, size, size) normalised Gaussian window: the outer product of the 1-D window."""
    x = torch.arange((1 - size) / 2, (1 + size) / 2, 1, dtype=dtype, device=device)
    g = torch.exp(-((x / sigma) ** 2) / 2)
    g = (g / g.sum()).unsqueeze(0)  # (1, size)
    return (g.t() @ g).expand(channels, 1, size, size)


def _ssim_map(a: Tensor, b: Tensor, data_range: Tensor | float = 1.0, size: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-channel SSIM map (N, C, h, w) of ``a``, ``b`` (N, C, h, w).

    Local statistics: one 2-D Gaussian convolution of the reflect-padded a, b, a², b², ab (the order
    of operations of torchmetrics, so float32 maps agree bitwise with the official call's).
    ``data_range``: a float, or a tensor (N,) with one range per pair. Variances are clamped at 0.
    """
    n, c = a.shape[:2]
    pad = size // 2
    a = F.pad(a, (pad, pad, pad, pad), mode="reflect")
    b = F.pad(b, (pad, pad, pad, pad), mode="reflect")
    kernel = _gaussian_kernel_2d(size, sigma, c, a.dtype, a.device)
    mu_a, mu_b, e_aa, e_bb, e_ab = F.conv2d(torch.cat((a, b, a * a, b * b, a * b)), kernel, groups=c).split(n)
    dr = torch.as_tensor(data_range, dtype=a.dtype, device=a.device).reshape(-1, 1, 1, 1)
    c1, c2 = (0.01 * dr) ** 2, (0.03 * dr) ** 2
    mu_aa, mu_bb, mu_ab = mu_a.pow(2), mu_b.pow(2), mu_a * mu_b
    s_aa = (e_aa - mu_aa).clamp_min(0.0)
    s_bb = (e_bb - mu_bb).clamp_min(0.0)
    s_ab = e_ab - mu_ab
    return ((2 * mu_ab + c1) * (2 * s_ab + c2)) / ((mu_aa + mu_bb + c1) * (s_aa + s_bb + c2))


def pair_data_range(a: Tensor, b: Tensor) -> Tensor:
    """The official SSIM data range computed per pair: ``max(max a - min a, max b - min b)`` -> (N,)."""
    span = lambda x: x.flatten(1).amax(1) - x.flatten(1).amin(1)  # noqa: E731
    return torch.maximum(span(a), span(b))


def _check_formulas(rgb_formulas: str) -> None:
    if rgb_formulas not in RGB_FORMULAS:
        raise ValueError(f"rgb_formulas: expected one of {RGB_FORMULAS}, got {rgb_formulas!r}")


def score_map(
    render1: Tensor,
    render2: Tensor,
    distance: str = "cosine",
    *,
    cosine_eps: float = 1e-5,
    rgb_formulas: str = "official",
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> Tensor:
    """Per-pixel map (N, h, w) comparing ``render1`` and ``render2`` (N, C, h, w).

    ``lpips``: the LPIPS network, ``(N, 3, h, w) x 2 in [-1, 1] -> (N, 1, h, w)`` (distance lpips only).
    """
    _check_formulas(rgb_formulas)
    if distance == "cosine":
        return _cosine_map(render1, render2, cosine_eps)
    if distance == "mse" or (distance == "psnr" and rgb_formulas == "standard"):
        return ((render1 - render2) ** 2).mean(1)
    if distance == "rmse":
        return ((render1 - render2) ** 2).mean(1).sqrt()
    if distance == "psnr":  # official: |a - b| (the official sqrt(x ** 2)), channel mean, peak 255
        diff = (render1 - render2).abs().mean(1)
        return 20.0 * torch.log10(_OFFICIAL_PSNR_PEAK / (diff + _OFFICIAL_PSNR_EPS))
    if distance == "ssim":
        data_range = pair_data_range(render1, render2) if rgb_formulas == "official" else 1.0
        return _ssim_map(render1, render2, data_range).mean(1)
    if distance == "lpips":
        if lpips is None:
            raise ValueError("lpips: expected the LPIPS network for distance='lpips', got None")
        return lpips(2 * render1 - 1, 2 * render2 - 1)[:, 0]
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
    rgb_formulas: str = "official",
    lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Score of each pair and its per-pixel map.

    Args:
        render1, render2: (N, C, h, w) renders (non-covered pixels zeroed).
        mask: (N, h, w) overlap mask.
        distance: one of cosine, mse, rmse, psnr, ssim, lpips.
        rgb_formulas: ``"official"`` or ``"standard"`` PSNR / SSIM (module docstring).
        lpips: the LPIPS network (distance lpips only).

    Returns:
        ``(scores (N,), maps (N, h, w))``. The official formula gives 0 for an empty mask; the
        caller decides what an empty mask means (MEt3R here: NaN).
    """
    maps = score_map(render1, render2, distance, cosine_eps=cosine_eps, rgb_formulas=rgb_formulas, lpips=lpips)
    scores = masked_mean(maps, mask, mask_eps)
    if distance == "psnr" and rgb_formulas == "standard":
        scores = 10.0 * torch.log10(1.0 / scores.clamp_min(_PSNR_FLOOR))
    return scores, maps

