"""``Settings``: every knob of MEt3R in one frozen, typed, validated dataclass, and the named variants.

A MEt3R number only means something together with how it was made (backbone, render size, pairs,
symmetry, ...). :class:`Settings` is that "how": it validates every field on construction (errors
name the field, the expected and the received value), knows which fields differ from its variant
(:attr:`Settings.overrides`) and serialises to JSON exactly as it ran (:meth:`Settings.to_dict`).
The Metric, the functional, the CLI (as its hydra schema) and the Lightning callback all take it.

Variants (see docs/metric.md for which published numbers each reproduces) are factories:

* ``Settings.official()``: the defaults of the official package (mohammadasim98/met3r @ 3259e41):
  MASt3R 512 catmlpdpt metric, DINO ViT-S/16 + FeatUp JBU, cosine, 256x256 render, one
  direction ``1 - S(I1, I2)``.
* ``Settings.paper()``: the paper's symmetric definition ``1 - 0.5 * (S(I1, I2) + S(I2, I1))`` with
  DUSt3R 512 DPT (the geometry network the paper text names) and the standard PSNR / SSIM formulas
  (``rgb_formulas="standard"``); with ``backbone="raft"``, pixels whose flow leaves the image are invalid
  (``flow_mask="in_bounds"``) and RGB is compared in [0, 1] (``flow_rgb_range="unit"``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "Settings",
    "VARIANTS",
    "PAIRINGS",
    "DISTANCES",
    "UPSAMPLERS",
    "PRECISIONS",
    "RGB_FORMULAS",
    "BACKBONE_ALIASES",
    "DistanceInfo",
    "make_pairs",
    "resolve",
    "given_geometry_defaults",
    "GIVEN_GEOMETRY",
]

#: Short names accepted for ``backbone``; the value is the checkpoint registry name in
#: :mod:`met3r_metrics.weights`.
BACKBONE_ALIASES: dict[str, str] = {
    "mast3r": "mast3r_512_catmlpdpt_metric",
    "dust3r": "dust3r_512_dpt",
}
PAIRINGS = ("consecutive", "all", "first")
UPSAMPLERS = ("featup", "nearest", "bilinear", "bicubic")
FEATURE_BACKBONES = ("dino16",)
FOCAL_CONVENTIONS = ("official", "pinhole")
#: network: the backbone's point maps; given: a KnownGeometry (met3r_metrics.known_geometry) passed as geometry=.
GEOMETRY_SOURCES = ("network", "given")
#: estimate: MEt3R's focal estimate from the point maps (focal_convention applies); intrinsics: the pixel
#: intrinsics of the given cameras (or of a custom geometry network that returns them), principal point included.
FOCAL_SOURCES = ("estimate", "intrinsics")
#: What ``geometry="given"`` means (the one place of the rule): the given cameras' pixel intrinsics are the
#: focal source. Validation requires it, the front door records it (:func:`given_geometry_defaults`,
#: :meth:`Settings.with_given_geometry`).
GIVEN_GEOMETRY: dict[str, str] = {"geometry": "given", "focal_source": "intrinsics"}
#: ``backbone`` / ``feature_backbone`` of a user's network (callable / nn.Module): ``custom:<its name>``.
CUSTOM_PREFIX = "custom:"
#: fp32: float32 networks with TF32 off (reference numbers); tf32: TF32 matmuls/convolutions on CUDA;
#: bf16: networks under bfloat16 autocast (TF32 for what stays float32). Geometry glue, splatting and
#: distances always run in float32.
PRECISIONS = ("fp32", "tf32", "bf16")
#: PSNR / SSIM formulas: the official per-pixel ones (per pair), or the standard definitions.
RGB_FORMULAS = ("official", "standard")
#: backbone="raft": the optical-flow network (RAFT-large, weights: registry raft_large_torchvision).
RAFT_BACKBONE = "raft"
#: backbone="raft" validity mask: official (computed after the warp grid is clamped: always valid) | in_bounds.
FLOW_MASKS = ("official", "in_bounds")
#: backbone="raft" RGB distances compare images in signed [-1, 1] (official) or unit [0, 1] (as the rendered path).
FLOW_RGB_RANGES = ("signed", "unit")
#: RAFT's correlation pyramid needs >= 128 px on each side, multiples of 8 (torchvision refuses less).
RAFT_MIN_SIDE = 128
RAFT_MULTIPLE = 8

# Bounds that keep a value from silently degenerating (an inf radius covers every pixel, a huge
# points_per_pixel overflows the rasterizer's buffers). PyTorch3D caps points_per_pixel at 150.
MAX_POINTS_PER_PIXEL = 150
MAX_RADIUS = 2.0  # NDC spans [-1, 1]: a larger radius covers the whole image
MAX_SIDE = 8192
MAX_BATCH_SIZE = 65536
MAX_PAIR_GAP = 1_000_000
MAX_EPS = 1.0


class DistanceInfo(NamedTuple):
    """What a distance measures: its map label, direction and range (for the Metric and plots)."""

    label: str  # per-pixel quantity, e.g. "1 - cos"
    higher_is_better: bool
    lower_bound: float | None
    upper_bound: float | None


#: ``cosine`` compares upsampled DINO features (MEt3R); the others compare rendered RGB (lpips through
#: LPIPS's AlexNet trunk).
DISTANCES: dict[str, DistanceInfo] = {
    "cosine": DistanceInfo("1 - cos", False, 0.0, 2.0),
    "mse": DistanceInfo("squared error", False, 0.0, 1.0),
    "rmse": DistanceInfo("RMSE", False, 0.0, 1.0),
    "psnr": DistanceInfo("PSNR (dB)", True, 0.0, None),
    "ssim": DistanceInfo("SSIM", True, -1.0, 1.0),
    "lpips": DistanceInfo("LPIPS", False, 0.0, None),
}


def _knob(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    """How a MEt3R number is made. Frozen, validated on construction, JSON round-trippable.

    Build it from a variant: ``Settings.official(img_size=None)``, ``Settings.paper()``, or
    ``Settings.from_variant("paper", radius=0.02)``; derive with :meth:`replace`. Every field below is
    a knob of :class:`~met3r_metrics.MEt3R`, :func:`~met3r_metrics.met3r`, ``met3r-eval metric.<field>``
    and the callback's ``metric_kwargs``; this class is the only list of them.

    >>> s = Settings.paper(img_size=128)
    >>> s.symmetric, s.backbone, s.overrides
    (True, 'dust3r_512_dpt', ('img_size',))
    >>> s.with_given_geometry().focal_source  # given cameras: their intrinsics are the focal source
    'intrinsics'
    >>> Settings.official(radius=-1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: radius: ...
    """

    variant: str = _knob("official", "named variant the other fields start from: official | paper")
    backbone: str = _knob(
        "mast3r_512_catmlpdpt_metric",
        "geometry network: mast3r | dust3r | a registry name (met3r-download --list); with backbone_weights, "
        "the network those weights hold; custom:<name>: your network, passed as backbone=<module>",
    )
    backbone_weights: str | None = _knob(
        None, "geometry weights: registry name, HF repo id or local file (.pth/.ckpt/.safetensors/dir); "
        "None: the registry checkpoint of backbone",
    )
    feature_backbone: str = _knob("dino16", "feature network: dino16 | custom:<name> (your network, passed as feature_backbone=<module>)")
    feature_weights: str | None = _knob(None, "local FeatUp/DINO weights file; None: the official checkpoint")
    upsampler: str = _knob("featup", "feature upsampler: featup (JBU stack) | nearest | bilinear | bicubic")
    distance: str = _knob("cosine", "per-pixel comparison: cosine (features) | mse | rmse | psnr | ssim | lpips (RGB)")
    rgb_formulas: str = _knob(
        "official", "psnr/ssim formulas: official (per pair: PSNR 20 log10(255 / (mean_c |a - b| + 1e-5)), "
        "SSIM with the pair's own data range) | standard (PSNR 10 log10(1 / masked MSE), SSIM data range 1)",
    )
    flow_mask: str = _knob(
        "official", "backbone=raft validity mask: official (computed after clamping the warp grid, so every pixel is "
        "valid and out-of-view pixels are scored against border copies) | in_bounds (pixels whose flow target leaves "
        "view 2 are invalid)",
    )
    flow_rgb_range: str = _knob(
        "signed", "backbone=raft: RGB distances compare images in signed [-1, 1] (official) | unit [0, 1] (as the "
        "rendered path; what standard PSNR/SSIM assume)",
    )
    lpips_weights: str | None = _knob(
        None, "trunk of distance=lpips: registry name (alexnet_torchvision, or vgg16_torchvision for LPIPS-VGG), https "
        "URL or local file (torchvision AlexNet / VGG-16 or lpips keys); None: torchvision's official AlexNet file; "
        "the v0.1 linear layers ship with the package",
    )
    img_size: int | tuple[int, int] | None = _knob(
        256, "render size: int (square), (h, w), or None (the input size; CLI: metric.img_size=input)"
    )
    symmetric: bool = _knob(False, "True: the paper's 1 - (S12 + S21) / 2; False: the official 1 - S12")
    pairing: str = _knob("consecutive", "view pairs: consecutive (i, i+gap) | all (i < j) | first (0, j)")
    pair_gap: int = _knob(1, "frame gap of consecutive pairs (1: the paper's sliding window)")
    radius: float = _knob(0.01, f"point radius in NDC units, in (0, {MAX_RADIUS:g}] (PyTorch3D/MEt3R: 0.01)")
    points_per_pixel: int = _knob(10, f"nearest points composited per pixel, 1..{MAX_POINTS_PER_PIXEL}")
    focal_convention: str = _knob("official", "official (1 + f/w, 1 + f/h) | pinhole (2 f / min(h, w))")
    cosine_eps: float = _knob(1e-5, "eps of the cosine similarity (official HEAD; paper-era code 1e-3)")
    mask_eps: float = _knob(1e-5, "eps of the masked-mean normaliser (official HEAD; paper-era code 1e-6)")
    nan_on_no_overlap: bool = _knob(
        True, "a pair without overlap is NaN, counted and excluded (False: the official 0 = perfect)"
    )
    batch_size: int = _knob(8, "directed pairs per network chunk: a memory knob (numbers agree to ~1e-6)")
    # tf32 by default: the official code runs its networks in TF32 on CUDA (importing croco switches it on), so
    # the numbers users compare with are TF32 numbers; CPUs have no TF32, so on CPU tf32 and fp32 are the same run
    precision: str = _knob(
        "tf32", "tf32 (TF32 matmuls/convolutions on CUDA, as the official code; on CPU the same as fp32) | fp32 (TF32 "
        "off: the exact float32 reference) | bf16 (networks under bf16 autocast)",
    )
    geometry: str = _knob(
        "network", "network (the backbone's point maps) | given (a KnownGeometry passed as geometry=, set by the "
        "front door; CLI: data.geometry)",
    )
    focal_source: str = _knob(
        "estimate", "estimate (MEt3R's focal from the point maps, focal_convention) | intrinsics (the given "
        "cameras' pixel intrinsics with their principal point; set with geometry=given)",
    )

    # -- variants ----------------------------------------------------------------------------------
    @classmethod
    def official(cls, **overrides: Any) -> Settings:
        """The official package's defaults (MASt3R, one direction, 256x256 render)."""
        _check_names(overrides)
        return cls(**{**_VARIANT_FIELDS["official"], **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> Settings:
        """The paper's symmetric definition with DUSt3R 512 DPT."""
        _check_names(overrides)
        return cls(**{**_VARIANT_FIELDS["paper"], **overrides})

    @classmethod
    def from_variant(cls, variant: str = "official", **overrides: Any) -> Settings:
        """The named ``variant`` with ``overrides`` applied."""
        if not isinstance(variant, str) or variant not in VARIANTS:
            raise _err("variant", f"one of {sorted(VARIANTS)}", variant)
        _check_names(overrides)
        return VARIANTS[variant](**overrides)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Settings:
        """Inverse of :meth:`to_dict` (``overrides`` is derived, so it is ignored on input)."""
        values = {k: v for k, v in data.items() if k != "overrides"}
        _check_names(values)
        return cls(**values)

    # -- validation --------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        _choice("variant", self.variant, tuple(VARIANTS))
        if not isinstance(self.backbone, str) or not self.backbone:
            raise _err("backbone", "a registry name such as 'mast3r' or 'dust3r_512_dpt'", self.backbone)
        put("backbone", BACKBONE_ALIASES.get(self.backbone.lower(), self.backbone))
        if self.backbone.lower() in (RAFT_BACKBONE, "raft_large"):
            put("backbone", RAFT_BACKBONE)
        _choice("flow_mask", self.flow_mask, FLOW_MASKS)
        _choice("flow_rgb_range", self.flow_rgb_range, FLOW_RGB_RANGES)
        put("backbone_weights", _path_or_name("backbone_weights", self.backbone_weights))
        put("feature_weights", _path_or_name("feature_weights", self.feature_weights))
        put("lpips_weights", _path_or_name("lpips_weights", self.lpips_weights))
        if not _is_custom(self.feature_backbone):
            _choice("feature_backbone", self.feature_backbone, FEATURE_BACKBONES)  # (or custom:<name>, see the help)
        up = self.upsampler.lower() if isinstance(self.upsampler, str) else self.upsampler
        put("upsampler", "featup" if up == "jbu" else up)
        _choice("upsampler", self.upsampler, UPSAMPLERS)
        _choice("distance", self.distance, tuple(DISTANCES))
        _choice("rgb_formulas", self.rgb_formulas, RGB_FORMULAS)
        put("img_size", _img_size(self.img_size))
        for name in ("symmetric", "nan_on_no_overlap"):
            if not isinstance(getattr(self, name), bool):
                raise _err(name, "a bool", getattr(self, name))
        _choice("pairing", self.pairing, PAIRINGS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("focal_convention", self.focal_convention, FOCAL_CONVENTIONS)
        _choice("geometry", self.geometry, GEOMETRY_SOURCES)
        _choice("focal_source", self.focal_source, FOCAL_SOURCES)
        if self.geometry == "given" and self.backbone == "raft":
            raise _err("geometry", "'network' with backbone='raft' (its flow has no point maps for given cameras to "
                       "replace)", self.geometry)
        if self.geometry == GIVEN_GEOMETRY["geometry"] and self.focal_source != GIVEN_GEOMETRY["focal_source"]:
            raise _err("focal_source", "'intrinsics' with geometry='given' (the given cameras' intrinsics)", self.focal_source)
        if self.focal_source == "intrinsics" and self.geometry == "network" and not _is_custom(self.backbone):
            raise _err("focal_source", f"'estimate' for backbone={self.backbone!r} (intrinsics come only with "
                       "geometry='given' or a custom geometry network that returns them)", self.focal_source)
        if _is_custom(self.feature_backbone) and not self.uses_features:
            raise _err("feature_backbone", f"'dino16' with distance={self.distance!r} (a feature network needs "
                       "distance='cosine')", self.feature_backbone)
        put("radius", _finite("radius", self.radius, 0.0, MAX_RADIUS, low_open=True))
        for name in ("cosine_eps", "mask_eps"):
            put(name, _finite(name, getattr(self, name), 0.0, MAX_EPS))
        _int("points_per_pixel", self.points_per_pixel, 1, MAX_POINTS_PER_PIXEL)
        _int("batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        _int("pair_gap", self.pair_gap, 1, MAX_PAIR_GAP)
        if self.pair_gap != 1 and self.pairing != "consecutive":
            raise _err("pair_gap", f"1 with pairing={self.pairing!r} (a gap applies to consecutive pairs)", self.pair_gap)

    # -- derived -----------------------------------------------------------------------------------
    @property
    def overrides(self) -> tuple[str, ...]:
        """Fields that differ from the variant's value, in field order."""
        base = _VARIANT_FIELDS[self.variant]
        return tuple(f.name for f in dataclasses.fields(self) if getattr(self, f.name) != _canonical(f.name, base[f.name]))

    @property
    def uses_features(self) -> bool:
        """Whether a feature network is needed (the RGB distances compare rendered colours)."""
        return self.distance == "cosine"

    @property
    def network_key(self) -> tuple[Any, ...]:
        """What chooses the frozen networks (two settings with equal keys share them)."""
        features = (self.feature_backbone, self.feature_weights, self.upsampler) if self.uses_features else None
        lpips = self.lpips_weights if self.distance == "lpips" else False
        return (self.backbone, self.backbone_weights, features, lpips)

    @property
    def distance_info(self) -> DistanceInfo:
        return DISTANCES[self.distance]

    @property
    def custom_backbone(self) -> bool:
        """Whether ``backbone`` names a user's geometry network (``custom:<name>``), passed as a module."""
        return _is_custom(self.backbone)

    @property
    def custom_features(self) -> bool:
        """Whether ``feature_backbone`` names a user's feature network (``custom:<name>``), passed as a module."""
        return _is_custom(self.feature_backbone)

    def with_given_geometry(self) -> Settings:
        """These settings scoring given cameras: ``geometry="given"`` with their intrinsics as focal source."""
        return self.replace(**GIVEN_GEOMETRY)

    @property
    def uses_flow(self) -> bool:
        """Whether the geometry is RAFT optical flow + a backward warp (``backbone="raft"``) instead of splatting."""
        return self.backbone == RAFT_BACKBONE

    @property
    def height_multiple(self) -> int:
        """Frame heights must be multiples of this: 16 (ViT patches), 32 with DINO features, whose
        official FeatUp featurizer crashes on an odd number of 16-pixel patch rows (any upsampler)."""
        return 2 * PATCH if self.uses_features else PATCH

    @property
    def size_rule(self) -> tuple[int, int, int]:
        """(height multiple, width multiple, minimum side) of the frames these settings can score: the one
        rule :meth:`frame_size_error`, the front door and met3r-eval's reader all apply."""
        if self.uses_flow:
            hm, wm = (self.height_multiple, PATCH) if self.uses_features else (RAFT_MULTIPLE, RAFT_MULTIPLE)
            return hm, wm, RAFT_MIN_SIDE
        return self.height_multiple, PATCH, MIN_SIDE

    def frame_size_error(self, height: int, width: int) -> str | None:
        """None if frames of ``height`` x ``width`` can be scored with these settings, else what is
        expected (for messages ``"<name>: expected <this>, got <H>x<W>"``)."""
        hm, wm, side = self.size_rule
        if self.uses_flow:
            if min(height, width) < side or height % hm or width % wm:
                return (f"H a multiple of {hm}, W a multiple of {wm}, both >= {side} (backbone='raft': "
                        "RAFT's correlation pyramid needs 128 px)")
            return None
        if min(height, width) < MIN_SIDE or height % self.height_multiple or width % PATCH:
            why = " (DINO features need an even number of 16-pixel patch rows)" if self.uses_features else ""
            return f"H a multiple of {self.height_multiple}{why}, W a multiple of {PATCH}, both >= {MIN_SIDE}"
        return None

    def pairs(self, num_views: int) -> list[tuple[int, int]]:
        """The index pairs of a sequence of ``num_views`` frames (see :func:`make_pairs`)."""
        return make_pairs(num_views, self.pairing, self.pair_gap)

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` applied (validated again)."""
        _check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (img_size as a list) plus ``overrides``."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if isinstance(out["img_size"], tuple):
            out["img_size"] = list(out["img_size"])
        out["overrides"] = list(self.overrides)
        return out

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    def digest(self, *, exclude: tuple[str, ...] = ()) -> str:
        """Short stable hash of the fields (minus ``exclude``), for cache keys and folder names."""
        data = {k: v for k, v in self.to_dict().items() if k not in exclude and k != "overrides"}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


PATCH = 16
MIN_SIDE = 32

_VARIANT_FIELDS: dict[str, dict[str, Any]] = {
    "official": {f.name: f.default for f in dataclasses.fields(Settings)},
}
_VARIANT_FIELDS["paper"] = {**_VARIANT_FIELDS["official"], "variant": "paper", "backbone": "dust3r_512_dpt", "symmetric": True,
                            "rgb_formulas": "standard", "flow_mask": "in_bounds", "flow_rgb_range": "unit"}

#: Variant name -> factory.
VARIANTS: dict[str, Callable[..., Settings]] = {"official": Settings.official, "paper": Settings.paper}

FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Settings))


# --------------------------------------------------------------------------------------------------
# validation helpers (messages: "<field>: expected <what>, got <value>")


def _err(name: str, expected: str, got: Any) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got!r}")


def _check_names(values: Mapping[str, Any]) -> None:
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown MEt3R setting(s) {unknown}; expected any of {list(FIELDS)}")


def _is_custom(name: Any) -> bool:
    return isinstance(name, str) and name.startswith(CUSTOM_PREFIX) and len(name) > len(CUSTOM_PREFIX)


def _choice(name: str, value: Any, options: tuple[str, ...], note: str = "") -> None:
    if not isinstance(value, str) or value not in options:
        raise _err(name, f"one of {options}{note}", value)


def _canonical(name: str, value: Any) -> Any:
    return _img_size(value) if name == "img_size" else value


def _finite(name: str, value: Any, low: float, high: float, *, low_open: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise _err(name, f"a finite float in {bracket}{low:g}, {high:g}]", value)
    return float(value)


def _int(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _err(name, f"an int in [{low}, {high}]", value)


def _path_or_name(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, str) and value:
        return value
    raise _err(name, "None, a registry name, a repo id or a local path (str / PathLike)", value)


def _img_size(value: Any) -> int | tuple[int, int] | None:
    if value is None:
        return None
    side = lambda v: isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_SIDE  # noqa: E731
    if side(value):
        return int(value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(side(v) for v in value):
        return (int(value[0]), int(value[1]))
    raise _err("img_size", f"None, an int or a pair (h, w) of ints in [1, {MAX_SIDE}]", value)


# --------------------------------------------------------------------------------------------------


def resolve(variant: str | Settings | None = None, base: Settings | None = None, **overrides: Any) -> Settings:
    """The one rule that turns what a caller passed into :class:`Settings`.

    Args:
        variant: a variant name, a ``Settings`` (used as is, then ``overrides``), or ``None`` ("not
            given": ``base`` if given, else ``"official"``).
        base: the settings to start from when ``variant`` is not given (e.g. a pre-built scorer's).
        **overrides: fields of :class:`Settings` (a ``variant`` key is not allowed here).
    """
    if "variant" in overrides:
        raise _err("variant", "the first argument, not an override", overrides["variant"])
    if isinstance(variant, Settings):
        start = variant
    elif variant is None and base is not None:
        start = base
    elif variant is None or isinstance(variant, str):
        return Settings.from_variant(variant or "official", **overrides)
    else:
        raise _err("variant", f"None, one of {sorted(VARIANTS)} or a Settings", variant)
    return start.replace(**overrides) if overrides else start


def given_geometry_defaults(overrides: dict[str, Any]) -> dict[str, Any]:
    """``geometry="given"`` without ``focal_source`` means the given cameras' intrinsics (the only focal
    source that settings allow with it), so ``MEt3R(geometry="given")`` needs no second argument."""
    if overrides.get("geometry") == GIVEN_GEOMETRY["geometry"] and "focal_source" not in overrides:
        return {**overrides, "focal_source": GIVEN_GEOMETRY["focal_source"]}
    return overrides


def make_pairs(num_views: int, pairing: str = "consecutive", gap: int = 1) -> list[tuple[int, int]]:
    """Index pairs (i, j) of a sequence of ``num_views`` frames; the score of (i, j) renders into view i.

    ``consecutive``: (0, gap), (1, 1 + gap), ... (sliding window; gap 1 is the paper's protocol);
    ``all``: every (i, j) with i < j; ``first``: (0, j) for j >= 1 (each view against view 0).
    Empty when the sequence is too short for one pair.
    """
    if isinstance(num_views, bool) or not isinstance(num_views, int) or num_views < 0:
        raise _err("num_views", "an int >= 0", num_views)
    _int("pair_gap", gap, 1, MAX_PAIR_GAP)
    if pairing == "consecutive":
        return [(i, i + gap) for i in range(num_views - gap)]
    if pairing == "all":
        return [(i, j) for i in range(num_views) for j in range(i + 1, num_views)]
    if pairing == "first":
        return [(0, j) for j in range(1, num_views)]
    raise _err("pairing", f"one of {PAIRINGS}", pairing)
