"""``met3r-eval``'s configuration as hydra structured configs (registered in hydra's ConfigStore).

The ``metric`` group's schema is generated from :class:`met3r_metrics.Settings`, so the list of
metric knobs exists once: every Settings field is a key ``metric.<field>``, type-checked by hydra,
``null`` meaning "the variant's value". The other groups (``data``, ``runtime``, ``output``) are
the dataclasses below; :func:`validate` checks every value before any data is read.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from met3r_metrics.io import RESIZE_FILTERS, VALUE_RANGES
from met3r_metrics.settings import FIELDS, VARIANTS, Settings, resolve

__all__ = [
    "MetricConfig",
    "DataConfig",
    "RuntimeConfig",
    "OutputConfig",
    "EvalConfig",
    "VALUE_RANGES",
    "RESIZE_FILTERS",
    "register_configs",
    "metric_settings",
    "validate",
    "ConfigError",
]

BACKENDS = ("auto", "nccl", "gloo")
FINGERPRINTS = ("stat", "content")


class ConfigError(ValueError):
    """A setting of the run is invalid; the message names it (``data.resize: expected ..., got ...``)."""


def _optional(hint: Any) -> Any:
    """The hydra type of a Settings field: Optional[<scalar>] (None: the variant's value), else Any."""
    return Optional[hint] if hint in (str, int, float, bool) else Any


def _metric_schema() -> type:
    hints = typing.get_type_hints(Settings)
    specs: list[tuple[str, Any, Any]] = [("variant", str, field(default="official"))]
    for f in dataclasses.fields(Settings):
        if f.name == "variant":
            continue
        hint = hints[f.name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = args[0] if len(args) == 1 else Any
        specs.append((f.name, _optional(hint), field(default=None, metadata=f.metadata)))
    doc = "The metric group: every met3r_metrics.Settings field (null = the variant's value) + variant."
    return dataclasses.make_dataclass("MetricConfig", specs, namespace={"__doc__": doc})


#: ``metric`` group schema: ``variant`` plus every :class:`~met3r_metrics.Settings` field, default null.
MetricConfig = _metric_schema()


@dataclass
class DataConfig:
    """What to read: a folder of sequences (sub-folders of frames and/or videos), one folder of frames,
    one video, or a .pt/.npz tensor (N, V, 3, H, W)."""

    path: str = "???"
    tensor_key: Optional[str] = None  # array inside a .npz / dict .pt (default: the only one, else "images")
    value_range: str = "auto"  # auto | uint8 | 01 | -11
    frame_stride: int = 1  # use every k-th frame
    start: int = 0  # first frame used
    max_frames: Optional[int] = None  # at most this many frames per sequence (after stride)
    resize: Any = None  # null: frames as they are (size checked); int (square) or [H, W]: resized, recorded
    resize_filter: str = "bicubic"  # bicubic | bilinear (antialiased) | area | nearest
    fingerprint: str = "stat"  # how resume notices changed inputs: stat (names, sizes, mtimes) | content (SHA-256)
    # null | a per-sequence .npz of known cameras (depth, intrinsics, cam_to_world [, valid]) beside each sequence:
    # a name pattern with {name} / {stem} of the sequence, relative to the folder holding it, e.g. '{name}.npz'
    geometry: Optional[str] = None
    intrinsics: str = "pixels"  # units of the geometry files' intrinsics: pixels | normalized (by the image size)


@dataclass
class RuntimeConfig:
    """Where and how the run executes; none of these change the numbers."""

    device: str = "auto"  # auto (cuda if available, else cpu) | cpu | cuda | cuda:1 ... torchrun: cuda:LOCAL_RANK
    backend: str = "auto"  # torchrun process group: auto (nccl on CUDA, gloo on CPU) | nccl | gloo
    progress: bool = True  # progress bars over sequences and pairs (rank 0 only)
    num_threads: Optional[int] = None  # torch CPU threads (null: torch's default)
    num_workers: Optional[int] = None  # DataLoader workers decoding ahead (null: 2 on CUDA, 0 on CPU)
    retry_errors: bool = True  # on resume, retry sequences that failed before
    dist_timeout_min: float = 1440.0  # process-group timeout: fast ranks wait for the slowest at the end


@dataclass
class OutputConfig:
    """Where results go."""

    dir: Optional[str] = None  # null: met3r_results/<data name>_<variant>_<settings digest> (re-running resumes)
    overwrite: bool = False  # true: delete previous results in dir and start over
    plots: bool = True  # sequence_curves.png + histogram.png
    max_curves: int = 50  # sequences drawn in sequence_curves.png
    worst_pairs: int = 0  # >0: recompute the k worst pairs with score maps -> worst_pairs.png
    report: bool = True  # report.html: headline + CI, sortable sequence table, charts, worst pairs (needs no matplotlib)
    report_pairs: int = 4  # worst pairs rescored with frames, renders, score maps and masks for report.html


@dataclass
class EvalConfig:
    """The whole ``met3r-eval`` configuration (the groups' schemas)."""

    metric: Any = field(default_factory=MetricConfig)
    data: DataConfig = field(default_factory=DataConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    output: OutputConfig = field(default_factory=OutputConfig)


def register_configs() -> None:
    """Put the schemas into hydra's ConfigStore (idempotent): ``met3r_eval_schema`` and metric/<variant>."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="met3r_eval_schema", node=EvalConfig)
    for name in VARIANTS:
        cs.store(group="metric", name=name, node=MetricConfig(variant=name))


# --------------------------------------------------------------------------------------------------
# from the composed config to validated values


def metric_settings(metric: dict[str, Any]) -> Settings:
    """The ``metric`` group -> :class:`Settings` (null: the variant's value; img_size ``input``: the input size).

    Raises:
        ConfigError: a value Settings refuses, named ``metric.<field>``.
    """
    from met3r_metrics.functional import given_geometry_defaults

    given = given_geometry_defaults({k: v for k, v in metric.items() if k != "variant" and v is not None})
    unknown = sorted(set(given) - set(FIELDS))
    if unknown:
        raise ConfigError(f"metric: unknown key(s) {unknown}; expected any of {list(FIELDS)}")
    if isinstance(given.get("img_size"), str):
        if given["img_size"].lower() not in ("input", "none"):
            raise ConfigError(f"metric.img_size: expected an int, [h, w] or 'input', got {given['img_size']!r}")
        given["img_size"] = None
    try:
        return resolve(metric.get("variant", "official"), **given)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"metric.{err}" if not str(err).startswith("unknown") else f"metric: {err}") from None


def _err(name: str, expected: str, got: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, got {got!r}")


def _int_at_least(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _err(name, f"an int >= {low}" + (" or null" if optional else ""), value)


def resize_size(resize: Any) -> tuple[int, int] | None:
    """``data.resize`` -> (H, W) or None."""
    if resize is None:
        return None
    if isinstance(resize, int) and not isinstance(resize, bool):
        return (resize, resize)
    if isinstance(resize, (list, tuple)) and len(resize) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in resize):
        return (int(resize[0]), int(resize[1]))
    raise _err("data.resize", "null, an int or [H, W]", resize)


def validate(conf: dict[str, Any]) -> Settings:
    """Check the whole configuration before any data is read; returns the metric's Settings.

    Raises:
        ConfigError: the first invalid setting, named (``data.frame_stride: expected an int >= 1, got 0``).
    """
    data, runtime, output = conf["data"], conf["runtime"], conf["output"]
    if data.get("path") in (None, "", "???"):
        raise ConfigError("data.path: expected a folder of sequences, a video, or a .pt/.npz file, got nothing (set data.path=...)")
    _check_path(str(data["path"]))
    settings = metric_settings(conf["metric"])
    if data["value_range"] not in VALUE_RANGES:
        raise _err("data.value_range", f"one of {VALUE_RANGES}", data["value_range"])
    _int_at_least("data.frame_stride", data["frame_stride"], 1)
    _int_at_least("data.start", data["start"], 0)
    _int_at_least("data.max_frames", data["max_frames"], 2, optional=True)
    size = resize_size(data["resize"])
    if size is not None:
        why = settings.frame_size_error(*size)
        if why is not None:
            raise ConfigError(f"data.resize: expected {why}, got {data['resize']!r}")
    if data["resize_filter"] not in RESIZE_FILTERS:
        raise _err("data.resize_filter", f"one of {RESIZE_FILTERS}", data["resize_filter"])
    if data["fingerprint"] not in FINGERPRINTS:
        raise _err("data.fingerprint", f"one of {FINGERPRINTS}", data["fingerprint"])
    settings = _geometry_settings(data, settings)
    _int_at_least("runtime.num_workers", runtime["num_workers"], 0, optional=True)
    if runtime["backend"] not in BACKENDS:
        raise _err("runtime.backend", f"one of {BACKENDS}", runtime["backend"])
    _int_at_least("runtime.num_threads", runtime["num_threads"], 1, optional=True)
    if not (isinstance(runtime["dist_timeout_min"], (int, float)) and runtime["dist_timeout_min"] > 0):
        raise _err("runtime.dist_timeout_min", "a positive number of minutes", runtime["dist_timeout_min"])
    _check_device(str(runtime["device"]))
    _int_at_least("output.max_curves", output["max_curves"], 0)
    _int_at_least("output.worst_pairs", output["worst_pairs"], 0)
    _int_at_least("output.report_pairs", output["report_pairs"], 0)
    return settings


def _geometry_settings(data: dict[str, Any], settings: Settings) -> Settings:
    """``data.geometry`` set: the settings record given geometry (so a network-geometry result is never
    resumed or reused for it: the output dir's digest and settings.json differ)."""
    from met3r_metrics.known_geometry import INTRINSICS_UNITS

    if data.get("intrinsics", "pixels") not in INTRINSICS_UNITS:
        raise _err("data.intrinsics", f"one of {INTRINSICS_UNITS} (the units of the geometry files' intrinsics)",
                   data.get("intrinsics"))
    pattern = data.get("geometry")
    if pattern is None:
        if settings.geometry == "given":
            raise _err("metric.geometry", "'network' without data.geometry (given cameras come from per-sequence "
                       ".npz files: set data.geometry, e.g. data.geometry='{name}.npz')", settings.geometry)
        return settings
    if not isinstance(pattern, str) or not pattern.strip() or not pattern.lower().endswith(".npz"):
        raise _err("data.geometry", "null or a .npz file name pattern such as '{name}.npz'", pattern)
    try:
        pattern.format(name="x", stem="x")
    except (KeyError, IndexError, ValueError):
        raise _err("data.geometry", "a pattern whose only fields are {name} and {stem}", pattern) from None
    if data.get("resize") is not None:
        raise _err("data.resize", "null with data.geometry (the geometry files hold the stored frames' depth and "
                   "intrinsics)", data["resize"])
    try:
        return settings.replace(geometry="given", focal_source="intrinsics")
    except ValueError as err:
        raise ConfigError(f"metric.{err}") from None


def _check_path(path: str) -> None:
    import os
    from pathlib import Path

    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError) as err:  # missing, a symlink loop, a component that is not a folder
        raise _err("data.path", "an existing file or folder", f"{path} ({type(err).__name__}: {err})") from None
    if not os.access(resolved, os.R_OK | (os.X_OK if resolved.is_dir() else 0)):
        raise _err("data.path", "a readable file or folder", f"{path} (permission denied)")


def _check_device(device: str) -> None:
    import torch

    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise _err("runtime.device", "auto, cpu, cuda or cuda:<index>", device) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise _err("runtime.device", "auto or cpu (torch.cuda.is_available() is False on this machine)", device)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise _err("runtime.device", f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}", device)
    elif dev.type != "cpu":
        raise _err("runtime.device", "auto, cpu, cuda or cuda:<index>", device)
