"""Input contract of MEt3R (as torchmetrics' LPIPS): validation and conversion to [-1, 1].

* ``images``: (B, V, 3, H, W), V >= 2 views per sequence, H and W multiples of 16 and >= 32
  (DINO and DUSt3R/MASt3R use 16-pixel patches); with the DINO features (``distance="cosine"``)
  H / 16 must also be even (the official FeatUp path crashes on an odd number of patch rows).
* float images: ``normalize=False`` (default, the official convention) means values in [-1, 1];
  ``normalize=True`` means [0, 1]. ``uint8`` images are always read as 0..255.
* Anything else raises a ``ValueError`` that names the argument, what was expected and what came.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["validate_images", "to_signed_unit", "MIN_SIDE", "PATCH"]

PATCH = 16
MIN_SIDE = 32
# Tolerated overshoot of the value range (resampling filters overshoot by an ulp or so); values are
# clamped back afterwards.
_RANGE_SLACK = 1e-4


def _fail(name: str, expected: str, got: str) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got}")


def validate_images(
    images: Tensor,
    *,
    normalize: bool = False,
    name: str = "images",
    device: torch.device | None = None,
    check_values: bool = True,
    even_patch_rows: bool = False,
) -> Tensor:
    """Check ``images`` against the MEt3R input contract and return them as float32 in [-1, 1].

    Args:
        images: (B, V, 3, H, W) float (any floating dtype) or uint8.
        normalize: float inputs are in [0, 1] (True) or [-1, 1] (False, default).
        name: argument name used in error messages.
        device: when given, ``images`` must already be on this device (no silent copies).
        check_values: check NaN/inf and the value range (one device sync).
        even_patch_rows: also require an even number of 16-pixel patch rows (H % 32 == 0): the
            official FeatUp DINO path crashes otherwise, so no reference behaviour exists.

    Returns:
        (B, V, 3, H, W) float32 tensor in [-1, 1] (differentiable w.r.t. float inputs).
    """
    if not isinstance(images, Tensor):
        raise _fail(name, "a torch.Tensor of shape (B, V, 3, H, W)", f"{type(images).__name__}")
    if images.ndim != 5:
        raise _fail(name, "a 5-d tensor (B, V, 3, H, W)", f"{images.ndim}-d tensor of shape {tuple(images.shape)}")
    b, v, c, h, w = images.shape
    if b < 1:
        raise _fail(name, "at least one sequence (B >= 1)", f"shape {tuple(images.shape)}")
    if v < 2:
        raise _fail(name, "V >= 2 views per sequence in (B, V, 3, H, W)", f"V={v} (shape {tuple(images.shape)})")
    if c != 3:
        raise _fail(name, "3 colour channels in (B, V, 3, H, W)", f"{c} channels (shape {tuple(images.shape)})")
    for side, size in (("H", h), ("W", w)):
        if size < MIN_SIDE or size % PATCH:
            raise _fail(
                name, f"{side} a multiple of {PATCH} and >= {MIN_SIDE} (resize or crop first)",
                f"{side}={size} (shape {tuple(images.shape)})",
            )
    if even_patch_rows and (h // PATCH) % 2:
        raise _fail(
            name, f"H / {PATCH} even (H a multiple of {2 * PATCH}) for the DINO+FeatUp features, which crash on "
            "an odd number of patch rows in the official code", f"H={h} (shape {tuple(images.shape)})",
        )
    if device is not None and images.device != torch.device(device):
        # torch.device("cuda") != torch.device("cuda:0"): compare types and explicit indices only
        dev = torch.device(device)
        same = images.device.type == dev.type and (dev.index is None or images.device.index == dev.index)
        if not same:
            raise _fail(name, f"a tensor on the metric's device {dev}", f"a tensor on {images.device}")
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 127.5 - 1.0
    if not images.is_floating_point():
        raise _fail(name, "a floating point or uint8 tensor", f"dtype {images.dtype}")
    if not isinstance(normalize, bool):
        raise _fail("normalize", "a bool", repr(normalize))
    x = images.to(torch.float32)
    lo, hi = (0.0, 1.0) if normalize else (-1.0, 1.0)
    if check_values:
        with torch.no_grad():
            finite = torch.isfinite(x).all()
            xmin, xmax = torch.aminmax(x.detach())
        if not bool(finite):
            raise _fail(name, "finite values", "NaN or inf")
        xmin_f, xmax_f = float(xmin), float(xmax)
        if xmin_f < lo - _RANGE_SLACK or xmax_f > hi + _RANGE_SLACK:
            hint = " (images in [0, 1]? pass normalize=True)" if not normalize and xmin_f >= 0 else ""
            hint = hint or (" (images in [-1, 1]? pass normalize=False)" if normalize and xmin_f < 0 else "")
            hint = hint or (" (uint8 images are read as 0..255; float images must be scaled)" if xmax_f > 1.5 else "")
            raise _fail(
                name, f"values in [{lo:g}, {hi:g}] (normalize={normalize})",
                f"values in [{xmin_f:.4g}, {xmax_f:.4g}]{hint}",
            )
        if xmin_f < lo or xmax_f > hi:
            x = x.clamp(lo, hi)
    return to_signed_unit(x, normalize)


def to_signed_unit(x: Tensor, normalize: bool) -> Tensor:
    """[0, 1] -> [-1, 1] when ``normalize``; identity otherwise."""
    return x * 2.0 - 1.0 if normalize else x
