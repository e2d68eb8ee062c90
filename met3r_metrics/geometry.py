"""Geometry glue of MEt3R: canonical point map, focal estimate, the NDC focal for rendering, and the NDC
camera of given pixel intrinsics (known cameras, :mod:`met3r_metrics.known_geometry`).

All functions work on point maps in view 1's camera frame, OpenCV convention (+X right, +Y down,
+Z forward), as DUSt3R/MASt3R return them (``pred1["pts3d"]``, ``pred2["pts3d_in_other_view"]``).
They are computed under the caller's autograd mode; MEt3R detaches geometry, so the scorer calls
them on detached tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["canonical_pointmap", "estimate_focal", "focal_to_ndc", "scale_intrinsics", "intrinsics_to_ndc", "CONF_OFFSET"]

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
    # integer grid minus a float principal point, as dust3r's xy_grid(W, H) - pp (the grid is exact in floats;
    # a Python scalar, not a tensor built on the host, whose copy to a GPU would wait for the device)
    u = torch.arange(w, device=dev, dtype=canon.dtype).view(1, 1, w) - w / 2
    v = torch.arange(h, device=dev, dtype=canon.dtype).view(1, h, 1) - h / 2
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


def scale_intrinsics(intrinsics_px: Tensor, size: tuple[int, int], new_size: tuple[int, int]) -> Tensor:
    """Pixel intrinsics (fx, fy, cx, cy) of an (H, W) image -> those of the same camera at (h, w).

    Pixel centres are at integer coordinates (OpenCV: pixel (row, col) is (u, v) = (col, row)), so a
    coordinate maps as ``u' = (u + 0.5) * w / W - 0.5``.

    Args:
        intrinsics_px: (N, 4) float (fx, fy, cx, cy) in pixels of ``size``.
        size: (H, W) the intrinsics belong to; new_size: (h, w) wanted.

    Returns:
        (N, 4) (fx', fy', cx', cy').
    """
    (h0, w0), (h1, w1) = size, new_size
    sx, sy = w1 / w0, h1 / h0
    fx, fy, cx, cy = intrinsics_px.unbind(-1)
    return torch.stack((fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5), dim=-1)


def intrinsics_to_ndc(intrinsics_px: Tensor, render_size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """Pixel intrinsics of the render grid -> the renderer's NDC focal and principal point.

    The renderer (PyTorch3D's NDC, +X left, +Y up, the short side S = min(h, w) spanning [-1, 1]) samples
    column j at x = (w - 1 - 2 j) / S and row i at y = (h - 1 - 2 i) / S. A camera-frame point (X, Y, Z)
    falls on pixel u = fx X / Z + cx (integer u = a pixel centre), so in NDC x = fx_ndc * (-X / Z) + px with
    ``fx_ndc = 2 fx / S`` and ``px = (w - 1 - 2 cx) / S`` (the same for y with fy, cy, h).

    Args:
        intrinsics_px: (N, 4) (fx, fy, cx, cy) in pixels of the render grid (see :func:`scale_intrinsics`).
        render_size: (h, w).

    Returns:
        focal_ndc (N, 2), principal_point_ndc (N, 2).
    """
    h, w = render_size
    s = float(min(h, w))
    fx, fy, cx, cy = intrinsics_px.unbind(-1)
    focal = torch.stack((2.0 * fx / s, 2.0 * fy / s), dim=-1)
    pp = torch.stack(((w - 1 - 2.0 * cx) / s, (h - 1 - 2.0 * cy) / s), dim=-1)
    return focal, pp
