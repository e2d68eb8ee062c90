"""Optional fused Triton kernels for CUDA inference (adaptive convolution, JBU range logits, alpha compositing).

The exact PyTorch paths in :mod:`met3r_metrics.models.adaptive_conv`, :mod:`met3r_metrics.models.featup`
and :mod:`met3r_metrics.render` stay the default everywhere and are the reference. A fused kernel runs only
when :func:`should_use` says so:

* every tensor involved is on a CUDA device,
* ``triton`` imports (it is imported lazily, on the first CUDA call only; the package works without it; an
  installed triton that fails to import warns once, naming the error),
* no autograd is needed (``torch.is_grad_enabled()`` is False or no input requires grad),
* the environment variable ``MET3R_DISABLE_TRITON`` is not ``"1"`` (read at each call),
* the module switch is on (:func:`set_enabled`; default on).

Each dispatching function documents which path runs. The kernel modules import ``triton`` at top level, so
callers reach them through :func:`triton_module` once :func:`should_use` holds: the package's one deferred
import of an optional dependency, kept here beside the probe that guards it.
"""

from __future__ import annotations

import functools
import importlib
import warnings
from types import ModuleType

import torch

from ..switch import Switch

__all__ = [
    "TRITON_MODULES", "set_enabled", "is_enabled", "enabled", "triton_importable", "triton_available", "should_use",
    "triton_module",
]

#: The fused-kernel modules of this package (each imports ``triton`` at top level).
TRITON_MODULES = ("adaptive_conv_triton", "bicubic_triton", "composite_triton")

#: The one switch of the fused kernels (the CUDA graphs have one of the same kind: met3r_metrics.switch); its
#: methods are the module's functions (benchmarks compare with ``set_enabled(False)``).
_SWITCH = Switch("MET3R_DISABLE_TRITON")
set_enabled, is_enabled, enabled = _SWITCH.set_enabled, _SWITCH.is_enabled, _SWITCH.enabled


@functools.lru_cache(maxsize=None)
def triton_importable() -> bool:
    """Whether ``import triton`` works (cached; imported on first call only).

    Triton not installed: False, silently (the package works without it). Installed but failing to import
    (a broken install: a missing shared library, a version clash, ...): False, with one warning naming the
    error, since the answer is cached and the fused kernels then stay off for the whole process.
    """
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ModuleNotFoundError as err:
        if err.name == "triton":  # not installed
            return False
        _warn_broken(err)
        return False
    except Exception as err:  # noqa: BLE001 - any failure of a broken install
        _warn_broken(err)
        return False
    return True


def _warn_broken(err: BaseException) -> None:
    reason = (str(err).strip().splitlines() or [""])[0]
    warnings.warn(
        f"MEt3R: triton is installed but does not import ({type(err).__name__}: {reason}); the fused CUDA kernels "
        "are off for this process and the PyTorch paths run (same results, slower). Fix the triton install, or "
        "set MET3R_DISABLE_TRITON=1 to choose the PyTorch paths without this warning",
        RuntimeWarning,
        stacklevel=3,
    )


def triton_available(device: torch.device | str) -> bool:
    """Fused kernels can run for tensors on ``device``: a CUDA device and triton importable."""
    return torch.device(device).type == "cuda" and triton_importable()


def should_use(*tensors: torch.Tensor) -> bool:
    """Dispatch rule shared by all hooks (see the module docstring)."""
    if not is_enabled():
        return False
    if not all(t.device.type == "cuda" for t in tensors):
        return False
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return False
    return triton_importable()


def triton_module(name: str) -> ModuleType:
    """The fused-kernel module ``met3r_metrics.kernels.<name>``, imported on first use.

    Call it only where :func:`should_use` held (triton imports): the module imports ``triton`` at top level.

    Raises:
        ValueError: ``name`` is not one of :data:`TRITON_MODULES`.
    """
    if name not in TRITON_MODULES:
        raise ValueError(f"name: expected one of {', '.join(TRITON_MODULES)}, got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")
