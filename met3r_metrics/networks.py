"""Building and caching the frozen networks of a :class:`~met3r_metrics.Settings` (through :mod:`met3r_metrics.weights`).

One process holds one copy of each network per device: :func:`build_networks` reuses what an earlier call
built (keyed by the settings fields that choose it), so metrics, functional calls and the CLI share weights.
A user's own networks (``backbone`` / ``feature_backbone`` ``"custom:<name>"``) are used as given, never
cached or moved; :func:`check_custom_networks` is the one place that says which must be passed.

The scorer cache (:func:`cached_scorer`, used by :func:`met3r_metrics.scorer.get_scorer`) lives here too, so
:func:`clear_scorer_cache` drops both. ``weights/`` and ``models/`` never import this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from .models.featup import UpsampledDino, build_upsampler
from .models.frozen import freeze
from .settings import Settings
from .weights import CHECKPOINTS, load_featup_dino, load_lpips, load_raft, load_stereo_model

__all__ = ["Networks", "build_networks", "check_custom_networks", "canonical_device", "cached_network",
           "cached_scorer", "clear_scorer_cache", "stereo_identity", "check_backbone_identity"]

_T = TypeVar("_T")
_LOCK = threading.RLock()
_NETWORKS: dict[tuple[Any, ...], nn.Module] = {}
_SCORERS: dict[tuple[Any, ...], Any] = {}


def canonical_device(device: torch.device | str | None) -> torch.device:
    """``None`` -> CPU; ``"cuda"`` -> ``cuda:<current index>``, so one GPU is one cache key.

    Raises:
        ValueError: a CUDA device without an available GPU.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: expected an available device, got {str(dev)!r} (torch.cuda.is_available() is False)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def cached_network(key: tuple[Any, ...], build: Callable[[], nn.Module]) -> nn.Module:
    """The process's network for ``key``, built once by ``build``."""
    with _LOCK:
        net = _NETWORKS.get(key)
        if net is None:
            net = _NETWORKS[key] = build()
        return net


