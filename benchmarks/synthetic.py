"""Synthetic inputs for GPU benchmarks: full-size random-weight networks and a plausible geometry.

Random weights make MASt3R put almost every point outside the view, which makes splatting look
cheap. :func:`smooth_surface_pair` builds what a real pair looks like instead: a smooth surface in
front of the camera seen from two nearby poses (4 degrees about y plus a small translation), both
point maps in view 1's frame, every point in front of the camera, covering the render.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from met3r_metrics.models.dino import DinoFeaturizer
from met3r_metrics.models.dust3r import build_stereo_model
from met3r_metrics.models.featup import UpsampledDino, build_upsampler
from met3r_metrics.scorer import MEt3RScorer
from met3r_metrics.settings import Settings
from met3r_metrics.stages.geometry import StereoGeometry
from met3r_metrics.weights import CHECKPOINTS


def _frozen(m: nn.Module, device: torch.device) -> nn.Module:
    return m.to(device).eval().requires_grad_(False)


def random_networks(backbone: str, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """Full-size stereo network ``backbone`` (registry name) and dino16 + JBU, random weights."""
    with torch.device(device):
        stereo = build_stereo_model(CHECKPOINTS[backbone].config)
        feats = UpsampledDino(DinoFeaturizer(depth=12, use_norm=True), build_upsampler("featup", 384))
    return _frozen(stereo, device), _frozen(feats, device)


class SyntheticStereoGeometry(StereoGeometry):
    """The stereo stage whose decoder runs for real, after which the point maps are swapped for a smooth surface."""

    @torch.no_grad()
    def decode(self, tok1, pos1, tok2, pos2, shape):  # type: ignore[override]
        pts, conf = super().decode(tok1, pos1, tok2, pos2, shape)
        geo = smooth_surface_pair(pts.shape[0], shape[0], shape[1], pts.device)
        return geo


class SyntheticGeometryScorer(MEt3RScorer):
    """A scorer whose stereo stage is :class:`SyntheticStereoGeometry`.

    Every stage keeps its real cost (encoder, decoder, heads, features, upsampler, focal, splatting,
    compositing, score); only the geometry the splatting sees is the plausible synthetic one.
    """

    stereo_stage = SyntheticStereoGeometry


def build_scorer(variant: str, stereo: nn.Module, feats: nn.Module, synthetic: bool, **overrides) -> MEt3RScorer:
    settings = Settings.from_variant(variant, **overrides)
    cls = SyntheticGeometryScorer if synthetic else MEt3RScorer
    return cls(settings, stereo, feats)


_GEO_CACHE: dict[tuple, tuple[Tensor, Tensor]] = {}


def smooth_surface_pair(n: int, h: int, w: int, device: torch.device, yaw_deg: float = 4.0) -> tuple[Tensor, Tensor]:
    """(pts3d (n, 2, h, w, 3), conf (n, 2, h, w)): view 1's surface and view 2's, both in view 1's frame.

    Focal w (pixels), depth 2 + 0.3 sin/cos bumps; view 2 = R_y(yaw_deg, default 4) X + (0.1, 0.01, 0.05).
    Cached per shape so the benchmark does not time its own input generation.
    """
    key = (n, h, w, str(device), float(yaw_deg))
    if key in _GEO_CACHE:
        return _GEO_CACHE[key]
    f = float(w)
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    ray = torch.stack(((xs - w / 2) / f, (ys - h / 2) / f, torch.ones_like(xs, dtype=torch.float32)), -1)

    def depth(phase: float) -> Tensor:
        return 2 + 0.3 * torch.sin(xs / w * 6.0 + phase) * torch.cos(ys / h * 4.0 - phase)

    x1 = ray * depth(0.0)[..., None]
    a = math.radians(yaw_deg)
    rot = torch.tensor([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]], device=device)
    x2 = (ray * depth(0.3)[..., None]) @ rot.T + torch.tensor([0.1, 0.01, 0.05], device=device)
    pts = torch.stack((x1, x2)).unsqueeze(0).expand(n, 2, h, w, 3).contiguous()
    conf = (1 + torch.exp(1 + torch.sin(xs / 7.0) * 0.5)).expand(n, 2, h, w).contiguous()
    _GEO_CACHE[key] = (pts, conf)
    return pts, conf
