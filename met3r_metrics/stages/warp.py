"""Stage (``backbone="raft"``): view b's features warped onto view a by the flow, the counterpart of splatting.

Entry point :func:`warp_pairs` (the warp and its validity mask are :func:`met3r_metrics.flow.warp_backward`).
Maps and masks are at the input size: ``img_size`` does not apply, as in the official code.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..flow import warp_backward
from ..settings import Settings

__all__ = ["warp_pairs"]


def warp_pairs(flow: Tensor, first: Sequence[Tensor], second: Sequence[Tensor], settings: Settings) -> dict[str, Tensor]:
    """Bring view b of each pair onto view a along the flow.

    Args:
        flow: (n, 2, H, W) flow from view a to view b, pixels (RAFT's last estimate).
        first, second: n per-frame features (C, H, W) of view a and view b (RGB: in [0, 1]).
        settings: ``flow_mask``; for the RGB distances ``flow_rgb_range`` (``"signed"``: compared in [-1, 1],
            the official arithmetic ``2 x - 1``).

    Returns:
        dict with ``first`` (n, C, H, W) view a, ``second`` (n, C, H, W) view b warped onto it and ``mask``
        (n, H, W) bool, the valid pixels.
    """
    a, b = torch.stack(list(first)), torch.stack(list(second))
    if not settings.uses_features and settings.flow_rgb_range == "signed":
        a, b = 2 * a - 1, 2 * b - 1
    warped, valid = warp_backward(b, flow, mask=settings.flow_mask)
    return {"first": a, "second": warped, "mask": valid}
