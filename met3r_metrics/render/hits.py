"""The rasterizer's hit test: which pixel centres a point's disc can reach, and its squared distances to them.

A point hits a pixel iff z >= 0 and dx*dx + dy*dy < r*r in NDC (isotropic, float32, strict). Every point
visits only the window of pixels its disc can reach (:func:`_window`); :class:`_Raster` holds what both slot
passes of :mod:`.rasterize` read. The constants are cached per device (:func:`_grid_constants`).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from .camera import pixel_centers_ndc


# Slack (in pixels) added on both sides of a point's candidate window. The window is only a superset
# filter computed in the working precision; the exact float hit test decides. The float32 error of the
# continuous pixel position is ~1e-5 px at S = 256, so 0.01 px is generous and still gives the minimal
# 3x3 window at MEt3R's size (r * S = 2.56).
_WINDOW_SLACK_PX = 0.01


class _Raster(NamedTuple):
    """What both slot passes read: the points' NDC coordinates and window centres, the hit test's
    constants and the sizes."""

    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    touches: torch.Tensor
    col_c: torch.Tensor
    row_c: torch.Tensor
    half: float
    nx: int
    ny: int
    ar_x: torch.Tensor
    ar_y: torch.Tensor
    y_of_row: torch.Tensor
    x_of_col: torch.Tensor
    r2: torch.Tensor
    B: int
    N: int
    H: int
    W: int
    K: int
    pix_dtype: torch.dtype


def _make_raster(ndc: torch.Tensor, H: int, W: int, radius: float, K: int) -> _Raster:
    """The hit test's inputs for (B, N, 3) ``ndc`` (no autograd): window centres, culling, constants."""
    B, N, _ = ndc.shape
    device = ndc.device
    S = min(H, W)
    y_of_row, x_of_col, r2 = _grid_constants(H, W, radius, ndc.dtype, device)
    pts = ndc.detach().reshape(B * N, 3)
    x, y, z = pts.unbind(-1)
    # Continuous (col, row) of each point; used only to place its candidate window.
    half = radius * S / 2.0
    col_c = (W - 1 - S * x) * 0.5
    row_c = (H - 1 - S * y) * 0.5
    # Points whose disc cannot reach any pixel centre are dropped up front (also z < 0, NaN, inf:
    # comparisons with NaN are False).
    reach = half + 1.0
    touches = (z >= 0) & (col_c > -reach) & (col_c < W - 1 + reach) & (row_c > -reach) & (row_c < H - 1 + reach)
    nx, ny = _window(radius, H, W)
    return _Raster(
        x, y, z, touches, col_c, row_c, half, nx, ny, torch.arange(nx, device=device), torch.arange(ny, device=device),
        y_of_row, x_of_col, r2, B, N, H, W, K,
        torch.int32 if B * H * W < 1 << 31 else torch.int64,  # int32 sorts several times faster
    )


def _cells(g: _Raster, p: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances (m, ny, nx) of points ``p`` (window centres cx, cy) to their window's pixel centres,
    and the packed pixel (m * ny * nx,) int64 of each window cell."""
    m = p.numel()
    # Clamp the window inside the image: still covers every in-image candidate, never duplicates.
    lo_x = torch.floor(cx - g.half - _WINDOW_SLACK_PX) + 1
    lo_y = torch.floor(cy - g.half - _WINDOW_SLACK_PX) + 1
    cols = lo_x.clamp(0, g.W - g.nx).long()[:, None] + g.ar_x  # (m, nx)
    rows = lo_y.clamp(0, g.H - g.ny).long()[:, None] + g.ar_y  # (m, ny)
    dx = g.x.index_select(0, p)[:, None] - g.x_of_col.index_select(0, cols.view(-1)).view(m, g.nx)
    dy = g.y.index_select(0, p)[:, None] - g.y_of_row.index_select(0, rows.view(-1)).view(m, g.ny)
    # dx*dx + dy*dy, each square rounded then summed (addition commutes exactly): the kernel's op order.
    d2 = (dy * dy)[:, :, None] + (dx * dx)[:, None, :]
    pix = ((p // g.N)[:, None] * g.H + rows) * g.W  # (m, ny) row starts
    return d2, (pix[:, :, None] + cols[:, None, :]).view(-1)


def _window(radius: float, H: int, W: int) -> tuple[int, int]:
    """(nx, ny) candidate window of a point: the integers j with a < j < a + r*S, a = col_c - r*S/2
    (S = min(H, W)), widened by the slack on both sides."""
    span = radius * min(H, W) + 2 * _WINDOW_SLACK_PX
    return min(W, int(math.floor(span)) + 1), min(H, int(math.floor(span)) + 1)


def _radius_sq(radius: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.tensor(radius, dtype=dtype)  # r*r in the working precision, like the kernel's float radius2
    return (r * r).to(device)


_GRID_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _grid_constants(
    H: int, W: int, radius: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_of_row, x_of_col, r*r) on ``device``, cached: each is built on the CPU, and a copy from host memory
    waits for the device's queue, i.e. it would be a host sync on every call."""
    key = (H, W, radius, dtype, str(device))
    got = _GRID_CONSTANTS.get(key)
    if got is None:
        if len(_GRID_CONSTANTS) > 256:  # many sizes/radii in one process: start over rather than grow
            _GRID_CONSTANTS.clear()
        got = _GRID_CONSTANTS[key] = (*pixel_centers_ndc((H, W), dtype, device), _radius_sq(radius, dtype, device))
    return got


def _check_ndc(ndc: torch.Tensor) -> torch.Size:
    if ndc.dim() != 3 or ndc.shape[-1] != 3 or not ndc.is_floating_point():
        raise ValueError(f"ndc must be a floating (B, N, 3) tensor, got {tuple(ndc.shape)} {ndc.dtype}")
    return ndc.shape


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"points_per_pixel must be >= 1, got {k}")
    return int(k)
