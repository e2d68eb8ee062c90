"""MEt3R's one precision policy: TF32 switches read and pinned through the API the running torch uses (never a
mix of two), and the bfloat16 autocast of the networks.

Who uses it: the scorer (:func:`scoring_precision` around a call, :func:`network_autocast` around each
network), the CUDA-graph key (:func:`autocast_state`, :func:`tf32_flags`) and the benchmarks
(:func:`set_tf32` for a process-wide switch such as the official module's).

The policy of ``Settings.precision``: ``fp32`` TF32 off (a caller's global TF32 must not change the recorded
numbers); ``tf32`` TF32 on; ``bf16`` TF32 on and the networks under bfloat16 autocast. Geometry glue, splatting
and distances always run in float32 (autocast off).

torch >= 2.9 has per-backend ``fp32_precision`` strings (``torch.backends.cuda.matmul.fp32_precision``,
``torch.backends.cudnn.conv.fp32_precision``: ``"tf32"`` / ``"ieee"``, ``"none"`` = inherit). Once a user
sets one of them, reading the legacy ``allow_tf32`` flags raises ``RuntimeError: ... mix of the legacy and
new APIs``. So with that API present, the flags are read and set through it only; an older torch has the
legacy ``allow_tf32`` flags only, and they are used there. torch's CUDA kernels read the new API themselves
(``float32Precision(CUDA, MATMUL)``), so a pin through it is what runs.

The switches pinned are the two MEt3R's networks use: cuBLAS matmul and cuDNN convolution.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["new_api", "tf32_flags", "pinned_tf32", "set_tf32", "precision_context", "scoring_precision",
           "network_autocast", "autocast_state"]


def new_api() -> bool:
    """Whether the running torch has the per-backend ``fp32_precision`` API (checked per call)."""
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(
        getattr(torch.backends.cudnn, "conv", None), "fp32_precision")


def _knobs() -> tuple:
    return torch.backends.cuda.matmul, torch.backends.cudnn.conv


def tf32_flags() -> tuple[bool, bool]:
    """(cuBLAS matmul TF32 on, cuDNN convolution TF32 on), read through the running torch's API."""
    if new_api():
        return tuple(k.fp32_precision == "tf32" for k in _knobs())  # type: ignore[return-value]
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32)


def _targets(enabled: bool) -> tuple[object, list[tuple[object, str]]]:
    """(the wanted value, the (object, attribute) switches) of the running torch's TF32 API."""
    if new_api():
        return ("tf32" if enabled else "ieee"), [(k, "fp32_precision") for k in _knobs()]
    return bool(enabled), [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]


def set_tf32(enabled: bool) -> None:
    """Switch TF32 on or off process-wide for cuBLAS matmul and cuDNN convolution (what a benchmark of the
    official code, which switches TF32 on at import, needs); the scorer never calls it."""
    want, targets = _targets(enabled)
    for obj, attr in targets:
        setattr(obj, attr, want)


@contextlib.contextmanager
def pinned_tf32(enabled: bool) -> Iterator[None]:
    """TF32 on (``enabled``) or off for cuBLAS matmul and cuDNN convolution inside the block, restored on exit.

    A switch already in the wanted state is left alone (and not restored), so the block writes nothing for a
    caller whose switches already match.
    """
    changed: list[tuple[object, str, object]] = []
    want, targets = _targets(enabled)
    try:
        for obj, attr in targets:
            old = getattr(obj, attr)
            if old != want:
                setattr(obj, attr, want)
                changed.append((obj, attr, old))
        yield
    finally:
        for obj, attr, old in reversed(changed):
            setattr(obj, attr, old)


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The float32 matmul/convolution mode of ``precision`` for one scoring call, restored on exit.

    fp32 switches TF32 off; tf32 and bf16 switch it on (bf16's autocast is :func:`network_autocast`).
    Nothing is pinned off CUDA: TF32 is a CUDA notion.
    """
    if device.type != "cuda":
        yield
        return
    with pinned_tf32(precision != "fp32"):
        yield


@contextlib.contextmanager
def scoring_precision(precision: str, device: torch.device) -> Iterator[None]:
    """What one scoring call runs under: autocast off (a caller's mixed precision must not leak into the
    geometry glue, splatting and distances) and the TF32 mode of ``precision``."""
    with torch.autocast(device_type=device.type, enabled=False), precision_context(precision, device):
        yield


def network_autocast(precision: str, device: torch.device) -> Any:
    """bfloat16 autocast for a network call when ``precision="bf16"``; float32 (autocast off) otherwise.

    No cast cache: a captured CUDA graph must cast the weights itself, not read a cached copy freed later.
    """
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                          cache_enabled=False)


def autocast_state(device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(autocast on, its dtype or None) for ``device``'s type: the autocast part of a CUDA-graph key."""
    on = torch.is_autocast_enabled(device.type)
    return on, torch.get_autocast_dtype(device.type) if on else None
