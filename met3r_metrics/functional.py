"""The front door: every entry point reaches the scorer through :func:`score_views`.

>>> scores = met3r(images)                        # doctest: +SKIP
>>> details = met3r(images, return_details=True)  # doctest: +SKIP

The call chain is the same for all four entry points::

    met3r(...)  /  MEt3R.update  /  met3r-eval  /  MEt3RCallback (through MEt3R)
        -> settings.resolve (variant + overrides -> Settings)    [met3r, MEt3R.__init__, CLI]
        -> score_views: validate_images -> Settings.pairs -> scorer.score_sequences -> SequenceScores

The frozen networks come from a process-level cache (:func:`met3r_metrics.scorer.get_scorer`)
keyed by settings and device, so repeated calls do not rebuild them; pass ``scorer=`` to use a
scorer you built yourself.

Known cameras: ``geometry=KnownGeometry.from_depth(...)`` skips the geometry network (the settings then
record ``geometry="given"``, ``focal_source="intrinsics"``). Your own networks: ``backbone=`` /
``feature_backbone=`` also take a callable or ``nn.Module`` (recorded as ``"custom:<name>"``; see
:func:`custom_networks`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .inputs import validate_images
from .known_geometry import KnownGeometry
from .scorer import MEt3RScorer, get_scorer
from .settings import CUSTOM_PREFIX, Settings, resolve

__all__ = ["met3r", "score_views", "SequenceScores", "sequence_means", "custom_networks", "network_name",
           "given_geometry_defaults"]

#: Settings fields that may hold a user's network instead of a name.
_NETWORK_FIELDS = ("backbone", "feature_backbone")


@dataclass
class SequenceScores:
    """Per-sequence and per-pair MEt3R results of one batch.

    Attributes:
        sequence_scores: (B,) mean over the valid (non-NaN) pairs of each sequence; NaN when
            a sequence has no valid pair.
        pair_scores: (B, P) per pair (symmetric mode: ``0.5 * (fwd + rev)``); NaN for a pair
            without overlap unless ``nan_on_no_overlap=False``.
        pairs: (P, 2) long index pairs (i, j); the score of (i, j) renders into view i.
        overlap: (B, P) fraction of render pixels in the overlap mask (symmetric: mean of both).
        no_overlap: (B, P) bool, pairs whose overlap mask is empty (in either direction).
        settings: the :class:`~met3r_metrics.Settings` that produced the numbers.
        score_maps, overlap_masks: (B, P, h, w) when ``return_maps`` (forward direction).
        forward_scores, reverse_scores: (B, P) the two directions when symmetric.
        score_maps_reverse, overlap_masks_reverse: (B, P, h, w) when symmetric and ``return_maps``.
    """

    sequence_scores: Tensor
    pair_scores: Tensor
    pairs: Tensor
    overlap: Tensor
    no_overlap: Tensor
    settings: Settings
    score_maps: Tensor | None = None
    overlap_masks: Tensor | None = None
    forward_scores: Tensor | None = None
    reverse_scores: Tensor | None = None
    score_maps_reverse: Tensor | None = None
    overlap_masks_reverse: Tensor | None = None


def sequence_means(pair_scores: Tensor) -> Tensor:
    """(B, P) pair scores -> (B,) mean over non-NaN pairs (NaN if none)."""
    return torch.nanmean(pair_scores, dim=1)


def network_name(net: Any) -> str:
    """``"custom:<name>"`` of a user's network: its ``name`` attribute (a non-empty str), else its
    function name (plain functions) or class name."""
    name = getattr(net, "name", None)
    if not (isinstance(name, str) and name):
        is_function = inspect.isfunction(net) or inspect.ismethod(net) or inspect.isbuiltin(net)
        name = getattr(net, "__name__", None) if is_function else None
        name = name or type(net).__name__
    return CUSTOM_PREFIX + name


def custom_networks(overrides: dict[str, Any], scorer: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split user networks out of Settings overrides (as torchmetrics FID's ``feature=nn.Module``).

    Returns:
        (overrides with each network replaced by its ``"custom:<name>"``, ``{"geometry_net": ...,
        "feature_net": ...}`` holding the networks given).

    Raises:
        TypeError: ``backbone`` / ``feature_backbone`` is neither a str nor a callable.
        ValueError: networks given together with a ``scorer`` (which holds its own networks).
    """
    out, nets = dict(overrides), {}
    for field_name, key in zip(_NETWORK_FIELDS, ("geometry_net", "feature_net")):
        value = out.get(field_name)
        if value is None or isinstance(value, str):
            continue
        if not callable(value):
            raise TypeError(f"{field_name}: expected a registry name (str) or a callable / nn.Module, got "
                            f"{type(value).__name__}")
        out[field_name], nets[key] = network_name(value), value
    if nets and scorer is not None:
        raise ValueError("scorer: expected None with a user's backbone / feature_backbone network (the scorer "
                         f"holds its own networks), got a {type(scorer).__name__}")
    return out, nets


