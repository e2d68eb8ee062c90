"""Geometry glue of MEt3R: canonical point map, focal estimate and the NDC focal for rendering.

All functions work on point maps in view 1's camera frame, OpenCV convention (+X right, +Y down,
+Z forward), as DUSt3R/MASt3R return them (``pred1["pts3d"]``, ``pred2["pts3d_in_other_view"]``).
They are computed under the caller's autograd mode; MEt3R detaches geometry, so the scorer calls
them on detached tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["canonical_pointmap", "estimate_focal", "focal_to_ndc", "CONF_OFFSET"]

#: MEt3R weights each view's point by ``conf - 0.999`` (conf = 1 + exp(x) >= 1, so weights > 0).
CONF_OFFSET = 0.999


def canonical_pointmap(pts3d: Tensor, conf: Tensor) -> Tensor:
    """Per-pixel confidence-weighted mix of the two point maps (used only for the focal estimate).

    Args:
        pts3d: (N, 2, H, W, 3) point maps of view 1 and view 2, both in view 1's frame.
        conf: (N, 2, H, W) confidences (>= 1).

    Returns:
        (N, H, W, 3): ``sum_k (conf_k - 0.999) X_k / sum_k (conf_k - 0.999)``. The two maps belong
        to different pixels; this is MEt3R's definition, kept for parity.
    """
    w = conf.unsqueeze(-1) - CONF_OFFSET
    return (w * pts3d).sum(1) / w.sum(1)


def estimate_focal(canon: Tensor) -> Tensor:
    """MEt3R's focal estimate in pixels from a point map (DUSt3R's median mode, per axis).

    Principal point (W/2, H/2) on the integer pixel grid; votes ``fx = u z / x`` and ``fy = v z / y``
    with (u, v) = (col - W/2, row - H/2); the focal is the nan-median of each axis' votes.

    Args:
        canon: (N, H, W, 3) point map.

    Returns:
        (N, 2) float pixel focals (fx, fy).
    """
    n, h, w, _ = canon.shape
    dev = canon.device
    # integer grid minus a float principal point, as dust3r's xy_grid(W, H) - pp
    u = torch.arange(w, device=dev).view(1, 1, w) - torch.tensor(w / 2, dtype=canon.dtype, device=dev)
    v = torch.arange(h, device=dev).view(1, h, 1) - torch.tensor(h / 2, dtype=canon.dtype, device=dev)
    x, y, z = canon.unbind(-1)
    fx_votes = (u * z) / x
    fy_votes = (v * z) / y
    votes = torch.stack((fx_votes.reshape(n, -1), fy_votes.reshape(n, -1)), dim=-1)  # (N, HW, 2)
    return torch.nanmedian(votes, dim=-2).values


def focal_to_ndc(focal_px: Tensor, height: int, width: int, convention: str = "official") -> Tensor:
    """Pixel focal -> the NDC focal handed to the point renderer.

    Args:
        focal_px: (N, 2) pixel focals (fx, fy) of the *input* resolution (H, W).
        height, width: input image size H, W.
        convention: ``"official"``: MEt3R's ``(1 + fx / W, 1 + fy / H)`` (not PyTorch3D's NDC
            convention; the render is zoomed unless fx = W; kept for parity).
            ``"pinhole"``: ``2 f / min(H, W)``, the focal that re-renders the input camera
            (PyTorch3D NDC: the short side spans [-1, 1]).

    Returns:
        (N, 2) NDC focals.
    """
    if convention == "official":
        # divide (not multiply by a reciprocal) to match the official float32 rounding
        return torch.stack((1 + focal_px[:, 0] / width, 1 + focal_px[:, 1] / height), dim=-1)
    if convention == "pinhole":
        return focal_px * (2.0 / min(height, width))
    raise ValueError(f"convention: expected 'official' or 'pinhole', got {convention!r}")
