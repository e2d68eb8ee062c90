"""Loading ``backbone="raft"``'s network: torchvision's RAFT-large weights into :class:`~met3r_metrics.models.raft.RAFT`.

The weights come from the registry (``raft_large_torchvision``: torchvision's ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``,
what ``raft_large(pretrained=True)`` loads, in ``torch.hub.get_dir()/checkpoints`` like torchvision keeps it, so a
file torchvision already downloaded is reused), an ``https://`` URL, a local ``.pth``/``.pt``/``.bin``/``.ckpt``/
``.safetensors`` file or a loaded state dict, with torchvision's keys (optionally nested under ``state_dict`` and/or
prefixed ``module.`` / ``model.``). Torch files are read with ``weights_only`` (no code from a pickle runs). The keys
are the model's own: no mapping beyond the prefixes, then the one strict loader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from ..models.raft import RAFT
from .features import _read_source
from .loading import build_frozen
from .registry import RAFT_CHECKPOINT

__all__ = ["convert_raft_state_dict", "load_raft"]

_ROOTS = ("feature_encoder.", "context_encoder.", "update_block.", "mask_predictor.")


def convert_raft_state_dict(raw: Mapping[str, Any], *, argument: str = "backbone_weights") -> dict[str, torch.Tensor]:
    """torchvision ``raft_large`` keys (possibly prefixed ``module.`` / ``model.``) -> :class:`RAFT` keys (the same).

    Raises:
        ValueError: no RAFT key in ``raw`` (e.g. a DUSt3R file passed as RAFT weights), naming ``argument``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        k = str(key)
        for prefix in ("module.", "model."):
            if k.startswith(prefix) and k[len(prefix):].startswith(_ROOTS):
                k = k[len(prefix):]
        if isinstance(value, torch.Tensor):
            out[k] = value
    if not any(k.startswith(_ROOTS) for k in out):
        some = ", ".join(list(map(str, raw))[:3])
        raise ValueError(
            f"{argument}: expected torchvision raft_large weights (keys feature_encoder.*, update_block.*, ...), "
            f"got a checkpoint with keys {some} ..."
        )
    return out


def load_raft(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    download: bool = True,
    argument: str = "backbone_weights",
) -> RAFT:
    """Build RAFT-large, load it strictly and freeze it (batch norm pinned in eval mode).

    Args:
        source: ``None`` -> registry ``"raft_large_torchvision"``; a registry name; an https URL; a local file; or a
            state dict (torchvision keys).
        device, dtype: where the network lives (default CPU, float32).
        download: allow downloading a registry / URL file that is not cached.
        argument: the setting named in errors.

    Raises:
        WeightsNotFoundError: the file is missing and cannot be downloaded (names the file and ``met3r-download``).
        ValueError: an unknown source, or a file without RAFT keys.
        RuntimeError: the checkpoint does not match the network (strict load).
    """
    raw = _read_source(RAFT_CHECKPOINT if source is None else source, download, argument, kinds=("raft",))
    state = convert_raft_state_dict(raw, argument=argument)
    label = f"{argument}=<state dict>" if isinstance(source, Mapping) else f"{argument}={source!r}"
    return build_frozen(RAFT, state, what=f"RAFT ({label})", device=device, dtype=dtype)
