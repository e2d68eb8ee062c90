"""Frame sizes: one size per sequence, the metric's size rule (multiples, minimum side) and the pinned,
antialiased resize."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import FrameSizeError

RESIZE_FILTERS = ("bicubic", "bilinear", "area", "nearest")


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _check_one_size(frames: list[torch.Tensor], names: list[str], where: str) -> None:
    """Frames of one sequence must share a size unless ``data.resize`` is set."""
    sizes = [tuple(f.shape[-2:]) for f in frames]
    if len(set(sizes)) > 1:
        k = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise FrameSizeError(
            f"frames of {where} have {len(set(sizes))} different sizes ({names[0]} is {_size_text(sizes[0])}, "
            f"{names[k]} is {_size_text(sizes[k])}): set data.resize=[H,W] to resize every frame to one size"
        )


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"data.resize must be an int or [height, width], got {list(size)}")
    return size  # type: ignore[return-value]


def resize_views(views: torch.Tensor, size: int | Sequence[int], filter: str = "bicubic") -> torch.Tensor:
    """Resize float ``(V, 3, H, W)`` in [0, 1] to ``size`` with a pinned, antialiased filter.

    ``bicubic``/``bilinear`` use ``torch.nn.functional.interpolate(..., antialias=True)`` (a
    proper low-pass when shrinking, like PIL); ``area`` is box averaging; ``nearest`` is for
    label-like data only.  Output clamped to [0, 1] (bicubic overshoots).  Frames are resized
    independently, so resizing one at a time gives the same pixels as resizing a batch.
    """
    h, w = _parse_size(size)
    if filter not in RESIZE_FILTERS:
        raise ValueError(f"data.resize_filter must be one of {', '.join(RESIZE_FILTERS)}; got {filter!r}")
    if tuple(views.shape[-2:]) == (h, w):
        return views
    kwargs: dict[str, Any] = {}
    if filter in ("bicubic", "bilinear"):
        kwargs = {"antialias": True, "align_corners": False}
    out = F.interpolate(views.float(), size=(h, w), mode=filter, **kwargs)
    return out.clamp_(0.0, 1.0)


def _round_to(v: int, m: int) -> int:
    return max(m, int(math.floor(v / m + 0.5)) * m)


def _size_invalid(h: int, w: int, multiple: int, height_multiple: int, min_side: int) -> bool:
    return bool(h % height_multiple or w % multiple or min(h, w) < min_side)


def _check_resize_target(resize: int | Sequence[int], multiple: int, height_multiple: int, min_side: int) -> tuple[int, int]:
    h, w = _parse_size(resize)
    if _size_invalid(h, w, multiple, height_multiple, min_side):
        raise FrameSizeError(
            f"data.resize={h}x{w} is invalid: height must be a multiple of {height_multiple}, width of {multiple}, "
            f"both >= {min_side}"
        )
    return h, w


def check_or_resize(
    views: torch.Tensor,
    *,
    resize: int | Sequence[int] | None,
    filter: str = "bicubic",
    multiple: int = 16,
    height_multiple: int | None = None,
    min_side: int = 32,
) -> torch.Tensor:
    """Apply the explicit ``resize``, or check that the frames already have a valid size.

    Valid = width a multiple of ``multiple`` (the ViT patch size), height a multiple of
    ``height_multiple`` (default ``multiple``; FeatUp's dino16 needs an even number of patch rows,
    i.e. 32), both at least ``min_side``.  Without an explicit ``resize``, invalid frames raise
    :class:`FrameSizeError` naming the setting to use.
    """
    mh = height_multiple or multiple
    if resize is not None:
        return resize_views(views, _check_resize_target(resize, multiple, mh, min_side), filter)
    h, w = views.shape[-2:]
    if _size_invalid(h, w, multiple, mh, min_side):
        sh, sw = max(_round_to(h, mh), min_side), max(_round_to(w, multiple), min_side)
        raise FrameSizeError(
            f"frames are {h}x{w}; height must be a multiple of {mh}, width of {multiple}, both >= {min_side}. "
            f"Resize explicitly (antialiased, recorded with the results), e.g. data.resize=[{sh},{sw}]"
        )
    return views
