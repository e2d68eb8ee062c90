"""The official pipeline's structure, rebuilt from this package's parts, as the same-run speed baseline.

What makes the official code (mohammadasim98/met3r @ 3259e41) slow, reproduced here:

* every pair recomputes both images' features and encoder tokens (no per-frame reuse);
* the rasterizer tests every point against every pixel (PyTorch3D ``bin_size=0``), here
  :func:`met3r_metrics.render_reference.naive_rasterize_points` with large chunks so that it runs as a few big
  tensor ops on the GPU rather than as many small launches;
* TF32 is switched on globally, as the official module does at import.

Numbers are the same function as :class:`met3r_metrics.MEt3RScorer` (tests check the naive and fast
rasterizers agree); only the cost differs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from met3r_metrics.distances import pair_scores
from met3r_metrics.geometry import canonical_pointmap, estimate_focal, focal_to_ndc
from met3r_metrics.render import alpha_composite, project_points
from met3r_metrics.render_reference import naive_rasterize_points
from met3r_metrics.scorer import MEt3RScorer, render_size

_NAIVE_CHUNK = 1 << 28  # (pixel, point) pairs per chunk: ~1 GiB per float32 temporary


@torch.no_grad()
def official_structure_pairs(
    scorer: MEt3RScorer, images1: Tensor, images2: Tensor, geometry: tuple[Tensor, Tensor] | None = None
) -> Tensor:
    """Score pairs (n, 3, H, W) x 2 in [-1, 1] the official way: one batch, nothing reused, naive raster.

    ``geometry`` (pts3d (n, 2, H, W, 3), conf (n, 2, H, W)) replaces the backbone's point maps after it
    ran (benchmarks use a plausible synthetic geometry, since random weights give a degenerate one).
    """
    s = scorer.settings
    n, _, h, w = images1.shape
    frames = torch.cat((images1, images2))
    feats = scorer.frame_features(frames)  # both images of every pair, every time
    tok, pos, shape = scorer.encode(frames)
    pts, conf = scorer.decode(tok[:n], pos[:n], tok[n:], pos[n:], shape)
    if geometry is not None:
        pts, conf = geometry
    focal_ndc = focal_to_ndc(estimate_focal(canonical_pointmap(pts, conf)), h, w, s.focal_convention)
    rh, rw = render_size(s.img_size, h, w)
    c = feats.shape[1]
    f = torch.stack((feats[:n], feats[n:]), 1).permute(0, 1, 3, 4, 2).reshape(2 * n, h * w, c)
    ndc = project_points(pts.reshape(2 * n, h * w, 3), focal_ndc.repeat_interleave(2, 0), (rh, rw))
    idx, _, dists = naive_rasterize_points(ndc, (rh, rw), s.radius, s.points_per_pixel, chunk_size=_NAIVE_CHUNK)
    renders = alpha_composite(idx, dists, f, s.radius, -10000.0)
    cov = (idx[..., 0] >= 0).view(n, 2, rh, rw)
    renders = torch.where(cov.view(2 * n, 1, rh, rw), renders, 0.0).view(n, 2, c, rh, rw)
    score, _ = pair_scores(renders[:, 0], renders[:, 1], cov[:, 0] & cov[:, 1], s.distance)
    return score


def official_structure_sequence(
    scorer: MEt3RScorer, frames: Tensor, batch: int, geometry_fn=None
) -> Tensor:
    """Consecutive pairs of one sequence (V, 3, H, W), ``batch`` pairs per call, every pair from scratch."""
    v = frames.shape[0]
    out = []
    for s in range(0, v - 1, batch):
        e = min(v - 1, s + batch)
        geo = geometry_fn(e - s) if geometry_fn is not None else None
        out.append(official_structure_pairs(scorer, frames[s:e], frames[s + 1 : e + 1], geo))
    return torch.cat(out)