def cached_scorer(key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
    """The process's scorer for ``key`` ((settings, device)), built once by ``build``."""
    with _LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            scorer = _SCORERS[key] = build()
        return scorer


def clear_scorer_cache() -> None:
    """Drop every cached scorer and network (frees their memory once no metric refers to them)."""
    with _LOCK:
        _SCORERS.clear()
        _NETWORKS.clear()


# -- loaders: a registry name or a local source -> a frozen float32 network on the device ------------------


def _load_stereo(backbone: str, weights: str | None, device: torch.device) -> nn.Module:
    # backbone_weights (a local dir / file / repo id) wins over the registry name of `backbone`; errors name
    # the argument the source came from. The network is frozen and owns its memory.
    source, argument = (weights, "backbone_weights") if weights else (backbone, "backbone")
    return load_stereo_model(source, device=device, dtype=torch.float32, argument=argument)


def _load_features(upsampler: str, weights: str | None, device: torch.device) -> nn.Module:
    # depth=None: read the ViT depth from the checkpoint (local files may hold a cut-down ViT, e.g.
    # the tiny test networks); the registry default is the full 12-block dino16.
    model = load_featup_dino(weights, use_norm=True, depth=None, device=device, dtype=torch.float32,
                             argument="feature_weights")
    if upsampler != "featup":
        # the official non-FeatUp upsamplers keep FeatUp's DINO (+ ChannelNorm) and interpolate
        model = freeze(UpsampledDino(model.featurizer, build_upsampler(upsampler)).to(device))
    return model


def _load_lpips(weights: str | None, device: torch.device) -> nn.Module:
    return load_lpips(weights, device=device, dtype=torch.float32, argument="lpips_weights")


def _load_raft(weights: str | None, device: torch.device) -> nn.Module:
    return load_raft(weights, device=device, dtype=torch.float32, argument="backbone_weights")


# -- checkpoint identity: the settings must name the network that runs -----------------------------------------


def _signature(family: str, head: str, img: Sequence[int], enc: tuple[int, int], dec: tuple[int, int]) -> tuple:
    return (family, head, tuple(int(v) for v in img), enc, dec)


def _config_family(config: Any) -> str:
    """``mast3r`` for a MASt3R (catmlp+dpt head) constructor config, else ``dust3r``."""
    return "mast3r" if str(config["head_type"]).startswith("catmlp") else "dust3r"


def _model_signature(stereo: nn.Module) -> tuple:
    family = "mast3r" if type(stereo).__name__ == "AsymmetricMASt3R" else "dust3r"
    enc = (len(stereo.enc_blocks), int(stereo.enc_norm.weight.shape[0]))
    dec = (len(stereo.dec_blocks), int(stereo.dec_norm.weight.shape[0]))
    return _signature(family, stereo.head_type, stereo.img_size, enc, dec)


def stereo_identity(stereo: nn.Module) -> tuple[str | None, str]:
    """(registry name or None, family ``mast3r`` / ``dust3r``) of a loaded DUSt3R/MASt3R network."""
    sig = _model_signature(stereo)
    for name, info in CHECKPOINTS.items():
        cfg = info.config
        if info.kind != "stereo" or cfg is None:
            continue
        ref = _signature(_config_family(cfg), cfg["head_type"], cfg["img_size"], (cfg["enc_depth"], cfg["enc_embed_dim"]),
                         (cfg["dec_depth"], cfg["dec_embed_dim"]))
        if ref == sig:
            return name, sig[0]
    return None, sig[0]


def check_backbone_identity(settings: Settings, stereo: nn.Module) -> None:
    """Refuse settings whose ``backbone`` is not the network ``backbone_weights`` hold.

    A registry architecture must be named exactly (``backbone="dust3r_224_linear"`` for those weights);
    a custom architecture (e.g. the tiny test networks) must at least be of the named family.

    Raises:
        ValueError: naming ``backbone``, what the weights hold and what was requested.
    """
    name, family = stereo_identity(stereo)
    requested = CHECKPOINTS.get(settings.backbone)
    requested_family = _config_family(requested.config) if requested is not None and requested.config is not None else None
    ok = settings.backbone == name if name is not None else requested_family in (None, family)
    if not ok:
        held = name or f"a custom {family} network"
        raise ValueError(
            f"backbone: expected the network backbone_weights={settings.backbone_weights!r} holds ({held}), "
            f"got {settings.backbone!r} (variant={settings.variant!r}); pass backbone={name or family!r} so that "
            "the recorded settings name what runs"
        )


# -- a user's networks -----------------------------------------------------------------------------------------


def check_custom_networks(settings: Settings, geometry_net: Any | None, feature_net: Any | None) -> None:
    """The one check of a user's networks against ``settings``: each ``"custom:<name>"`` that is used comes with
    its callable, and none comes without its name.

    Raises:
        TypeError: a network that is not callable (naming ``backbone`` / ``feature_backbone``).
        ValueError: a used ``"custom:<name>"`` without its network, or a network the settings do not name.
    """
    s = settings
    for arg, net, custom, used, field_name in (
        ("geometry_net", geometry_net, s.custom_backbone, s.geometry == "network", "backbone"),
        ("feature_net", feature_net, s.custom_features, s.uses_features, "feature_backbone"),
    ):
        if net is not None and not callable(net):
            raise TypeError(f"{field_name}: expected a callable / nn.Module network, got {type(net).__name__}")
        if custom and used and net is None:
            raise ValueError(
                f"{field_name}: {getattr(s, field_name)!r} names a user's network; pass the network itself "
                f"({field_name}=<callable or nn.Module>) to met3r / MEt3R, got only its name"
            )
        if net is not None and not custom:
            raise ValueError(f"{arg}: expected None for {field_name}={getattr(s, field_name)!r}, got {type(net).__name__}")


# -- the networks of a Settings ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Networks:
    """The frozen networks one :class:`~met3r_metrics.Settings` runs (None where a setting needs none)."""

    stereo: nn.Module | None = None  # DUSt3R / MASt3R (geometry="network", a registry backbone)
    features: Any | None = None  # DINO + upsampler, or the user's feature network (distance="cosine")
    lpips: nn.Module | None = None  # distance="lpips"
    flow: nn.Module | None = None  # backbone="raft"
    geometry_net: Any | None = None  # the user's geometry network (backbone="custom:<name>")


def build_networks(
    settings: Settings, device: torch.device, *, geometry_net: Any | None = None, feature_net: Any | None = None,
) -> Networks:
    """Build (or reuse, per process) the networks of ``settings`` on ``device``; a user's are passed through."""
    s, dev = settings, device
    check_custom_networks(s, geometry_net, feature_net)
    flow = stereo = None
    if s.uses_flow:  # backbone="raft": RAFT optical flow + a backward warp replace the geometry network
        flow = cached_network(("raft", s.backbone_weights, str(dev)), lambda: _load_raft(s.backbone_weights, dev))
    elif s.geometry == "network" and not s.custom_backbone:
        stereo = cached_network(("stereo", s.backbone, s.backbone_weights, str(dev)),
                                lambda: _load_stereo(s.backbone, s.backbone_weights, dev))
        if s.backbone_weights is not None:
            check_backbone_identity(s, stereo)
    features = None
    if s.uses_features:
        features = feature_net if s.custom_features else cached_network(
            ("features", s.feature_backbone, s.upsampler, s.feature_weights, str(dev)),
            lambda: _load_features(s.upsampler, s.feature_weights, dev))
    lpips = None
    if s.distance == "lpips":
        lpips = cached_network(("lpips", s.lpips_weights, str(dev)), lambda: _load_lpips(s.lpips_weights, dev))
    return Networks(stereo=stereo, features=features, lpips=lpips, flow=flow,
                    geometry_net=geometry_net if s.geometry == "network" else None)
