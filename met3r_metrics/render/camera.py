"""The camera of MEt3R's render: OpenCV points -> PyTorch3D NDC, and the NDC each pixel samples.

Step 1 and 2 of :mod:`met3r_metrics.render`: x = (fx * -X) / Z, y = (fy * -Y) / Z, z := Z (view depth), and
pixel (i, j) samples NDC ((W-1-2j)/S, (H-1-2i)/S), S = min(H, W), by PyTorch3D's float32 recipe.
"""

from __future__ import annotations

import torch

__all__ = ["project_points", "pixel_centers_ndc"]


def project_points(
    points: torch.Tensor,
    focal_ndc: torch.Tensor,
    image_size: tuple[int, int],
    principal_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """Project points with MEt3R's PyTorch3D camera into NDC.

    The camera is ``PerspectiveCameras(R=diag(-1,-1,1), T=0, focal_length=focal_ndc, principal_point=(0,0),
    in_ndc=True)``: view coords are (-X, -Y, Z), then x = fx * Xv / Zv, y = fy * Yv / Zv and the third
    coordinate is the view depth Z (not 1/Z). No eps clamp, no near plane (the rasterizer culls z < 0 only).

    Args:
        points: (B, N, 3) in view 1's OpenCV camera frame (x right, y down, z forward), as MEt3R passes
            DUSt3R point maps.
        focal_ndc: (B, 2) NDC focal (fx, fy) per cloud; MEt3R uses fx = 1 + f_px_x / w, fy = 1 + f_px_y / h.
        image_size: (H, W). With ``in_ndc=True`` nothing in the projection depends on it (PyTorch3D applies
            no aspect correction); it is accepted so the call mirrors the camera's inputs.
        principal_point: optional (B, 2) NDC principal point (px, py) per cloud, PyTorch3D's
            ``principal_point`` in the same +X-left / +Y-up NDC: x = fx * Xv / Zv + px. ``None`` (MEt3R's
            camera) is (0, 0) and leaves the arithmetic exactly as before (no extra addition).
            :func:`met3r_metrics.geometry.intrinsics_to_ndc` turns pixel intrinsics into (focal, principal point).

    Returns:
        (B, N, 3): x_ndc, y_ndc, z (view depth). z = 0 gives +-inf/NaN x, y, which never hit a pixel.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if focal_ndc.shape != (points.shape[0], 2):
        raise ValueError(f"focal_ndc must be (B, 2) = ({points.shape[0]}, 2), got {tuple(focal_ndc.shape)}")
    _check_size(image_size)
    if principal_point is not None and principal_point.shape != (points.shape[0], 2):
        raise ValueError(
            f"principal_point must be (B, 2) = ({points.shape[0]}, 2), got {tuple(principal_point.shape)}"
        )
    focal = focal_ndc.to(points.dtype)
    X, Y, Z = points.unbind(-1)
    # PyTorch3D goes through 4x4 matmuls whose zero terms turn -0.0 into +0.0 (the "+ 0.0" below, exact
    # otherwise). It decides the sign of the infinity for a point at z = -0.0 and of x, y on the axis.
    z_view = Z + 0.0
    x = (focal[:, None, 0] * -X + 0.0) / z_view
    y = (focal[:, None, 1] * -Y + 0.0) / z_view
    if principal_point is not None:  # given cameras: the offset of the pixel-aligned principal point
        pp = principal_point.to(points.dtype)
        x = x + pp[:, None, 0]
        y = y + pp[:, None, 1]
    return torch.stack((x, y, z_view), dim=-1)


def pixel_centers_ndc(
    image_size: tuple[int, int], dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC coordinates sampled by each pixel row and column, PyTorch3D's recipe operation by operation.

    Row 0 is the top (most positive y), column 0 the left (most positive x, PyTorch3D's +X is left).

    Returns:
        (y_of_row (H,), x_of_col (W,)) in ``dtype``.
    """
    H, W = _check_size(image_size)

    def axis(s1: int, s2: int) -> torch.Tensor:
        # Built on the CPU so the rounding is the CPU kernel's; it is tiny and moved once.
        two = torch.tensor(2.0, dtype=dtype)
        rng = (torch.tensor(float(s1), dtype=dtype) * two) / torch.tensor(float(s2), dtype=dtype) if s1 > s2 else two
        offset = rng / 2.0
        i_rev = torch.arange(s1 - 1, -1, -1, dtype=dtype)  # the kernel flips the index first
        return (rng * i_rev + offset) / torch.tensor(float(s1), dtype=dtype) - offset

    return axis(H, W).to(device), axis(W, H).to(device)


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(int(image_size[0]), int(image_size[1])) <= 0:
        raise ValueError(f"image_size must be (H, W) with positive sides, got {image_size}")
    return int(image_size[0]), int(image_size[1])
