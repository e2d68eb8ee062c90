"""Loading ``distance="lpips"``'s network: the AlexNet trunk (torchvision's weights) + LPIPS v0.1 linear layers.

The trunk comes from the registry (``alexnet_torchvision``: torchvision's ``alexnet-owt-7be5be79.pth``, in
``torch.hub.get_dir()/checkpoints`` like torchvision keeps it), an ``https://`` URL, a local
``.pth``/``.pt``/``.bin``/``.ckpt``/``.safetensors`` file or a loaded state dict, with torchvision's keys
(``features.<i>.*``), a bare features state dict (``<i>.*``) or lpips' module keys. The five linear layers
ship with the package (``met3r_metrics/data/lpips_alex_v0.1_lins.safetensors``, BSD-2-Clause); a source
that holds ``lin<k>.model.1.weight`` keys provides its own. Keys go through the checkpoint filter beside the
model (:func:`~met3r_metrics.models.lpips.checkpoint_filter_fn`), then the one strict loader.

The trunk decides the network: a VGG-16 source (registry ``vgg16_torchvision``, torchvision's ``vgg16-397923af.pth``,
or any file with its keys) builds LPIPS-VGG with the shipped v0.1 VGG linear layers
(``lpips_vgg_v0.1_lins.safetensors``, from the same wheel, BSD-2-Clause). The official MEt3R uses AlexNet only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..models import lpips
from ..models.lpips import LPIPS, to_official_key, trunk_of
from .formats import read_safetensors
from .loading import build_frozen
from .registry import ALEXNET_CHECKPOINT
from .sources import _read_source, _repr_label

__all__ = ["LPIPS_LINS_FILE", "LPIPS_LINS_FILES", "load_lpips"]

#: The LPIPS v0.1 AlexNet linear layers shipped with the package (lpips 0.1.4's ``weights/v0.1/alex.pth``).
LPIPS_LINS_FILE = Path(__file__).resolve().parent.parent / "data" / "lpips_alex_v0.1_lins.safetensors"
#: Shipped v0.1 linear layers per trunk (lpips 0.1.4's ``weights/v0.1/{alex,vgg}.pth``).
LPIPS_LINS_FILES = {"alex": LPIPS_LINS_FILE, "vgg": LPIPS_LINS_FILE.with_name("lpips_vgg_v0.1_lins.safetensors")}


def load_lpips(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    download: bool = True,
    argument: str = "lpips_weights",
) -> LPIPS:
    """Build LPIPS (AlexNet or VGG-16 trunk, as the source holds; v0.1 linear layers), load it strictly, freeze it.

    Args:
        source: the AlexNet trunk: ``None`` -> registry ``"alexnet_torchvision"``; a registry name; an https
            URL; a local file; or a state dict (keys: see the module docstring). Linear layers found in it
            are used, else the shipped ones.
        device, dtype: where the network lives (default CPU, float32).
        download: allow downloading a registry / URL file that is not cached.
        argument: the setting named in errors.

    Raises:
        WeightsNotFoundError: the trunk file is missing and cannot be downloaded.
        ValueError: an unknown source or a key of no known form.
        RuntimeError: the checkpoint does not match the network (strict load), keys named officially.
    """
    raw = _read_source(ALEXNET_CHECKPOINT if source is None else source, download, argument, kinds=("alexnet", "vgg"))
    net = trunk_of(raw)

    def with_lins(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
        """LPIPS's filter, then the shipped v0.1 linear layers of the trunk where the source has none."""
        state = lpips.checkpoint_filter_fn(checkpoint, argument=argument)
        if not any(k.startswith("lins.") for k in state):
            state.update(lpips.checkpoint_filter_fn(read_safetensors(LPIPS_LINS_FILES[net]), argument="LPIPS_LINS_FILES"))
        return state

    return build_frozen(
        lambda sd: LPIPS(net), raw, filter_fn=with_lins,
        what=f"LPIPS{'' if net == 'alex' else '-' + net} ({_repr_label(source, argument)})", device=device, dtype=dtype,
        official_key=to_official_key,
    )
