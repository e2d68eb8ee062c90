"""Named MEt3R variants and the resolution of user overrides into one settings dict.

A MEt3R number only means something together with how it was made (backbone, render size, pair
stride, symmetry, ...). :func:`resolve_settings` turns ``variant`` + overrides into a flat,
JSON-serialisable dict that every report carries; the scorer is built from exactly this dict.

Variants (see docs/metric.md for which published numbers each reproduces):

* ``"official"``: the defaults of the official package (mohammadasim98/met3r @ 3259e41):
  MASt3R 512 catmlpdpt metric, DINO ViT-S/16 + FeatUp JBU, cosine, 256x256 render, one
  direction ``1 - S(I1, I2)``.
* ``"paper"``: the paper's symmetric definition ``1 - 0.5 * (S(I1, I2) + S(I2, I1))`` with
  DUSt3R 512 DPT (the geometry network the paper text names).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "VARIANTS",
    "PAIRINGS",
    "DISTANCES",
    "UPSAMPLERS",
    "BACKBONE_ALIASES",
    "NETWORK_KEYS",
    "resolve_settings",
    "make_pairs",
    "settings_key",
]

#: Short names accepted for ``backbone``; the value is the checkpoint registry name in
#: :mod:`met3r_metrics.weights`.
BACKBONE_ALIASES: dict[str, str] = {
    "mast3r": "mast3r_512_catmlpdpt_metric",
    "dust3r": "dust3r_512_dpt",
}
PAIRINGS = ("consecutive", "all", "first")
#: ``cosine`` compares upsampled DINO features (MEt3R); the others compare rendered RGB.
DISTANCES = ("cosine", "mse", "rmse", "psnr", "ssim")
UPSAMPLERS = ("featup", "nearest", "bilinear", "bicubic")
FEATURE_BACKBONES = ("dino16",)
FOCAL_CONVENTIONS = ("official", "pinhole")
PRECISIONS = ("fp32", "bf16")

_COMMON: dict[str, Any] = {
    # geometry network: registry name / alias; weights=None -> the registry's checkpoint for it
    "backbone": "mast3r_512_catmlpdpt_metric",
    "backbone_weights": None,
    # feature network
    "feature_backbone": "dino16",
    "feature_weights": None,
    "upsampler": "featup",
    "distance": "cosine",
    # render size: int -> square, [h, w] -> that size, None -> the input size
    "img_size": 256,
    "symmetric": False,
    "pairing": "consecutive",
    # PyTorch3D's default point radius in NDC units and MEt3R's points per pixel
    "radius": 0.01,
    "points_per_pixel": 10,
    # official: 1 + f/w, 1 + f/h; pinhole: 2 f / min(h, w) (PyTorch3D's NDC focal)
    "focal_convention": "official",
    # official HEAD eps values (the paper-era code used 1e-3 / 1e-6)
    "cosine_eps": 1e-5,
    "mask_eps": 1e-5,
    # a pair without overlap: NaN, counted, excluded from means (official: scored 0 = perfect)
    "nan_on_no_overlap": True,
    # directed pairs per network chunk (memory knob, does not change the numbers)
    "batch_size": 8,
    # networks in float32 (parity) or under bfloat16 autocast (opt-in speed); geometry glue,
    # splatting and distances always run in float32
    "precision": "fp32",
}

VARIANTS: dict[str, dict[str, Any]] = {
    "official": dict(_COMMON),
    "paper": {**_COMMON, "backbone": "dust3r_512_dpt", "symmetric": True},
}

#: Keys that choose networks (and therefore which frozen weights the scorer holds).
NETWORK_KEYS = ("backbone", "backbone_weights", "feature_backbone", "feature_weights", "upsampler", "distance")


def _err(name: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got!r}")


def _path_or_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and value:
        return value
    raise _err(name, "None, a registry name, a repo id or a local path (str / PathLike)", value)


def _img_size(value: Any) -> int | list[int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _err("img_size", "None, a positive int or (h, w)", value)
    if isinstance(value, int):
        if value < 1:
            raise _err("img_size", "a positive int", value)
        return int(value)
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        if all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            return [int(value[0]), int(value[1])]
    raise _err("img_size", "None, a positive int or a pair (h, w) of positive ints", value)


def resolve_settings(variant: str | Mapping[str, Any] = "official", **overrides: Any) -> dict[str, Any]:
    """Resolve a variant name plus overrides into a validated, JSON-serialisable settings dict.

    Args:
        variant: ``"official"`` or ``"paper"``, or an already resolved settings mapping (its
            ``"variant"`` entry is kept; overrides apply on top).
        **overrides: any key of :data:`VARIANTS` ``["official"]`` (backbone, backbone_weights,
            feature_backbone, feature_weights, upsampler, distance, img_size, symmetric, pairing,
            radius, points_per_pixel, focal_convention, cosine_eps, mask_eps, nan_on_no_overlap,
            batch_size, precision). ``None`` values for keys whose default is not ``None`` are ignored, so
            callers can forward optional arguments unchanged.

    Returns:
        A new dict with every key, plus ``"variant"`` (the base variant name) and
        ``"overrides"`` (sorted list of keys that differ from the base variant).

    Raises:
        ValueError: unknown variant / key, or a value of the wrong type or range.
    """
    if isinstance(variant, Mapping):
        base_name = str(variant.get("variant", "official"))
        if base_name not in VARIANTS:
            raise _err("variant", f"one of {sorted(VARIANTS)}", base_name)
        base = {k: copy.deepcopy(variant[k]) for k in VARIANTS[base_name] if k in variant}
        s = {**VARIANTS[base_name], **base}
    else:
        if variant not in VARIANTS:
            raise _err("variant", f"one of {sorted(VARIANTS)}", variant)
        base_name = variant
        s = dict(VARIANTS[variant])
    unknown = sorted(set(overrides) - set(s))
    if unknown:
        raise ValueError(f"unknown MEt3R setting(s) {unknown}; expected any of {sorted(s)}")
    for key, value in overrides.items():
        if value is None and VARIANTS[base_name][key] is not None and key != "img_size":
            continue  # "not given"
        s[key] = value

    # --- validation / canonicalisation (errors name the argument, what was expected, what came)
    backbone = s["backbone"]
    if not isinstance(backbone, str) or not backbone:
        raise _err("backbone", "a registry name such as 'mast3r' or 'dust3r_512_dpt'", backbone)
    s["backbone"] = BACKBONE_ALIASES.get(backbone.lower(), backbone)
    s["backbone_weights"] = _path_or_name("backbone_weights", s["backbone_weights"])
    s["feature_weights"] = _path_or_name("feature_weights", s["feature_weights"])
    if s["feature_backbone"] not in FEATURE_BACKBONES:
        raise _err("feature_backbone", f"one of {FEATURE_BACKBONES}", s["feature_backbone"])
    up = str(s["upsampler"]).lower()
    if up == "jbu":
        up = "featup"
    if up not in UPSAMPLERS:
        raise _err("upsampler", f"one of {UPSAMPLERS}", s["upsampler"])
    s["upsampler"] = up
    if s["distance"] not in DISTANCES:
        raise _err("distance", f"one of {DISTANCES} (lpips is not supported)", s["distance"])
    s["img_size"] = _img_size(s["img_size"])
    for key in ("symmetric", "nan_on_no_overlap"):
        if not isinstance(s[key], bool):
            raise _err(key, "a bool", s[key])
    if s["pairing"] not in PAIRINGS:
        raise _err("pairing", f"one of {PAIRINGS}", s["pairing"])
    if s["precision"] not in PRECISIONS:
        raise _err("precision", f"one of {PRECISIONS}", s["precision"])
    if s["focal_convention"] not in FOCAL_CONVENTIONS:
        raise _err("focal_convention", f"one of {FOCAL_CONVENTIONS}", s["focal_convention"])
    for key in ("radius", "cosine_eps", "mask_eps"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0 if key == "radius" else v >= 0):
            raise _err(key, "a positive float" if key == "radius" else "a float >= 0", v)
        s[key] = float(v)
    for key in ("points_per_pixel", "batch_size"):
        v = s[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _err(key, "a positive int", v)
    s["variant"] = base_name
    s["overrides"] = sorted(k for k in VARIANTS[base_name] if s[k] != VARIANTS[base_name][k])
    json.dumps(s)  # guarantee serialisability (raises TypeError otherwise)
    return s


def settings_key(settings: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """Stable string key of (a subset of) a settings dict, for caches."""
    items = {k: settings[k] for k in (keys if keys is not None else sorted(settings)) if k in settings}
    return json.dumps(items, sort_keys=True)


def make_pairs(num_views: int, pairing: str = "consecutive") -> list[tuple[int, int]]:
    """Index pairs (i, j) of a sequence of ``num_views`` frames.

    ``consecutive``: (0, 1), (1, 2), ... (sliding window, the paper's protocol);
    ``all``: every (i, j) with i < j; ``first``: (0, j) for j >= 1 (each view against view 0).
    The score of (i, j) renders both clouds into view i's camera.
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 2:
        raise _err("num_views", "an int >= 2", num_views)
    if pairing == "consecutive":
        return [(i, i + 1) for i in range(num_views - 1)]
    if pairing == "all":
        return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
    if pairing == "first":
        return [(0, j) for j in range(1, num_views)]
    raise _err("pairing", f"one of {PAIRINGS}", pairing)
