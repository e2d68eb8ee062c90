"""Stage: the camera of view a (focal estimate or given intrinsics), then both point clouds, each carrying its
view's features, rasterized and composited into it (:func:`met3r_metrics.render.splat`).

Entry point :func:`splat_pairs`; :func:`points_layout` gathers cached per-frame features into the layout it reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..geometry import canonical_pointmap, estimate_focal, focal_to_ndc, intrinsics_to_ndc, scale_intrinsics
from ..render import splat
from ..settings import Settings

__all__ = ["render_size", "points_layout", "splat_pairs"]

#: Depth-sorted compositing background of the official renderer; covered pixels never see it.
_BACKGROUND = -10000.0


def render_size(img_size: int | Sequence[int] | None, height: int, width: int) -> tuple[int, int]:
    """Render (h, w): int -> square, (h, w) -> as given, None -> the input size (H, W).

    >>> render_size(256, 64, 96), render_size((32, 48), 64, 96), render_size(None, 64, 96)
    ((256, 256), (32, 48), (64, 96))
    """
    if img_size is None:
        return height, width
    if isinstance(img_size, int):
        return img_size, img_size
    return int(img_size[0]), int(img_size[1])


def points_layout(first: Sequence[Tensor], second: Sequence[Tensor]) -> Tensor:
    """Per-frame features (C, H, W) of view a and view b of n pairs -> (n, 2, H*W, C), with one copy.

    The frames come channels-last from :func:`~met3r_metrics.stages.features.frame_features`, so each
    ``permute(1, 2, 0)`` is a view and the stack is the only copy.
    """
    c, h, w = first[0].shape
    frames = [f.permute(1, 2, 0) for pair in zip(first, second) for f in pair]
    return torch.stack(frames).view(len(first), 2, h * w, c)


def splat_pairs(
    pts3d: Tensor, conf: Tensor | None, features: Tensor, settings: Settings, *, intrinsics: Tensor | None = None,
) -> dict[str, Tensor]:
    """Render both views of each directed pair into view a's camera.

    Args:
        pts3d: (n, 2, H, W, 3) point maps of view a and view b, both in view a's frame.
        conf: (n, 2, H, W) confidences (for the focal estimate; unused with ``intrinsics``).
        features: (n, 2, C, H, W) features of view a and view b (pixel-aligned with pts3d), or the same in
            points layout (n, 2, H*W, C) (:func:`points_layout`: no copy).
        settings: ``img_size`` (render size), ``radius``, ``points_per_pixel``, ``focal_convention``.
        intrinsics: optional (n, 4) pixel (fx, fy, cx, cy) of view a at (H, W) (integer pixel centres):
            rendered with that camera, scaled to the render size, principal point included (pixel-aligned
            with view a), instead of MEt3R's focal estimate and ``focal_convention``.

    Returns:
        dict with ``renders`` (n, 2, C, h, w) (non-covered pixels 0), ``coverage`` (n, 2, h, w) bool,
        ``mask`` (n, h, w) where both renders have content, ``focal_px`` (n, 2), ``focal_ndc`` (n, 2).
    """
    s = settings
    n, _, h, w, _ = pts3d.shape
    rh, rw = render_size(s.img_size, h, w)
    pts3d = pts3d.detach().float()
    principal = None
    if intrinsics is None:
        focal_px = estimate_focal(canonical_pointmap(pts3d, conf.detach().float()))
        focal_ndc = focal_to_ndc(focal_px, h, w, s.focal_convention)
    else:
        intr = scale_intrinsics(intrinsics.detach().float(), (h, w), (rh, rw))
        focal_px = intrinsics[:, :2].detach().float()
        focal_ndc, principal = intrinsics_to_ndc(intr, (rh, rw))
        principal = principal.repeat_interleave(2, dim=0)
    if features.dim() == 4:  # points layout (n, 2, H*W, C)
        c = features.shape[3]
        feats = features.float().reshape(2 * n, h * w, c)
    else:
        c = features.shape[2]
        feats = features.float().permute(0, 1, 3, 4, 2).reshape(2 * n, h * w, c)
    renders, coverage = splat(
        pts3d.reshape(2 * n, h * w, 3),
        feats,
        focal_ndc.repeat_interleave(2, dim=0),
        (rh, rw),
        radius=s.radius,
        points_per_pixel=s.points_per_pixel,
        background=_BACKGROUND,
        **({} if principal is None else {"principal_point": principal}),
    )
    coverage = coverage.view(n, 2, rh, rw)
    # background pixels become 0 in their own view only (official `rendering[non_overlap] = 0`);
    # in place: the render is a fresh buffer, and a copy would be another 100 MB per view at 256x256
    renders = renders.masked_fill_(~coverage.view(2 * n, 1, rh, rw), 0.0).view(n, 2, c, rh, rw)
    return {"renders": renders, "coverage": coverage, "mask": coverage[:, 0] & coverage[:, 1],
            "focal_px": focal_px, "focal_ndc": focal_ndc}
