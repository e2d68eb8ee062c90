"""Loading ``backbone="raft"``'s network: torchvision's RAFT-large weights into :class:`~met3r_metrics.models.raft.RAFT`.

The weights come from the registry (``raft_large_torchvision``: torchvision's ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``,
what ``raft_large(pretrained=True)`` loads, in ``torch.hub.get_dir()/checkpoints`` like torchvision keeps it, so a
file torchvision already downloaded is reused), an ``https://`` URL, a local ``.pth``/``.pt``/``.bin``/``.ckpt``/
``.safetensors`` file or a loaded state dict, with torchvision's keys (optionally nested under ``state_dict`` and/or
prefixed ``module.`` / ``model.``). Torch files are read with ``weights_only`` (no code from a pickle runs). The keys
are the model's own: no mapping beyond the prefixes (the filter beside the model,
:func:`met3r_metrics.models.raft.checkpoint_filter_fn`), then the one strict loader.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from typing import Any

import torch

from ..models import raft
from ..models.raft import RAFT, convert_raft_state_dict
from .loading import build_frozen
from .registry import RAFT_CHECKPOINT
from .sources import _read_source, _repr_label

__all__ = ["convert_raft_state_dict", "load_raft"]  # the filter's old import path kept

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
    return build_frozen(
        lambda sd: RAFT(), raw, filter_fn=functools.partial(raft.checkpoint_filter_fn, argument=argument),
        what=f"RAFT ({_repr_label(source, argument)})", device=device, dtype=dtype,
    )