def given_geometry_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """``geometry="given"`` without ``focal_source`` means the given cameras' intrinsics (the only focal
    source that settings allow with it), so ``MEt3R(geometry="given")`` needs no second argument."""
    if overrides.get("geometry") == "given" and "focal_source" not in overrides:
        return {**overrides, "focal_source": "intrinsics"}
    return overrides


def _check_geometry(geometry: Any, x: Tensor) -> KnownGeometry:
    if not isinstance(geometry, KnownGeometry):
        raise TypeError(f"geometry: expected None or a met3r_metrics.KnownGeometry (KnownGeometry.from_depth / "
                        f"from_points), got {type(geometry).__name__}")
    b, v, _, h, w = x.shape
    if geometry.shape != (b, v, h, w):
        raise ValueError(f"geometry: expected (B, V, H, W) = {(b, v, h, w)} matching images, got {geometry.shape}")
    if geometry.device != x.device:
        raise ValueError(f"geometry: expected a KnownGeometry on the images' device {x.device}, got one on "
                         f"{geometry.device} (geometry.to(device))")
    return geometry


def score_views(
    images: Tensor,
    settings: Settings,
    *,
    normalize: bool = False,
    scorer: MEt3RScorer | None = None,
    device: torch.device | str | None = None,
    pairs: Sequence[tuple[int, int]] | None = None,
    return_maps: bool = False,
    geometry: KnownGeometry | None = None,
    networks: dict[str, Any] | None = None,
) -> SequenceScores:
    """Validate ``images``, choose the pairs and score them with ``settings``: the one path to the scorer.

    Args:
        images: (B, V, 3, H, W); float in [-1, 1] (``normalize=False``) or [0, 1] (``normalize=True``),
            or uint8 0..255; the frame-size rule is :meth:`Settings.frame_size_error`.
        settings: what to compute.
        normalize: input range convention, as torchmetrics' LPIPS.
        scorer: networks to use (their settings must choose the same networks as ``settings``);
            default: the process-level cache on ``images``' device.
        device: where ``images`` must be (the Metric's device); default: the scorer's, if given.
        pairs: (i, j) pairs to score instead of ``settings.pairs(V)`` (the CLI scores long
            sequences in chunks of pairs).
        return_maps: include score maps and overlap masks.
        geometry: a :class:`~met3r_metrics.KnownGeometry` (B, V, H, W) on the images' device: no
            geometry network runs, pair (i, j) is rendered with camera i's intrinsics; the returned
            settings record ``geometry="given"`` and ``focal_source="intrinsics"``.
        networks: the user's networks behind ``"custom:<name>"`` settings (``{"geometry_net": ...,
            "feature_net": ...}``, see :func:`custom_networks`) when no ``scorer`` is given; a scorer is
            then built for this call (never cached: two networks of one name stay apart).
    """
    if not isinstance(settings, Settings):
        raise TypeError(f"settings: expected a met3r_metrics.Settings, got {type(settings).__name__}")
    if scorer is not None and not isinstance(scorer, MEt3RScorer):
        raise ValueError(f"scorer: expected a MEt3RScorer or None, got {type(scorer).__name__}")
    if device is None and scorer is not None:
        device = scorer.device
    x = validate_images(images, settings, normalize=normalize, device=device)
    if geometry is not None:
        geometry = _check_geometry(geometry, x)
        settings = settings.replace(geometry="given", focal_source="intrinsics")
    elif settings.geometry == "given":
        raise ValueError("geometry: expected a KnownGeometry with settings geometry='given', got None")
    pair_list = list(pairs) if pairs is not None else settings.pairs(x.shape[1])
    if not pair_list:
        raise ValueError(
            f"images: expected at least {settings.pair_gap + 1} views for pairing={settings.pairing!r} with "
            f"pair_gap={settings.pair_gap}, got V={x.shape[1]}"
        )
    if scorer is not None:
        sc = scorer.with_settings(settings)
    elif networks or settings.custom_backbone or settings.custom_features:
        sc = MEt3RScorer.from_settings(settings, x.device, **(networks or {}))
    else:
        sc = get_scorer(settings, x.device)
    _check_network_devices(sc, x.device)
    out = sc.score_sequences(x, pair_list, return_maps=return_maps, geometry=geometry)
    return SequenceScores(
        sequence_scores=sequence_means(out["pair_scores"]),
        pair_scores=out["pair_scores"],
        pairs=out["pairs"],
        overlap=out["overlap"],
        no_overlap=out["no_overlap"],
        settings=settings,
        score_maps=out.get("score_maps"),
        overlap_masks=out.get("overlap_masks"),
        forward_scores=out.get("forward_scores"),
        reverse_scores=out.get("reverse_scores"),
        score_maps_reverse=out.get("score_maps_reverse"),
        overlap_masks_reverse=out.get("overlap_masks_reverse"),
    )


