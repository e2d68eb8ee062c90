"""Value ranges: ``data.value_range`` settings, the range of stored values decided once per tensor file,
and the mapping of stored values to float32 [0, 1]."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import ValueRangeError

#: ``data.value_range`` settings: ``auto`` decides once per tensor file (see :func:`decide_value_range`).
VALUE_RANGES = ("auto", "uint8", "01", "-11")
#: Values this far outside the declared range are tolerated (float rounding) and clamped.
RANGE_TOLERANCE = 1e-3


def _check_setting(value_range: str) -> None:
    if value_range not in VALUE_RANGES:
        raise ValueRangeError(f"data.value_range must be one of {', '.join(VALUE_RANGES)}; got {value_range!r}")


def decide_value_range(values: torch.Tensor, setting: str = "auto", *, what: str = "the data") -> tuple[str, str]:
    """The value range of stored pixel values -> ``(range, reason)``, range in ``uint8 | 01 | -11``.

    Called once over a whole tensor file (never per sequence: one sequence of a [-1, 1] file
    may hold no negative value, a white suit, and would be misread as [0, 1]).

    * ``uint8`` tensors are 0..255 (``setting`` auto or uint8; 01/-11 are refused).
    * other integer tensors must hold values in 0..255 (auto or uint8).
    * float tensors, ``auto``: some value below 0 -> ``-11``; else ``01``.  Values beyond both
      ranges (above 1, below -1) cannot be decided and are refused: set ``data.value_range``.
      A [-1, 1] file without any negative value is read as [0, 1]: set ``-11`` explicitly then.
    * an explicit ``setting`` is checked against the values.

    Values up to :data:`RANGE_TOLERANCE` outside the range are float rounding (clamped later).

    Raises:
        ValueRangeError: naming ``data.value_range``, the expected and the found range.
    """
    _check_setting(setting)
    dtype = str(values.dtype).replace("torch.", "")
    if values.dtype == torch.bool or values.is_complex():
        raise ValueRangeError(f"data.value_range: {what} has dtype {dtype}; expected uint8 or a float dtype")
    if values.dtype == torch.uint8:
        if setting in ("01", "-11"):
            raise ValueRangeError(
                f"data.value_range={setting} but {what} is uint8 (0..255): set data.value_range=auto or uint8"
            )
        return "uint8", f"dtype uint8: 0..255 ({'auto' if setting == 'auto' else 'set'})"
    if values.numel() == 0:
        raise ValueRangeError(f"data.value_range: {what} holds no values")
    lo, hi = (float(v) for v in torch.aminmax(values))
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise ValueRangeError(f"data.value_range: {what} holds non-finite values (NaN or inf)")
    found = f"values in [{lo:.6g}, {hi:.6g}]"
    tol = RANGE_TOLERANCE
    if not values.is_floating_point():
        if setting in ("01", "-11"):
            raise ValueRangeError(
                f"data.value_range={setting} but {what} has integer dtype {dtype}: expected a float dtype, "
                f"or set data.value_range=auto or uint8 for 0..255"
            )
        if lo < 0 or hi > 255:
            raise ValueRangeError(f"data.value_range={setting}: {what} has dtype {dtype} with {found}; expected 0..255")
        return "uint8", f"dtype {dtype}, {found}: 0..255"
    bounds = {"uint8": (0.0, 255.0), "01": (0.0, 1.0), "-11": (-1.0, 1.0)}
    if setting != "auto":
        low, high = bounds[setting]
        if lo < low - tol or hi > high + tol:
            raise ValueRangeError(
                f"data.value_range={setting} expects values in [{low:g}, {high:g}], but {what} ({dtype}) has {found}"
            )
        return setting, f"set explicitly; dtype {dtype}, {found}"
    if lo >= -tol and hi <= 1 + tol:
        return "01", f"auto: dtype {dtype}, {found}, no negative value in the whole file: [0, 1]"
    if lo >= -1 - tol and hi <= 1 + tol:
        return "-11", f"auto: dtype {dtype}, {found}, negative values: [-1, 1]"
    hint = "set data.value_range=uint8 if they are 0..255" if lo >= -tol and hi <= 255 + tol else "rescale them to [0, 1] or [-1, 1]"
    raise ValueRangeError(
        f"data.value_range=auto cannot decide the range of {what} ({dtype}, {found}): they fit neither [0, 1] "
        f"nor [-1, 1]; {hint}"
    )


def _to_unit(views: torch.Tensor, value_range: str) -> torch.Tensor:
    """Stored values of a decided range -> a new float32 tensor in [0, 1]."""
    if value_range == "uint8":
        out = views.float() / 255.0
    elif value_range == "-11":
        out = (views.float() + 1.0) / 2.0
    elif value_range in ("01", "uint16"):  # 16-bit images are read as float [0, 1]
        out = views.float().clone()
    else:
        raise ValueError(f"value_range must be one of {', '.join(VALUE_RANGES[1:])}; got {value_range!r}")
    return out.clamp_(0.0, 1.0)


def _refuse_float_range_for_pixels(root: Path, value_range: str) -> None:
    if value_range in ("01", "-11"):
        raise ValueRangeError(
            f"data.value_range={value_range} describes float tensor files, but data.path={root} holds image/video "
            f"frames, whose range their format fixes (8-bit 0..255, 16-bit 0..65535): set data.value_range=auto"
        )
