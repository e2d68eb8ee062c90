"""Frame selection: every ``data.frame_stride``-th frame from ``data.start``, at most ``data.max_frames``."""

from __future__ import annotations

import torch


def _selected_indices(n: int, stride: int, start: int, max_frames: int | None) -> list[int]:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"data.frame_stride must be an integer >= 1; got {stride!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"data.start must be an integer >= 0; got {start!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"data.max_frames must be null or an integer >= 1; got {max_frames!r}")
    return list(range(n))[start::stride][:max_frames]


def select_frames(views: torch.Tensor, *, stride: int = 1, start: int = 0, max_frames: int | None = None) -> torch.Tensor:
    """Every ``stride``-th frame from ``start``, at most ``max_frames`` of them."""
    if stride < 1:
        raise ValueError(f"data.frame_stride must be >= 1, got {stride}")
    views = views[start::stride]
    return views[:max_frames] if max_frames is not None else views
