"""Stage: per-frame features, DINO + upsampler (or the RGB image for the RGB distances).

Entry point :func:`frame_features`. Each frame is featurized once however many pairs it takes part in (the
scorer caches the result per frame).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cuda_graphs import graphs_for

__all__ = ["FEATURE_FRAMES", "frame_features"]

#: Frames per feature-network call. The upsampler's full-resolution intermediates (0.28 GiB per frame at
#: 256x256, measured on an H200) are held for this many frames only. 8: a chunk of 8 pairs (16 frames) peaks
#: lower than in one call, at 2-3 % of the speed (4: 6-7 %); benchmarks/README.md has the rows.
FEATURE_FRAMES = 8


def frame_features(images: Tensor, network: Any | None, *, graphed: bool = True) -> Tensor:
    """Per-pixel features of frames: (N, 3, H, W) in [-1, 1] -> (N, C, H, W) float32.

    ``network`` (DINO + upsampler, ``(N, 3, H, W) in [0, 1] -> (N, C, h, w)``) runs on ``(images + 1) / 2``
    (ImageNet normalisation inside) and is resized bilinearly to (H, W) as the official code does; ``None``
    (the RGB distances) returns ``(images + 1) / 2``. The features are stored channels-last
    (``permute(0, 2, 3, 1)`` is contiguous: the points layout splatting reads, without a copy) and computed
    :data:`FEATURE_FRAMES` frames at a time, so the upsampler's full-resolution intermediates are held for a
    few frames only (the peak-memory term). ``graphed``: replay the network from a CUDA graph when no
    gradient is needed (same kernels; :mod:`met3r_metrics.cuda_graphs`); a user's network runs as it is
    (it may do what a graph cannot replay).

    >>> frame_features(torch.zeros(1, 3, 2, 2), None).flatten().tolist()
    [0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]
    """
    images01 = (images + 1) / 2
    if network is None:
        return images01
    n, (h, w) = images01.shape[0], images01.shape[-2:]
    out: Tensor | None = None
    for i in range(0, n, FEATURE_FRAMES):
        part = images01[i : i + FEATURE_FRAMES]
        if graphed:
            (feats,) = graphs_for(network).run("features", lambda x: (network(x),), part)
        else:
            feats = network(part)
        if feats.shape[-2:] != (h, w):
            feats = F.interpolate(feats, size=(h, w), mode="bilinear")
        if out is None:
            out = feats.new_empty((n, h, w, feats.shape[1]), dtype=torch.float32)
        out[i : i + FEATURE_FRAMES].copy_(feats.permute(0, 2, 3, 1))
    assert out is not None
    return out.permute(0, 3, 1, 2)
