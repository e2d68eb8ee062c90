"""The one strict loader, and building a frozen network from a state dict.

Every network of the package is loaded by :func:`build_frozen` (timm's ``build_model_with_cfg`` pattern): the
checkpoint goes through the network's filter (``filter_fn``, the ``checkpoint_filter_fn`` beside its model in
:mod:`met3r_metrics.models`), the network is built on the meta device (no random init), materialised on its
device and dtype, filled by :func:`load_strict` with a **copy** of the filtered tensors (so the network owns
its memory: state dicts read memory-mapped can change with their file, the network cannot), and frozen by
:func:`met3r_metrics.models.frozen.freeze`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

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
    factory: Callable[[dict[str, torch.Tensor]], M],
    state_dict: Mapping[str, Any],
    *,
    filter_fn: Callable[[Mapping[str, Any]], dict[str, torch.Tensor]] | None = None,
    what: str,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    official_key: Callable[[str], str] | None = None,
    hint: str = "",
) -> M:
    """``factory(filtered)`` built on the meta device, on ``device`` (default CPU) in ``dtype`` (default: the
    factory's), strictly loaded from ``filtered = filter_fn(state_dict)`` (copied) and frozen.

    Args:
        factory: builds the network from the filtered checkpoint (its architecture may follow the
            checkpoint: FeatUp's ViT depth, LPIPS's trunk). Its modules must keep all their tensors in
            ``state_dict()`` (no non-persistent buffers): nothing else is initialised.
        state_dict: the checkpoint as read (official key names).
        filter_fn: official keys -> the network's (``None``: the keys are the network's already).
        what, official_key, hint: how errors name the checkpoint and its keys (see :func:`load_strict`).

    Example: a tiny network whose checkpoint names its layer ``lin.`` while the module calls it ``proj.``:

    >>> import torch
    >>> from torch import nn
    >>> official = {"lin.weight": torch.ones(2, 3), "lin.bias": torch.zeros(2)}
    >>> net = build_frozen(lambda sd: nn.Sequential(nn.Linear(3, 2)), official, what="demo",
    ...                    filter_fn=lambda sd: {k.replace("lin.", "0."): v for k, v in sd.items()})
    >>> net(torch.ones(1, 3)).tolist(), net.training, any(p.requires_grad for p in net.parameters())
    ([[3.0, 3.0]], False, False)
    """
    state = dict(state_dict) if filter_fn is None else filter_fn(state_dict)
    with torch.device("meta"):
        model = factory(state)
    if dtype is not None:
        model.to(dtype=dtype)
    model.to_empty(device=device or "cpu")
    load_strict(model, state, what=what, official_key=official_key, hint=hint)
    return freeze(model)
