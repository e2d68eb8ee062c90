"""Input contract of MEt3R (as torchmetrics' LPIPS): validation and the two value-range conversions.

* ``images``: (B, V, 3, H, W), V >= 2 views per sequence. The frame-size rule comes from the
  settings (:meth:`met3r_metrics.Settings.frame_size_error`): H and W multiples of 16 and >= 32, and
  with DINO features (``distance="cosine"``) H a multiple of 32 (the official FeatUp featurizer
  crashes on an odd number of 16-pixel patch rows, whatever the upsampler).
* float images: ``normalize=False`` (default, the official convention) means values in [-1, 1];
  ``normalize=True`` means [0, 1]. ``uint8`` images are always read as 0..255.
* Anything else raises a ``ValueError`` that names the argument, what was expected and what came.

This is the only place that converts between the conventions: :func:`validate_images` to the
scorer's [-1, 1], :func:`to_unit_range` to [0, 1] (for FID, pictures and resizing).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .settings import Settings

__all__ = ["validate_images", "to_unit_range", "same_device"]

# Tolerated overshoot of the value range (resampling filters overshoot by an ulp or so); values are
# clamped back afterwards.
_RANGE_SLACK = 1e-4


def _fail(name: str, expected: str, got: str) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got}")


def same_device(tensor_device: torch.device, wanted: torch.device | str) -> bool:
    """``torch.device("cuda") != torch.device("cuda:0")``: compare types and explicit indices only."""
    dev = torch.device(wanted)
    return tensor_device.type == dev.type and (dev.index is None or tensor_device.index == dev.index)


def validate_images(
    images: Tensor,
    settings: Settings,
    *,
    normalize: bool = False,
    device: torch.device | str | None = None,
) -> Tensor:
    """Check ``images`` against the MEt3R input contract and return them as float32 in [-1, 1].

    Args:
        images: (B, V, 3, H, W) float (any floating dtype) or uint8.
        settings: the frame-size rule depends on them (see the module docstring).
        normalize: float inputs are in [0, 1] (True) or [-1, 1] (False, default).
        device: when given, ``images`` must already be on this device (no silent copies).

    Returns:
        (B, V, 3, H, W) float32 tensor in [-1, 1] (differentiable w.r.t. float inputs).
    """
    if not isinstance(normalize, bool):
        raise _fail("normalize", "a bool", repr(normalize))
    if not isinstance(images, Tensor):
        raise _fail("images", "a torch.Tensor of shape (B, V, 3, H, W)", f"{type(images).__name__}")
    shape = tuple(images.shape)
    if images.ndim != 5:
        raise _fail("images", "a 5-d tensor (B, V, 3, H, W)", f"{images.ndim}-d tensor of shape {shape}")
    b, v, c, h, w = shape
    if b < 1:
        raise _fail("images", "at least one sequence (B >= 1)", f"shape {shape}")
    if v < 2:
        raise _fail("images", "V >= 2 views per sequence in (B, V, 3, H, W)", f"V={v} (shape {shape})")
    if c != 3:
        raise _fail("images", "3 colour channels in (B, V, 3, H, W)", f"{c} channels (shape {shape})")
    why = settings.frame_size_error(h, w)
    if why is not None:
        raise ValueError(f"images: expected {why} (resize or crop first), got {h}x{w} (shape {shape})")
    if device is not None and not same_device(images.device, device):
        raise _fail("images", f"a tensor on the metric's device {torch.device(device)}", f"a tensor on {images.device}")
    if images.device.type == "meta":
        raise _fail("images", "a tensor with data", "a tensor on the meta device")
    if images.dtype == torch.uint8:
        return images.to(torch.float32) / 127.5 - 1.0
    if not images.is_floating_point():
        raise _fail("images", "a floating point or uint8 tensor", f"dtype {images.dtype}")
    x = images.to(torch.float32)
    lo, hi = (0.0, 1.0) if normalize else (-1.0, 1.0)
    with torch.no_grad():
        finite = torch.isfinite(x).all()
        xmin, xmax = torch.aminmax(x.detach())
    if not bool(finite):
        raise _fail("images", "finite values", "NaN or inf")
    xmin_f, xmax_f = float(xmin), float(xmax)
    if xmin_f < lo - _RANGE_SLACK or xmax_f > hi + _RANGE_SLACK:
        hint = " (images in [0, 1]? pass normalize=True)" if not normalize and xmin_f >= 0 else ""
        hint = hint or (" (images in [-1, 1]? pass normalize=False)" if normalize and xmin_f < 0 else "")
        hint = hint or (" (uint8 images are read as 0..255; float images must be scaled)" if xmax_f > 1.5 else "")
        raise _fail(
            "images", f"values in [{lo:g}, {hi:g}] (normalize={normalize})",
            f"values in [{xmin_f:.4g}, {xmax_f:.4g}]{hint}",
        )
    if xmin_f < lo or xmax_f > hi:
        x = x.clamp(lo, hi)
    return x * 2.0 - 1.0 if normalize else x


def to_unit_range(images: Tensor, normalize: bool) -> Tensor:
    """Images in the metric's input convention -> float32 in [0, 1] (any shape).

    uint8 is 0..255; float is [-1, 1] when ``normalize=False`` and [0, 1] when ``normalize=True``.
    """
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    images = images.float()
    if not normalize:
        images = (images + 1.0) / 2.0
    return images.clamp(0.0, 1.0)
