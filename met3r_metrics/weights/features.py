"""Loading MEt3R's feature path: DINO ViT-S/16 (+ ChannelNorm) and FeatUp's JBU stack, strictly.

Sources are registry names, URLs, local ``.ckpt``/``.pth``/``.pt``/``.bin``/``.safetensors`` files with the
official key names, or already loaded state dicts. Keys go through the FeatUp / DINO checkpoint filters
beside the models (:func:`~met3r_metrics.models.featup.convert_featup_state_dict`,
:func:`~met3r_metrics.models.dino.convert_dino_state_dict`), then the one strict loader.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from ..models import dino, featup
from ..models.dino import DinoFeaturizer, convert_dino_state_dict
from ..models.featup import JBUStack, UpsampledDino, checkpoint_vit_depth, to_official_key
from .loading import build_frozen
from .registry import DINO_CHECKPOINT, FEATUP_CHECKPOINTS
from .sources import _label, _read_source

__all__ = ["load_dino_featurizer", "load_featup_dino"]

_EMBED_DIM = 384  # ViT-S/16: what DinoFeaturizer builds


def load_featup_dino(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    use_norm: bool = True,
    depth: int | None = 12,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    dino_source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    download: bool = True,
    argument: str = "source",
) -> UpsampledDino:
    """Build MEt3R's feature path (DINO ViT-S/16 + FeatUp JBU), load it strictly and freeze it.

    Args:
        source: ``None`` -> registry ``"featup_dino16_jbu"`` (``"featup_dino16_jbu_no_norm"`` when
            ``use_norm=False``), resolved by :func:`met3r_metrics.weights.checkpoint_file` (torch hub cache /
            download / clear offline error); a registry name; an ``https://`` URL (torch hub cache); a local
            ``.ckpt``/``.pth``/``.safetensors`` file with FeatUp's official key names (``state_dict``
            nesting allowed); or an already loaded state dict.
        use_norm: FeatUp's ChannelNorm after the ViT (MEt3R: True).
        depth: ViT depth (12 for the real checkpoint); ``None`` reads it from the checkpoint.
        dino_source: where to take the 150 ViT tensors from when the FeatUp checkpoint lacks them
            (default: registry ``"dino_vits16"`` = ``dino_deitsmall16_pretrain.pth``). Unused otherwise.
        download: allow downloading registry/URL files that are not cached yet (offline, a missing file
            raises ``WeightsNotFoundError`` naming the file and ``met3r-download <name>``).
        argument: the name errors give ``source`` (the metric passes ``'feature_weights'``).

    Returns:
        :class:`UpsampledDino` (``.featurizer``, ``.upsampler``) in eval mode, every parameter frozen, owning
        its memory. ``forward(images01 (B, 3, H, W) in [0, 1]) -> (B, 384, H, W)``.
    """
    source = FEATUP_CHECKPOINTS[use_norm] if source is None else source

    def with_vit(raw: Mapping[str, Any]) -> dict[str, Tensor]:
        """FeatUp's filter, then the ViT tensors from ``dino_source`` where the FeatUp file lacks them."""
        sd = featup.checkpoint_filter_fn(raw)
        if not any(k.startswith("featurizer.vit.") for k in sd):
            sd.update(convert_dino_state_dict(_read_source(dino_source or DINO_CHECKPOINT, download, "dino_source")))
        return sd

    def factory(sd: Mapping[str, Tensor]) -> UpsampledDino:
        vit_depth = checkpoint_vit_depth(sd) if depth is None else depth
        return UpsampledDino(DinoFeaturizer(depth=vit_depth, use_norm=use_norm), JBUStack(_EMBED_DIM))

    return build_frozen(
        factory, _read_source(source, download, argument), filter_fn=with_vit, what=_label(source, argument),
        device=device, dtype=dtype, official_key=to_official_key,
    )


def load_dino_featurizer(
    source: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    *,
    use_norm: bool = False,
    depth: int = 12,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    download: bool = True,
    argument: str = "source",
) -> DinoFeaturizer:
    """DINO ViT-S/16 featurizer from the official DINO checkpoint only (``dino_deitsmall16_pretrain.pth``).

    ``source``: ``None`` -> registry ``"dino_vits16"``; a registry name, URL, local file or state dict.
    Strict on the 150 ViT tensors. With ``use_norm=True`` the ChannelNorm affine parameters are not in
    that file and keep LayerNorm's initial values (weight 1, bias 0); load a FeatUp checkpoint with
    :func:`load_featup_dino` for the trained ones. Returns the frozen (B, 3, H, W) [0, 1] ->
    (B, 384, H/16, W/16) featurizer.
    """
    source = DINO_CHECKPOINT if source is None else source

    def with_norm(raw: Mapping[str, Any]) -> dict[str, Tensor]:
        """DINO's filter, then ChannelNorm's initial values (not in the DINO file) when ``use_norm``."""
        sd = dino.checkpoint_filter_fn(raw)
        if use_norm:  # not in the DINO file: LayerNorm's initial values
            sd["channel_norm.weight"] = torch.ones(_EMBED_DIM)
            sd["channel_norm.bias"] = torch.zeros(_EMBED_DIM)
        return sd

    return build_frozen(
        lambda sd: DinoFeaturizer(depth=depth, use_norm=use_norm), _read_source(source, download, argument),
        filter_fn=with_norm, what=_label(source, argument), device=device, dtype=dtype,
    )
