"""MEt3R's render of one cloud: project with view 1's camera, rasterize, alpha-composite (+ its CUDA graph)."""

from __future__ import annotations

from typing import Any

import torch

from ..cuda_graphs import GraphCache
from ..raster_ties import check_tie_rule
from . import rasterize as _rasterize_module
from .camera import _check_size, project_points
from .composite import alpha_composite
from .hits import _check_k, _check_ndc, _grid_constants, _window
from .rasterize import _ACCEL_CHUNK, _apply_cuda_tie_rule, rasterize_points
from .slots import _gather_outputs

__all__ = ["splat"]


def splat(
    points: torch.Tensor,
    features: torch.Tensor,
    focal_ndc: torch.Tensor,
    image_size: tuple[int, int],
    radius: float = 0.01,
    points_per_pixel: int = 10,
    background: float = -10000.0,
    *,
    principal_point: torch.Tensor | None = None,
    tie_rule: str = "cuda",
) -> tuple[torch.Tensor, torch.Tensor]:
    """MEt3R's render: project with view 1's camera, rasterize, alpha-composite.

    Args:
        points: (B, N, 3) OpenCV camera coordinates of view 1 (float32 for PyTorch3D-exact results).
        features: (B, N, C) per-point features (or packed (B * N, C)).
        focal_ndc: (B, 2) NDC focal (fx, fy), MEt3R: (1 + f_px_x / w, 1 + f_px_y / h).
        image_size: (H, W) of the render.
        radius, points_per_pixel, background: MEt3R's 0.01, 10, -10000.
        principal_point: optional (B, 2) NDC principal point (see :func:`project_points`); None: MEt3R's (0, 0).
        tie_rule: exact-depth ties as PyTorch3D's ``"cuda"`` (default, what MEt3R runs) or ``"cpu"`` kernel
            (see :func:`rasterize_points`).

    Returns:
        images (B, C, H, W) (channels-last storage, see :func:`alpha_composite`) and coverage (B, H, W)
        bool, True where at least one point hit (MEt3R's overlap mask is coverage of both clouds).

    Example: two points on the optical axis (depths 1 and 2, features 1 and 3) in a 4 x 4 render; each
    central pixel is 0.125 from both (alpha 0.5), so it shows 0.5 * 1 + 0.5 * 0.5 * 3:

    >>> import torch
    >>> points, features = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]]), torch.tensor([[[1.0], [3.0]]])
    >>> images, coverage = splat(points, features, torch.tensor([[1.0, 1.0]]), (4, 4), radius=0.5, points_per_pixel=2)
    >>> images[0, 0, 1:3, 1:3].tolist(), coverage[0].int().tolist()
    ([[1.25, 1.25], [1.25, 1.25]], [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    """
    ndc = project_points(points, focal_ndc, image_size, principal_point)
    idx, dists = _rasterize_for_splat(ndc, image_size, radius, points_per_pixel, tie_rule=tie_rule)
    images = alpha_composite(idx, dists, features, radius, background)
    return images, idx[..., 0] >= 0


def _rasterize_for_splat(
    ndc: torch.Tensor, image_size: tuple[int, int], radius: float, points_per_pixel: int, graphs: Any = None,
    tie_rule: str = "cuda",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, dists) of :func:`rasterize_points`, replayed from a CUDA graph when its dense pass applies
    (no host sync to capture; the same kernels, so the same slots; the CUDA tie rule's replay runs after
    the graph, outside it). ``graphs``: a :class:`~met3r_metrics.cuda_graphs.GraphCache` to use instead of
    this module's (tests)."""
    H, W = _check_size(image_size)
    B, N, _ = _check_ndc(ndc)
    K = _check_k(points_per_pixel)
    check_tie_rule(tie_rule)
    nx, ny = _window(radius, H, W)
    use = graphs is not None or (ndc.is_cuda and _rasterize_module.DENSE_ON_ACCELERATORS)
    if not (use and 0 < B * N * nx * ny <= _ACCEL_CHUNK):
        idx, _, dists = rasterize_points(ndc, image_size, radius, K, tie_rule=tie_rule)
        return idx, dists
    kk = K + 1 if tie_rule == "cuda" else K

    def run(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, _, dists = rasterize_points(t, (H, W), radius, kk, dense=True, chunk_size=_ACCEL_CHUNK, tie_rule="cpu")
        return idx, dists

    cache = graphs if graphs is not None else _raster_graphs()
    idx, dists = cache.run("rasterize", run, ndc, static=(H, W, float(radius), kk))
    if tie_rule == "cuda":
        idx, changed = _apply_cuda_tie_rule(ndc, idx, (H, W), float(radius), K, _ACCEL_CHUNK)
        if changed:
            y_of_row, x_of_col, _ = _grid_constants(H, W, float(radius), ndc.dtype, ndc.device)
            return idx, _gather_outputs(ndc, idx.reshape(-1), (B, H, W, K), y_of_row, x_of_col)[2]
        dists = dists[..., :K].contiguous()
    return idx, dists


_RASTER_GRAPHS: Any = None


def _raster_graphs() -> Any:
    """The rasterizer's CUDA-graph cache, built on first use (a leaf utility: no data-flow module above)."""
    global _RASTER_GRAPHS
    if _RASTER_GRAPHS is None:
        _RASTER_GRAPHS = GraphCache()
    return _RASTER_GRAPHS
