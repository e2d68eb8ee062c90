"""Stateless MEt3R: score the view pairs of a batch of sequences.

>>> scores = met3r(images)                       # images (B, V, 3, H, W) in [-1, 1] -> (B,)
>>> details = met3r(images, return_details=True) # SequenceScores with per-pair scores, overlap, ...

The frozen networks come from a process-level cache (:func:`met3r_metrics.scorer.get_scorer`)
keyed by settings and device, so repeated calls do not rebuild them; pass ``scorer=`` to use a
scorer you built yourself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .inputs import validate_images
from .scorer import MEt3RScorer, get_scorer
from .settings import NETWORK_KEYS, make_pairs, resolve_settings

__all__ = ["met3r", "SequenceScores", "sequence_means"]


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
        settings: the resolved settings that produced the numbers.
        score_maps, overlap_masks: (B, P, h, w) when ``return_maps`` (forward direction).
        forward_scores, reverse_scores: (B, P) the two directions when symmetric.
        score_maps_reverse, overlap_masks_reverse: (B, P, h, w) when symmetric and ``return_maps``.
    """

    sequence_scores: Tensor
    pair_scores: Tensor
    pairs: Tensor
    overlap: Tensor
    no_overlap: Tensor
    settings: dict[str, Any] = field(default_factory=dict)
    score_maps: Tensor | None = None
    overlap_masks: Tensor | None = None
    forward_scores: Tensor | None = None
    reverse_scores: Tensor | None = None
    score_maps_reverse: Tensor | None = None
    overlap_masks_reverse: Tensor | None = None


def sequence_means(pair_scores: Tensor) -> Tensor:
    """(B, P) pair scores -> (B,) mean over non-NaN pairs (NaN if none)."""
    return torch.nanmean(pair_scores, dim=1)


def _scorer_for(scorer: MEt3RScorer | None, settings: dict[str, Any], device: torch.device) -> MEt3RScorer:
    if scorer is None:
        return get_scorer(settings, device)
    if scorer.settings == settings:
        return scorer
    mismatch = [k for k in NETWORK_KEYS if scorer.settings[k] != settings[k]]
    if mismatch:
        raise ValueError(
            f"scorer: expected a scorer built for the requested networks, got different "
            f"{', '.join(f'{k}={scorer.settings[k]!r} (requested {settings[k]!r})' for k in mismatch)}"
        )
    # same networks, other scoring knobs (render size, radius, symmetry, ...): share the networks
    return MEt3RScorer(settings, scorer.stereo, scorer.features)


def met3r(
    images: Tensor,
    *,
    variant: str = "official",
    normalize: bool = False,
    pairing: str = "consecutive",
    scorer: MEt3RScorer | None = None,
    return_details: bool = False,
    return_maps: bool = False,
    **overrides: Any,
) -> Tensor | SequenceScores:
    """MEt3R of each sequence: the mean over its view pairs (lower is more consistent).

    Args:
        images: (B, V, 3, H, W), V >= 2; float in [-1, 1] (``normalize=False``) or [0, 1]
            (``normalize=True``), or uint8 0..255. H, W multiples of 16, >= 32.
        variant: ``"official"`` (official package defaults, one direction) or ``"paper"``
            (symmetric, DUSt3R). See :func:`met3r_metrics.resolve_settings`.
        normalize: input range convention, as torchmetrics' LPIPS.
        pairing: ``"consecutive"`` (sliding window), ``"all"`` or ``"first"``.
        scorer: a :class:`MEt3RScorer` to use instead of the process-level cache. Its settings
            are the base that ``overrides`` modify; overrides of non-network knobs (img_size,
            radius, symmetric, ...) reuse its networks, network overrides must match them.
        return_details: return a :class:`SequenceScores` instead of the (B,) tensor.
        return_maps: with ``return_details``, include score maps and overlap masks.
        **overrides: any setting (backbone, backbone_weights, feature_backbone, feature_weights,
            upsampler, distance, img_size, symmetric, radius, points_per_pixel,
            nan_on_no_overlap, batch_size, ...).

    Returns:
        (B,) per-sequence scores, or :class:`SequenceScores`. Differentiable w.r.t. float
        ``images`` through the feature path (geometry is detached, as officially).
    """
    # with a scorer, its settings are the base (the variant default "official" is not a request)
    base = scorer.settings if scorer is not None and variant == "official" else variant
    settings = resolve_settings(base, pairing=pairing, **overrides)
    device = scorer.device if scorer is not None else None
    x = validate_images(images, normalize=normalize, device=device, even_patch_rows=settings["distance"] == "cosine")
    sc = _scorer_for(scorer, settings, x.device)
    out = sc.score_sequences(x, make_pairs(x.shape[1], settings["pairing"]), return_maps=return_maps and return_details)
    seq = sequence_means(out["pair_scores"])
    if not return_details:
        return seq
    return SequenceScores(
        sequence_scores=seq,
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
