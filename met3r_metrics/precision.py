"""TF32 switches read and pinned through the API the running torch uses, never a mix of two.

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

import torch

__all__ = ["new_api", "tf32_flags", "pinned_tf32"]


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


@contextlib.contextmanager
def pinned_tf32(enabled: bool) -> Iterator[None]:
    """TF32 on (``enabled``) or off for cuBLAS matmul and cuDNN convolution inside the block, restored on exit.

    A switch already in the wanted state is left alone (and not restored), so the block writes nothing for a
    caller whose switches already match.
    """
    changed: list[tuple[object, str, object]] = []
    if new_api():
        want: object = "tf32" if enabled else "ieee"
        targets = [(k, "fp32_precision") for k in _knobs()]
    else:
        want = bool(enabled)
        targets = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32")]
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
