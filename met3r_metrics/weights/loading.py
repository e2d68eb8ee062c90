"""The one strict loader, and building a frozen network from a state dict.

Every network of the package is loaded by :func:`build_frozen`: built on the meta device (no random init),
materialised on its device and dtype, filled by :func:`load_strict` with a **copy** of the checkpoint's
tensors (so the network owns its memory: state dicts read memory-mapped can change with their file, the
network cannot), and frozen by :func:`met3r_metrics.models.frozen.freeze`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

import torch
from torch import nn

from ..models.frozen import freeze

__all__ = ["build_frozen", "load_strict"]

M = TypeVar("M", bound=nn.Module)


def load_strict(
    module: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    official_key: Callable[[str], str] | None = None,
    hint: str = "",
    assign: bool = False,
) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` (a copy unless ``assign``), after one key/shape check.

    Raises:
        RuntimeError: ``"<what>: checkpoint does not match the model (strict load). missing=N [...]
            unexpected=M [...] shape mismatches=[...]"``, keys shown by their official names
            (``official_key``), then ``hint``.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        name = official_key or (lambda k: k)

        def head(keys: list[str]) -> str:
            more = f" ... (+{len(keys) - 8})" if len(keys) > 8 else ""
            return ", ".join(name(k) for k in keys[:8]) + more

        raise RuntimeError(
            f"{what}: checkpoint does not match the model (strict load). missing={len(missing)} [{head(missing)}] "
            f"unexpected={len(unexpected)} [{head(unexpected)}] shape mismatches={shapes[:4]}{hint}"
        )
    module.load_state_dict(state_dict, strict=True, assign=assign)


def build_frozen(
    factory: Callable[[], M],
    state_dict: Mapping[str, torch.Tensor],
    *,
    what: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    official_key: Callable[[str], str] | None = None,
    hint: str = "",
) -> M:
    """``factory()`` built on the meta device, on ``device`` (default CPU) in ``dtype`` (default: the
    factory's), strictly loaded from ``state_dict`` (copied) and frozen. The factory's modules must keep
    all their tensors in ``state_dict()`` (no non-persistent buffers): nothing else is initialised."""
    with torch.device("meta"):
        model = factory()
    if dtype is not None:
        model.to(dtype=dtype)
    model.to_empty(device=device or "cpu")
    load_strict(model, state_dict, what=what, official_key=official_key, hint=hint)
    return freeze(model)
