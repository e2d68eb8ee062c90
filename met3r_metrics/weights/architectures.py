"""Which network each kind of registry checkpoint builds, and the checkpoint filter its files go through.

timm keeps ``checkpoint_filter_fn`` beside each model and applies it in one builder; this table says, for every
:attr:`CheckpointInfo.kind <met3r_metrics.weights.registry.CheckpointInfo.kind>`, which model and which filter
(both in :mod:`met3r_metrics.models`) the ``load_*`` functions use, so one test can walk every registry entry
(``tests/test_registry_networks.py``). ``build(info, **overrides)`` returns the entry's network at random init;
the overrides shrink it (tests) and are the constructors' own keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from torch import Tensor, nn

from ..models import dino, dust3r, featup, lpips, raft
from .registry import FEATUP_CHECKPOINTS, CheckpointInfo

__all__ = ["ARCHITECTURES", "Architecture"]

_EMBED_DIM = 384  # ViT-S/16, FeatUp's dino16


@dataclass(frozen=True)
class Architecture:
    """The network of one checkpoint kind.

    Attributes:
        build: ``(info, **overrides) -> nn.Module`` at random init (load weights with :func:`build_frozen`).
        filter_fn: the model's ``checkpoint_filter_fn``: official keys -> the network's.
        official_key: the network's key -> its official name (error messages), where they differ.
    """

    build: Callable[..., nn.Module]
    filter_fn: Callable[[Mapping[str, Any]], dict[str, Tensor]]
    official_key: Callable[[str], str] | None = None


def _stereo(info: CheckpointInfo, **overrides: Any) -> nn.Module:
    return dust3r.build_stereo_model({**(info.config or {}), **overrides})


def _dino(info: CheckpointInfo, depth: int = 12) -> nn.Module:
    return dino.DinoFeaturizer(depth=depth, use_norm=False)


def _featup(info: CheckpointInfo, depth: int = 12) -> nn.Module:
    use_norm = info.name == FEATUP_CHECKPOINTS[True]
    return featup.UpsampledDino(dino.DinoFeaturizer(depth=depth, use_norm=use_norm), featup.JBUStack(_EMBED_DIM))


#: Checkpoint kind -> its network and filter.
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    "stereo": Architecture(_stereo, dust3r.checkpoint_filter_fn),
    "dino": Architecture(_dino, dino.checkpoint_filter_fn),
    "featup": Architecture(_featup, featup.checkpoint_filter_fn, featup.to_official_key),
    "alexnet": Architecture(lambda info: lpips.LPIPS("alex"), lpips.checkpoint_filter_fn, lpips.to_official_key),
    "vgg": Architecture(lambda info: lpips.LPIPS("vgg"), lpips.checkpoint_filter_fn, lpips.to_official_key),
    "raft": Architecture(lambda info: raft.RAFT(), raft.checkpoint_filter_fn),
})