def _check_network_devices(scorer: MEt3RScorer, device: torch.device) -> None:
    """A user's nn.Module must sit on the images' device (it is used as given, never moved)."""
    for field_name, net in (("backbone", scorer.geometry_net), ("feature_backbone", scorer.features)):
        if isinstance(net, torch.nn.Module):
            param = next(net.parameters(), None)
            if param is not None and param.device != device:
                raise ValueError(f"{field_name}: expected the network on the images' device {device}, got one on "
                                 f"{param.device} ({type(net).__name__}.to(device))")


def met3r(
    images: Tensor,
    variant: str | Settings | None = None,
    *,
    normalize: bool = False,
    scorer: MEt3RScorer | None = None,
    return_details: bool = False,
    return_maps: bool = False,
    geometry: KnownGeometry | None = None,
    **overrides: Any,
) -> Tensor | SequenceScores:
    """MEt3R of each sequence: the mean over its view pairs (lower is more consistent for cosine).

    Args:
        images: (B, V, 3, H, W), V >= 2; float in [-1, 1] (``normalize=False``) or [0, 1]
            (``normalize=True``), or uint8 0..255. H, W multiples of 16, >= 32 (H of 32 with DINO features).
        variant: ``"official"`` (official package defaults, one direction), ``"paper"`` (symmetric,
            DUSt3R), a :class:`~met3r_metrics.Settings`, or ``None``: ``scorer``'s settings if a scorer
            is given, else ``"official"``.
        normalize: input range convention, as torchmetrics' LPIPS.
        scorer: a :class:`MEt3RScorer` to use instead of the process-level cache. Overrides of
            non-network knobs (img_size, radius, symmetric, ...) reuse its networks; settings that
            choose other networks are refused.
        return_details: return a :class:`SequenceScores` instead of the (B,) tensor.
        return_maps: with ``return_details``, include score maps and overlap masks.
        geometry: a :class:`~met3r_metrics.KnownGeometry`: score under these cameras (no geometry network).
        **overrides: any field of :class:`~met3r_metrics.Settings` (pairing, img_size, backbone, ...);
            ``backbone`` / ``feature_backbone`` may be a user's callable / ``nn.Module`` (docs/metric.md,
            "Your own networks").

    Returns:
        (B,) per-sequence scores, or :class:`SequenceScores`. Differentiable w.r.t. float
        ``images`` through the feature path (geometry is detached, as officially).
    """
    overrides, networks = custom_networks(given_geometry_defaults(overrides), scorer)
    settings = resolve(variant, base=scorer.settings if isinstance(scorer, MEt3RScorer) else None, **overrides)
    out = score_views(images, settings, normalize=normalize, scorer=scorer, return_maps=return_maps and return_details,
                      geometry=geometry, networks=networks)
    return out if return_details else out.sequence_scores
