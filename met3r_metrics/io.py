"""Reading view sequences from disk: frame folders, video files, GIFs and tensor files.

Two layers:

* **Readers** give the stored pixels of one input.  :func:`read_image` returns ``(3, H, W)``,
  :func:`read_frame_folder` and :func:`read_video` return ``(V, 3, H, W)`` of one sequence, and
  :func:`read_tensor_file` returns ``(N, V, 3, H, W)`` (all the sequences of the file).  8-bit
  images and videos come back as ``uint8`` (exactly the decoded pixels); 16-bit grayscale images
  (Pillow mode ``I;16``), and any frames resized on reading, come back as ``float32`` in [0, 1];
  tensor files keep their stored dtype.
* **Sources**: :func:`discover_sequences` turns ``data.path`` into :class:`SequenceSource` s and
  :func:`prepare_views` reads one of them into what the metric takes: ``float32`` in [0, 1] at
  one valid size, plus what the result depends on (:class:`PreparedViews`: the value range used,
  a fingerprint of the inputs, the frames kept).  :class:`SequenceDataset` /
  :func:`iter_prepared` run it in DataLoader workers, in order, a failure being that sequence's
  :class:`SequenceError`.

What is refused rather than guessed (each with a one-line error naming the file and the setting):
float and 32-bit integer images (the file does not say their range), float tensor files whose
range cannot be decided, a folder mixing loose images with sequence entries, broken symbolic
links among the frames, frames of different sizes without ``data.resize``, videos that decode to
fewer frames than their container declares, and ``.pt`` files holding pickled objects.

Frame order is the natural sort of the file names (``frame2.png`` before ``frame10.png``).
Resizing is never implicit and uses a pinned, antialiased filter (clean-fid's lesson: the filter
changes the number, so it is part of the result's settings).

Known cameras (``data.geometry``): a ``.npz`` beside each sequence (:func:`geometry_path`) with
``depth`` (V, H, W), ``intrinsics`` (V, 3, 3), ``cam_to_world`` (V, 4, 4) and optionally ``valid``
(V, H, W) bool for the stored frames, read without pickle and checked against the frames
(:func:`read_geometry_file`); :func:`prepare_views` selects the same frames and builds the
:class:`~met3r_metrics.KnownGeometry`.

Pillow is needed for images/GIFs and PyAV for mp4/webm/...; both are imported lazily.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "TENSOR_EXTENSIONS",
    "VALUE_RANGES",
    "FrameSizeError",
    "MixedLayoutError",
    "TruncatedVideoError",
    "VideoDecodeError",
    "UnsafeTensorFileError",
    "ValueRangeError",
    "SequenceSource",
    "PreparedViews",
    "SequenceError",
    "SequenceDataset",
    "natural_key",
    "read_image",
    "read_frame_folder",
    "read_video",
    "read_tensor_file",
    "decide_value_range",
    "discover_sequences",
    "prepare_views",
    "iter_prepared",
    "select_frames",
    "check_or_resize",
    "resize_views",
    "decoder_versions",
    "geometry_path",
    "geometry_fingerprint",
    "read_geometry_file",
]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: GIFs are decoded with Pillow (every frame, composited to RGB); the rest with PyAV.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
TENSOR_EXTENSIONS = (".pt", ".pth", ".npz", ".npy")
RESIZE_FILTERS = ("bicubic", "bilinear", "area", "nearest")
#: ``data.value_range`` settings: ``auto`` decides once per tensor file (see :func:`decide_value_range`).
VALUE_RANGES = ("auto", "uint8", "01", "-11")
#: Values this far outside the declared range are tolerated (float rounding) and clamped.
RANGE_TOLERANCE = 1e-3
#: Pillow modes of 16-bit unsigned grayscale images (scaled by 65535).
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class FrameSizeError(ValueError):
    """Frames have a size the metric cannot take and no explicit resize was requested."""


class MixedLayoutError(ValueError):
    """A folder holds loose images next to sequence entries (sub-folders or videos)."""


class VideoDecodeError(ValueError):
    """A video (or GIF) could not be opened or decoded."""


class TruncatedVideoError(VideoDecodeError):
    """A video decoded to fewer frames than its container declares (a truncated file)."""


class UnsafeTensorFileError(ValueError):
    """A tensor file holds pickled Python objects, which are never unpickled."""


class ValueRangeError(ValueError):
    """Stored values do not fit the value range set (or none can be decided)."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs numerically: ``f2`` < ``f10``; case-insensitive."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _broken_link_error(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} {path} is a broken symbolic link (-> {os.readlink(path)}): restore its target or remove it"
    )


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


# ---------------------------------------------------------------------------------------------
# Readers: images, frame folders, videos, tensor files


def _pil() -> Any:
    try:
        from PIL import Image, ImageSequence
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs pillow: pip install 'met3r-metrics[cli]'") from err
    return Image, ImageSequence


def _hwc_to_chw(array: Any) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()


def _decode_image(img: Any, path: Path) -> tuple[torch.Tensor, str]:
    """An open PIL image -> ``((3, H, W), range)``: uint8 with ``"uint8"`` or float32 [0, 1] with ``"uint16"``."""
    import numpy as np

    mode = img.mode
    if mode in _UINT16_MODES:
        # 16-bit grayscale: convert("RGB") would clip it to 255 (solid white); scale by the bit depth.
        grey = torch.from_numpy(np.asarray(img).astype(np.float32) / 65535.0)
        return grey.expand(3, *grey.shape).contiguous(), "uint16"
    if mode == "F" or mode.startswith("I"):
        kind = {"F": "32-bit float", "I": "32-bit integer"}.get(mode, f"{mode} integer")
        raise ValueError(
            f"frame {path}: {kind} image (Pillow mode {mode}) is refused: the file does not say which value "
            f"range its pixels use; save 8- or 16-bit PNG frames, or a float tensor file (.pt/.npy) read with "
            f"data.value_range=01 or -11"
        )
    # 16-bit RGB(A) PNG/TIFF is opened by Pillow as 8-bit RGB(A) (high byte): the range stays right.
    return _hwc_to_chw(np.asarray(img.convert("RGB"))), "uint8"


def _read_image(path: Path) -> tuple[torch.Tensor, str]:
    """One image -> ``((3, H, W), "uint8" | "uint16")``; errors name the file."""
    Image, _ = _pil()
    if _is_broken_link(path):
        raise _broken_link_error(path, "frame")
    try:
        with Image.open(path) as img:
            return _decode_image(img, path)
    except (OSError, Image.DecompressionBombError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise ValueError(f"cannot read frame {path}: {err}") from err


def read_image(path: str | Path) -> torch.Tensor:
    """One image file -> ``(3, H, W)`` RGB (alpha dropped, palette/grey expanded).

    ``uint8`` for 8-bit images (16-bit RGB is read by Pillow as its high byte, still 0..255);
    ``float32`` in [0, 1] for 16-bit grayscale (mode ``I;16``: value / 65535).  Float and
    32-bit integer images (modes ``F``, ``I``) raise ``ValueError``: their range is unknown.
    """
    return _read_image(Path(path))[0]


def _frame_entries(folder: Path) -> list[Path]:
    """Image-named entries directly in ``folder`` (broken links included), natural-sorted."""
    entries = (
        p for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or _is_broken_link(p))
    )
    return sorted(entries, key=lambda p: natural_key(p.name))


def _frame_files(folder: Path) -> list[Path]:
    """The frames of ``folder``; raises on a missing folder, no frames, or a broken link."""
    if _is_broken_link(folder):
        raise _broken_link_error(folder, "sequence folder")
    files = _frame_entries(folder)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    for p in files:
        # A dropped frame would silently change the consecutive pairs: refuse it by name.
        if _is_broken_link(p):
            raise _broken_link_error(p, "frame")
    return files


def _size_text(hw: tuple[int, int]) -> str:
    return f"{hw[0]}x{hw[1]}"


def _check_one_size(frames: list[torch.Tensor], names: list[str], where: str) -> None:
    """Frames of one sequence must share a size unless ``data.resize`` is set."""
    sizes = [tuple(f.shape[-2:]) for f in frames]
    if len(set(sizes)) > 1:
        k = next(i for i, s in enumerate(sizes) if s != sizes[0])
        raise FrameSizeError(
            f"frames of {where} have {len(set(sizes))} different sizes ({names[0]} is {_size_text(sizes[0])}, "
            f"{names[k]} is {_size_text(sizes[k])}): set data.resize=[H,W] to resize every frame to one size"
        )


def _frame_to_unit(frame: torch.Tensor) -> torch.Tensor:
    """A frame from an image reader -> float32 [0, 1] (uint8 / 255; 16-bit frames already are)."""
    return frame.float() / 255.0 if frame.dtype == torch.uint8 else frame.float()


def _stack_frames(
    frames: list[torch.Tensor], names: list[str], where: str, resize: int | Sequence[int] | None, resize_filter: str
) -> torch.Tensor:
    """Stack ``(3, H, W)`` frames from the image/video readers; resize each first when ``resize`` is set.

    Without a resize the result is uint8 when every frame is uint8 (exact pixels), else float32
    in [0, 1]; with a resize, float32 in [0, 1] at the target size.
    """
    if resize is not None:
        size = _parse_size(resize)
        return torch.stack([resize_views(_frame_to_unit(f)[None], size, resize_filter)[0] for f in frames])
    _check_one_size(frames, names, where)
    if all(f.dtype == torch.uint8 for f in frames):
        return torch.stack(frames)
    return torch.stack([_frame_to_unit(f) for f in frames])


def read_frame_folder(
    folder: str | Path, *, resize: int | Sequence[int] | None = None, resize_filter: str = "bicubic"
) -> torch.Tensor:
    """All images directly inside ``folder``, natural-sorted -> ``(V, 3, H, W)``.

    ``uint8`` when every frame is 8-bit, else ``float32`` in [0, 1] (16-bit frames).  With
    ``resize`` (``[H, W]`` or an int), every frame is resized on its own before stacking (so
    frames of different sizes are fine) and the result is ``float32`` in [0, 1].

    Raises:
        ValueError: no images, an unreadable frame, or frames of different sizes without ``resize``.
        FileNotFoundError: a frame is a broken symbolic link (named).
    """
    folder = Path(folder)
    files = _frame_files(folder)
    frames = [_read_image(p)[0] for p in files]
    return _stack_frames(frames, [p.name for p in files], str(folder), resize, resize_filter)


def _av() -> Any:
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading videos needs PyAV: pip install 'met3r-metrics[video]'") from err
    return av


@dataclass(frozen=True)
class _VideoCount:
    """Frames decoded vs declared by the container (``expected`` None: it declares nothing usable)."""

    decoded: int
    expected: int | None
    expected_from: str

    def record(self) -> dict[str, Any]:
        return {"frames_decoded": self.decoded, "frames_expected": self.expected, "frames_expected_from": self.expected_from}


def _parse_duration_tag(text: str | None) -> float | None:
    """``"HH:MM:SS.fffffffff"`` (Matroska's per-track DURATION tag) -> seconds, else None."""
    found = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", (text or "").strip())
    if not found:
        return None
    return int(found.group(1)) * 3600 + int(found.group(2)) * 60 + float(found.group(3))


def _declared_frames(container: Any, stream: Any) -> tuple[int | None, str]:
    """What the container says the video stream holds: its frame count, else duration x rate."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), "stream frame count"
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        return None, "unknown (no frame count, no frame rate)"
    tag = _parse_duration_tag(stream.metadata.get("DURATION"))
    if stream.duration is not None and stream.time_base is not None:
        seconds, source = float(stream.duration * stream.time_base), "stream duration"
    elif tag is not None:  # Matroska/WebM write the track's duration as a tag
        seconds, source = tag, "stream DURATION tag"
    elif container.duration is not None and len(container.streams) == 1:
        # The container's duration covers every stream: only trusted when the video is alone.
        seconds, source = container.duration / 1_000_000, "container duration"
    else:
        return None, "unknown (no frame count, no video-stream duration)"
    return int(math.floor(seconds * float(rate) + 0.5)), f"{source} {seconds:.3f} s x {float(rate):.4g} fps"


def _decode_video(path: Path, *, check_length: bool = True) -> tuple[list[torch.Tensor], _VideoCount]:
    """Every frame of the first video stream as ``(3, H, W)`` uint8, and the decoded/declared counts."""
    if _is_broken_link(path):
        raise _broken_link_error(path, "video")
    if path.suffix.lower() == ".gif":
        return _decode_gif(path)
    av = _av()
    frames: list[torch.Tensor] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoDecodeError(f"cannot decode video {path}: no video stream (truncated, or not a video)")
            stream = container.streams.video[0]
            expected, expected_from = _declared_frames(container, stream)
            try:
                for frame in container.decode(stream):
                    frames.append(_hwc_to_chw(frame.to_ndarray(format="rgb24")))
            except av.error.FFmpegError as err:
                raise TruncatedVideoError(
                    f"video {path}: decoding failed after {len(frames)} frame(s) of {expected or '?'} declared ({err})"
                ) from err
    except VideoDecodeError:
        raise
    except (av.error.FFmpegError, OSError, EOFError) as err:
        if isinstance(err, FileNotFoundError):
            raise
        raise VideoDecodeError(f"cannot decode video {path}: {err} (corrupt, truncated, or not a video)") from err
    if not frames:
        raise VideoDecodeError(f"no frames decoded from {path}")
    count = _VideoCount(len(frames), expected, expected_from)
    if check_length and expected is not None and count.decoded < expected:
        raise TruncatedVideoError(
            f"video {path}: decoded {count.decoded} of the {expected} frames its container declares "
            f"({expected_from}): the file looks truncated; re-export it"
        )
    return frames, count


def _decode_gif(path: Path) -> tuple[list[torch.Tensor], _VideoCount]:
    import numpy as np

    Image, ImageSequence = _pil()
    frames: list[torch.Tensor] = []
    try:
        with Image.open(path) as img:
            # convert("RGB") on each frame composites GIF deltas/palettes into full frames.
            for f in ImageSequence.Iterator(img):
                frames.append(_hwc_to_chw(np.asarray(f.convert("RGB"))))
    except OSError as err:
        if isinstance(err, FileNotFoundError):
            raise
        kind = TruncatedVideoError if frames else VideoDecodeError
        raise kind(f"GIF {path}: decoding failed after {len(frames)} frame(s) ({err})") from err
    if not frames:
        raise VideoDecodeError(f"no frames decoded from {path}")
    # Pillow reads a GIF to its end or raises: the count is complete when we get here.
    return frames, _VideoCount(len(frames), len(frames), "GIF read to its end")


def read_video(path: str | Path, *, check_length: bool = True) -> torch.Tensor:
    """A video (PyAV: mp4, webm, ...) or animated GIF (Pillow) -> ``(V, 3, H, W)`` uint8 RGB.

    Every decoded frame of the first video stream, in presentation order, converted to rgb24 by
    libswscale (the decoding path is recorded in :func:`decoder_versions`).

    With ``check_length`` (default), a video that decodes to fewer frames than its container
    declares (the stream's frame count, else its duration x frame rate) raises
    :class:`TruncatedVideoError` with both counts: a cut file keeps its header, so it would
    otherwise be scored on the frames that happen to survive.

    Raises:
        VideoDecodeError: cannot open/decode, no video stream, no frames.
        TruncatedVideoError: fewer frames than declared, or decoding failed part-way.
        ValueError: frames of different sizes within the stream.
    """
    path = Path(path)
    frames, _ = _decode_video(path, check_length=check_length)
    return _stack_frames(frames, [f"frame {i}" for i in range(len(frames))], str(path), None, "bicubic")


def _unsafe_pt_error(path: Path, err: Exception) -> UnsafeTensorFileError:
    found = re.search(r"GLOBAL (\S+)", str(err))
    what = f" (it refers to {found.group(1)})" if found else ""
    return UnsafeTensorFileError(
        f"data.path={path}: the file holds pickled Python objects{what}, which are never unpickled because "
        f"loading them can run arbitrary code; save the frames as a plain tensor or a dict of tensors "
        f"(torch.save(images, path)) or as .npy/.npz"
    )


def _load_pt(path: Path) -> Any:
    """``torch.load`` restricted to tensors (``weights_only``), memory-mapped where the format allows."""
    import pickle
    import zipfile

    # Zip-format files (torch.save's default since 1.6) are memory-mapped: counting the sequences and
    # deciding the value range does not need the whole file in RAM. The legacy format cannot be mapped and
    # is read into memory. Decided by the file's format, not by the wording of torch's mmap error.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise _unsafe_pt_error(path, err) from None


def read_tensor_file(path: str | Path, key: str | None = None) -> torch.Tensor:
    """A ``.pt``/``.pth`` (torch.save) or ``.npz``/``.npy`` file -> ``(N, V, 3, H, W)`` tensor.

    A single sequence ``(V, 3, H, W)`` is returned as ``N = 1``.  For ``.npz`` and for ``.pt``
    files holding a dict, ``key`` picks the array (default: the only one, else ``"images"``).
    Channels-last ``(..., H, W, 3)`` arrays are permuted to channels-first (a copy).

    ``.pt`` files are loaded with ``weights_only=True`` (a file holding pickled objects raises
    :class:`UnsafeTensorFileError` naming it) and memory-mapped when saved in torch's zip format;
    ``.npy`` files are memory-mapped by numpy; ``.npz`` and legacy ``.pt`` files are read into
    memory.  The stored dtype is kept; never unpickles (``allow_pickle=False`` for numpy).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        import numpy as np

        try:
            loaded: Any = np.load(path, allow_pickle=False, mmap_mode="r" if suffix == ".npy" else None)
            if suffix == ".npz":
                loaded = {k: loaded[k] for k in loaded.files}
        except ValueError as err:
            if "pickle" not in str(err) and "Python objects" not in str(err):
                raise
            raise UnsafeTensorFileError(
                f"data.path={path}: the file holds pickled Python objects (an object array), which are never "
                f"unpickled because loading them can run arbitrary code; save a numeric array"
            ) from None
    else:
        loaded = _load_pt(path)
    if isinstance(loaded, dict):
        if key is None:
            key = next(iter(loaded)) if len(loaded) == 1 else "images"
        if key not in loaded:
            raise KeyError(f"{path} holds {sorted(loaded)}; choose one with data.tensor_key=...")
        loaded = loaded[key]
    if not isinstance(loaded, torch.Tensor):
        with warnings.catch_warnings():
            # A read-only memory map is never written to: sequences are copied out of it.
            warnings.filterwarnings("ignore", message=".*not writable.*")
            loaded = torch.as_tensor(loaded)
    tensor = loaded
    if tensor.ndim == 4:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 5:
        raise ValueError(f"{path}: expected (N, V, 3, H, W) or (V, 3, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[2] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 1, 4, 2, 3)
    if tensor.shape[2] != 3:
        raise ValueError(f"{path}: expected 3 channels, got shape {tuple(tensor.shape)}")
    return tensor.contiguous()


# ---------------------------------------------------------------------------------------------
# Value range: decided once per tensor file


def decide_value_range(values: torch.Tensor, setting: str = "auto", *, what: str = "the data") -> tuple[str, str]:
    """The value range of stored pixel values -> ``(range, reason)``, range in ``uint8 | 01 | -11``.

    Called once over a whole tensor file (never per sequence: one sequence of a [-1, 1] file
    may hold no negative value, a white suit, and would be misread as [0, 1]).

    * ``uint8`` tensors are 0..255 (``setting`` auto or uint8; 01/-11 are refused).
    * other integer tensors must hold values in 0..255 (auto or uint8).
    * float tensors, ``auto``: some value below 0 -> ``-11``; else ``01``.  Values beyond both
      ranges (above 1, below -1) cannot be decided and are refused: set ``data.value_range``.
      A [-1, 1] file without any negative value is read as [0, 1]: set ``-11`` explicitly then.
    * an explicit ``setting`` is checked against the values.

    Values up to :data:`RANGE_TOLERANCE` outside the range are float rounding (clamped later).

    Raises:
        ValueRangeError: naming ``data.value_range``, the expected and the found range.
    """
    if setting not in VALUE_RANGES:
        raise ValueRangeError(f"data.value_range must be one of {', '.join(VALUE_RANGES)}; got {setting!r}")
    dtype = str(values.dtype).replace("torch.", "")
    if values.dtype == torch.bool or values.is_complex():
        raise ValueRangeError(f"data.value_range: {what} has dtype {dtype}; expected uint8 or a float dtype")
    if values.dtype == torch.uint8:
        if setting in ("01", "-11"):
            raise ValueRangeError(
                f"data.value_range={setting} but {what} is uint8 (0..255): set data.value_range=auto or uint8"
            )
        return "uint8", f"dtype uint8: 0..255 ({'auto' if setting == 'auto' else 'set'})"
    if values.numel() == 0:
        raise ValueRangeError(f"data.value_range: {what} holds no values")
    lo, hi = (float(v) for v in torch.aminmax(values))
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or math.isinf(hi):
        raise ValueRangeError(f"data.value_range: {what} holds non-finite values (NaN or inf)")
    found = f"values in [{lo:.6g}, {hi:.6g}]"
    tol = RANGE_TOLERANCE
    if not values.is_floating_point():
        if setting in ("01", "-11"):
            raise ValueRangeError(
                f"data.value_range={setting} but {what} has integer dtype {dtype}: expected a float dtype, "
                f"or set data.value_range=auto or uint8 for 0..255"
            )
        if lo < 0 or hi > 255:
            raise ValueRangeError(f"data.value_range={setting}: {what} has dtype {dtype} with {found}; expected 0..255")
        return "uint8", f"dtype {dtype}, {found}: 0..255"
    bounds = {"uint8": (0.0, 255.0), "01": (0.0, 1.0), "-11": (-1.0, 1.0)}
    if setting != "auto":
        low, high = bounds[setting]
        if lo < low - tol or hi > high + tol:
            raise ValueRangeError(
                f"data.value_range={setting} expects values in [{low:g}, {high:g}], but {what} ({dtype}) has {found}"
            )
        return setting, f"set explicitly; dtype {dtype}, {found}"
    if lo >= -tol and hi <= 1 + tol:
        return "01", f"auto: dtype {dtype}, {found}, no negative value in the whole file: [0, 1]"
    if lo >= -1 - tol and hi <= 1 + tol:
        return "-11", f"auto: dtype {dtype}, {found}, negative values: [-1, 1]"
    hint = "set data.value_range=uint8 if they are 0..255" if lo >= -tol and hi <= 255 + tol else "rescale them to [0, 1] or [-1, 1]"
    raise ValueRangeError(
        f"data.value_range=auto cannot decide the range of {what} ({dtype}, {found}): they fit neither [0, 1] "
        f"nor [-1, 1]; {hint}"
    )


def _to_unit(views: torch.Tensor, value_range: str) -> torch.Tensor:
    """Stored values of a decided range -> a new float32 tensor in [0, 1]."""
    if value_range == "uint8":
        out = views.float() / 255.0
    elif value_range == "-11":
        out = (views.float() + 1.0) / 2.0
    elif value_range in ("01", "uint16"):  # 16-bit images are read as float [0, 1]
        out = views.float().clone()
    else:
        raise ValueError(f"value_range must be one of {', '.join(VALUE_RANGES[1:])}; got {value_range!r}")
    return out.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------
# Fingerprints: what a finished result was computed from


def _digest(mode: str, payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return f"{mode}:{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _stat_entry(path: Path) -> list[Any]:
    """``[name, size, mtime_ns]`` (following links), plus the link target for a symbolic link."""
    st = path.stat()
    entry: list[Any] = [path.name, st.st_size, st.st_mtime_ns]
    if path.is_symlink():
        entry.append(os.readlink(path))
    return entry


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _frames_fingerprint(files: list[Path], mode: str) -> str:
    if mode == "stat":
        return _digest("stat", {"kind": "frames", "files": [_stat_entry(p) for p in files]})
    return _digest("content", {"kind": "frames", "files": [[p.name, _file_sha256(p)] for p in files]})


def _check_fingerprint_mode(mode: str) -> None:
    if mode not in ("stat", "content"):
        raise ValueError(f"fingerprint mode must be 'stat' or 'content'; got {mode!r}")


# ---------------------------------------------------------------------------------------------
# Discovery: a path -> named sequences, each read lazily


class _TensorFile:
    """One tensor file, loaded (memory-mapped where possible) once; its value range decided once.

    Pickled without its data (DataLoader workers under ``spawn`` reload it, after checking that
    the file is the one discovered).
    """

    def __init__(self, path: Path, key: str | None, setting: str) -> None:
        self.path, self.key = path, key
        st = path.stat()
        self.identity = [path.name, st.st_size, st.st_mtime_ns]
        self._data: torch.Tensor | None = read_tensor_file(path, key)
        self.value_range, self.reason = decide_value_range(self._data, setting, what=f"data.path={path}")
        self.count = int(self._data.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def data(self) -> torch.Tensor:
        if self._data is None:
            st = self.path.stat()
            if [self.path.name, st.st_size, st.st_mtime_ns] != self.identity:
                raise ValueError(f"data.path={self.path} changed since it was discovered; run again")
            self._data = read_tensor_file(self.path, self.key)
        return self._data

    def sequence(self, index: int) -> torch.Tensor:
        # A copy: a view would share (and ship to workers) the storage of the whole file.
        return self.data()[index].clone()


@dataclass
class SequenceSource:
    """One sequence to evaluate: a stable ``name``; :func:`prepare_views` or ``load()`` reads it.

    Attributes:
        name: unique within a discovery (file/folder name, or the zero-padded index in a tensor file).
        kind: ``"frames"`` (a folder of images), ``"video"`` (a video/GIF file), ``"tensor"`` (one
            sequence of a tensor file) or ``"missing"`` (a broken symbolic link: reading it raises).
        path: the folder or file.
        index: the leading index in the tensor file (``kind == "tensor"``), else None.
        value_range: the range the stored values are read with, decided at discovery: ``"uint8"``
            for videos, the file-wide decision for tensor files (``uint8 | 01 | -11``); None for
            frame folders, where each image's bit depth decides (see :attr:`PreparedViews.value_range`).
        value_range_reason: how ``value_range`` was decided (record it with the results).
    """

    name: str
    kind: str
    path: str
    loader: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    index: int | None = None
    value_range: str | None = None
    value_range_reason: str = ""
    _setting: str = field(default="auto", repr=False)
    _file: _TensorFile | None = field(default=None, repr=False)

    def load(self) -> torch.Tensor:
        """The stored frames ``(V, 3, H, W)``: as the readers return them (tensor: the stored dtype)."""
        if self.loader is not None:
            return self.loader()
        if self.kind == "frames":
            return read_frame_folder(self.path)
        if self.kind == "video":
            return read_video(self.path)
        if self.kind == "tensor":
            assert self._file is not None and self.index is not None
            return self._file.sequence(self.index)
        raise _broken_link_error(Path(self.path), "sequence")

    def fingerprint(self, mode: str = "stat") -> str:
        """A string that changes when this sequence's inputs change (the same in every process).

        ``mode="stat"`` (cheap: one ``stat`` per file, no data read): frames -> the natural-sorted
        frame names with size and ``mtime_ns`` (and link targets); video -> name, size, mtime_ns;
        tensor -> the file's name, size and mtime_ns, ``data.tensor_key``, the index and the
        decided value range.  Any rewrite of a file changes its mtime, so regenerated samples are
        caught; a copy that does not keep mtimes (``cp`` without ``-p``) also changes it (a
        needless recompute, never a stale score).  It misses only a content change that keeps
        size and mtime (a deliberate ``touch -r``, or a filesystem with coarse timestamps
        rewritten within one tick to the same size).

        ``mode="content"``: a SHA-256 of the bytes (frames: every file; video: the file; tensor:
        this sequence's values, dtype, shape and value range): exact, and unchanged by copies,
        but it reads all the data again.

        Returns:
            ``"stat:<32 hex>"`` or ``"content:<32 hex>"`` (the two modes never compare equal).
        """
        _check_fingerprint_mode(mode)
        path = Path(self.path)
        if self.kind == "frames":
            return _frames_fingerprint(_frame_files(path), mode)
        if self.kind == "video":
            if _is_broken_link(path):
                raise _broken_link_error(path, "video")
            if mode == "stat":
                return _digest("stat", {"kind": "video", "file": _stat_entry(path)})
            return _digest("content", {"kind": "video", "sha256": _file_sha256(path)})
        if self.kind == "tensor":
            assert self._file is not None and self.index is not None
            common = {"kind": "tensor", "key": self._file.key, "index": self.index, "value_range": self.value_range}
            if mode == "stat":
                return _digest("stat", {**common, "file": self._file.identity})
            seq = self._file.data()[self.index].contiguous()
            h = hashlib.sha256(seq.reshape(-1).view(torch.uint8).numpy().tobytes())
            return _digest("content", {**common, "dtype": str(seq.dtype), "shape": list(seq.shape), "sha256": h.hexdigest()})
        if self.kind == "missing":
            target = os.readlink(path) if path.is_symlink() else None
            return _digest(mode, {"kind": "missing", "name": path.name, "target": target})
        if self.loader is not None:
            raise ValueError(f"sequence {self.name}: a custom loader has no fingerprint")
        raise ValueError(f"sequence {self.name}: unknown kind {self.kind!r}")


def _check_setting(value_range: str) -> None:
    if value_range not in VALUE_RANGES:
        raise ValueRangeError(f"data.value_range must be one of {', '.join(VALUE_RANGES)}; got {value_range!r}")


def _refuse_float_range_for_pixels(root: Path, value_range: str) -> None:
    if value_range in ("01", "-11"):
        raise ValueRangeError(
            f"data.value_range={value_range} describes float tensor files, but data.path={root} holds image/video "
            f"frames, whose range their format fixes (8-bit 0..255, 16-bit 0..65535): set data.value_range=auto"
        )


def _preview(names: list[str], k: int = 3) -> str:
    return ", ".join(names[:k]) + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _frames_source(folder: Path, value_range: str) -> SequenceSource:
    return SequenceSource(folder.name, "frames", str(folder), value_range_reason="bit depth of each image", _setting=value_range)


def _video_source(path: Path, name: str, value_range: str) -> SequenceSource:
    return SequenceSource(name, "video", str(path), value_range="uint8", value_range_reason="decoded to rgb24 (8-bit)", _setting=value_range)


def discover_sequences(
    path: str | Path, *, tensor_key: str | None = None, value_range: str = "auto"
) -> list[SequenceSource]:
    """Find the sequences under ``path`` (``data.path``), in natural-sort order of their names.

    * a tensor file (.pt/.npz/...) -> one sequence per leading index, named ``"00000"`` ...; the
      file is loaded here (memory-mapped where possible) and its value range decided once, over
      the whole file (:func:`decide_value_range`; refused when it cannot be decided);
    * a video/GIF file -> one sequence named after the file stem;
    * a folder holding images and nothing that is a sequence -> one sequence (the folder itself);
    * a folder of sequences: each sub-folder and each video file is one sequence (named by the
      sub-folder name / the file name).  A sub-folder without images is still listed so that it
      is reported as an error, not silently dropped; so is a broken symbolic link without a
      suffix.  Hidden entries are skipped; other files (notes, metadata, tensor files) are
      ignored and logged.
    * loose images next to sub-folders or videos: :class:`MixedLayoutError` (is the folder one
      sequence, or a folder of sequences with stray frames?  never guessed).

    ``value_range`` (``data.value_range``): see :func:`decide_value_range`; ``01``/``-11`` are
    refused for image/video inputs (their range is fixed by the format).
    """
    _check_setting(value_range)
    root = Path(path)
    if not root.exists():
        if root.is_symlink():
            raise FileNotFoundError(f"data.path is a broken symbolic link: {root} -> {os.readlink(root)}")
        raise FileNotFoundError(f"data.path does not exist: {root}")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix in TENSOR_EXTENSIONS:
            tfile = _TensorFile(root, tensor_key, value_range)
            width = max(5, len(str(tfile.count - 1)))
            return [
                SequenceSource(f"{i:0{width}d}", "tensor", str(root), index=i, value_range=tfile.value_range,
                               value_range_reason=tfile.reason, _setting=value_range, _file=tfile)
                for i in range(tfile.count)
            ]
        if suffix in VIDEO_EXTENSIONS:
            _refuse_float_range_for_pixels(root, value_range)
            return [_video_source(root, root.stem, value_range)]
        hint = " (one image is not a sequence: point data.path at its folder)" if suffix in IMAGE_EXTENSIONS else ""
        raise ValueError(f"data.path: unsupported file type {suffix!r}: {root}{hint}")

    images, seqs, ignored = [], [], []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        suffix = entry.suffix.lower()
        broken = _is_broken_link(entry)
        if suffix in IMAGE_EXTENSIONS and (entry.is_file() or broken):
            images.append(entry)
        elif entry.is_dir():
            seqs.append(("frames", entry))
        elif suffix in VIDEO_EXTENSIONS:
            seqs.append(("video", entry))
        elif broken and not suffix:
            seqs.append(("missing", entry))  # most likely a sequence folder whose target is gone
        else:
            ignored.append(entry.name)
    if images and seqs:
        raise MixedLayoutError(
            f"data.path={root} mixes {len(images)} loose image file(s) ({_preview([p.name for p in images])}) with "
            f"{len(seqs)} sequence entries (sub-folders/videos: {_preview([e.name for _, e in seqs])}); a folder is "
            f"either one sequence of frames or a folder of sequences: move the loose images into a sub-folder "
            f"(or delete them), or point data.path at one sequence"
        )
    if ignored:
        log.warning("%s: ignored %d entries that are neither sequences nor frames: %s", root, len(ignored), _preview(ignored))
    _refuse_float_range_for_pixels(root, value_range)
    if images:
        return [_frames_source(root, value_range)]
    sources = []
    for kind, entry in seqs:
        if kind == "frames":
            sources.append(SequenceSource(entry.name, "frames", str(entry), value_range_reason="bit depth of each image", _setting=value_range))
        elif kind == "video":
            sources.append(_video_source(entry, entry.name, value_range))
        else:
            sources.append(SequenceSource(entry.name, "missing", str(entry), _setting=value_range))
    if not sources:
        skipped = f" (ignored: {_preview(ignored)})" if ignored else ""
        raise ValueError(
            f"data.path: no sequences found in {root}{skipped}: expected sub-folders of frames, video files "
            f"({', '.join(VIDEO_EXTENSIONS)}), images, or data.path pointing at a tensor file"
        )
    return sources


# ---------------------------------------------------------------------------------------------
# Frame selection, range and size


def _selected_indices(n: int, stride: int, start: int, max_frames: int | None) -> list[int]:
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"data.frame_stride must be an integer >= 1; got {stride!r}")
    if not isinstance(start, int) or start < 0:
        raise ValueError(f"data.start must be an integer >= 0; got {start!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"data.max_frames must be null or an integer >= 1; got {max_frames!r}")
    return list(range(n))[start::stride][:max_frames]


def select_frames(views: torch.Tensor, *, stride: int = 1, start: int = 0, max_frames: int | None = None) -> torch.Tensor:
    """Every ``stride``-th frame from ``start``, at most ``max_frames`` of them."""
    if stride < 1:
        raise ValueError(f"data.frame_stride must be >= 1, got {stride}")
    views = views[start::stride]
    return views[:max_frames] if max_frames is not None else views


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"data.resize must be an int or [height, width], got {list(size)}")
    return size  # type: ignore[return-value]


def resize_views(views: torch.Tensor, size: int | Sequence[int], filter: str = "bicubic") -> torch.Tensor:
    """Resize float ``(V, 3, H, W)`` in [0, 1] to ``size`` with a pinned, antialiased filter.

    ``bicubic``/``bilinear`` use ``torch.nn.functional.interpolate(..., antialias=True)`` (a
    proper low-pass when shrinking, like PIL); ``area`` is box averaging; ``nearest`` is for
    label-like data only.  Output clamped to [0, 1] (bicubic overshoots).  Frames are resized
    independently, so resizing one at a time gives the same pixels as resizing a batch.
    """
    h, w = _parse_size(size)
    if filter not in RESIZE_FILTERS:
        raise ValueError(f"data.resize_filter must be one of {', '.join(RESIZE_FILTERS)}; got {filter!r}")
    if tuple(views.shape[-2:]) == (h, w):
        return views
    kwargs: dict[str, Any] = {}
    if filter in ("bicubic", "bilinear"):
        kwargs = {"antialias": True, "align_corners": False}
    out = F.interpolate(views.float(), size=(h, w), mode=filter, **kwargs)
    return out.clamp_(0.0, 1.0)


def _round_to(v: int, m: int) -> int:
    return max(m, int(math.floor(v / m + 0.5)) * m)


def _size_invalid(h: int, w: int, multiple: int, height_multiple: int, min_side: int) -> bool:
    return bool(h % height_multiple or w % multiple or min(h, w) < min_side)


def _check_resize_target(resize: int | Sequence[int], multiple: int, height_multiple: int, min_side: int) -> tuple[int, int]:
    h, w = _parse_size(resize)
    if _size_invalid(h, w, multiple, height_multiple, min_side):
        raise FrameSizeError(
            f"data.resize={h}x{w} is invalid: height must be a multiple of {height_multiple}, width of {multiple}, "
            f"both >= {min_side}"
        )
    return h, w


def check_or_resize(
    views: torch.Tensor,
    *,
    resize: int | Sequence[int] | None,
    filter: str = "bicubic",
    multiple: int = 16,
    height_multiple: int | None = None,
    min_side: int = 32,
) -> torch.Tensor:
    """Apply the explicit ``resize``, or check that the frames already have a valid size.

    Valid = width a multiple of ``multiple`` (the ViT patch size), height a multiple of
    ``height_multiple`` (default ``multiple``; FeatUp's dino16 needs an even number of patch rows,
    i.e. 32), both at least ``min_side``.  Without an explicit ``resize``, invalid frames raise
    :class:`FrameSizeError` naming the setting to use.
    """
    mh = height_multiple or multiple
    if resize is not None:
        return resize_views(views, _check_resize_target(resize, multiple, mh, min_side), filter)
    h, w = views.shape[-2:]
    if _size_invalid(h, w, multiple, mh, min_side):
        sh, sw = max(_round_to(h, mh), min_side), max(_round_to(w, multiple), min_side)
        raise FrameSizeError(
            f"frames are {h}x{w}; height must be a multiple of {mh}, width of {multiple}, both >= {min_side}. "
            f"Resize explicitly (antialiased, recorded with the results), e.g. data.resize=[{sh},{sw}]"
        )
    return views


# ---------------------------------------------------------------------------------------------
# One sequence, ready for the metric


@dataclass
class PreparedViews:
    """One sequence read by :func:`prepare_views`, with what its numbers depend on.

    Attributes:
        views: ``(V, 3, H, W)`` float32 in [0, 1], V the frames kept by the selection.
        value_range: how stored values were mapped to [0, 1]: ``"uint8"`` (8-bit images, videos,
            uint8 tensors), ``"uint16"`` (16-bit images), ``"uint8+uint16"`` (a folder of both),
            ``"01"`` / ``"-11"`` (float tensors, decided per file).
        fingerprint: :meth:`SequenceSource.fingerprint` of the inputs as read (before reading).
        num_frames_stored: frames in the source before the selection.
        frame_indices: which stored frames were kept, in order.
        input_sizes: the distinct ``(H, W)`` of the frames read, before any resize.
        resized: whether ``data.resize`` changed any frame.
        video: for videos, ``{"frames_decoded", "frames_expected", "frames_expected_from"}``.
    """

    views: torch.Tensor
    value_range: str
    fingerprint: str
    num_frames_stored: int
    frame_indices: list[int]
    input_sizes: list[tuple[int, int]]
    resized: bool
    video: dict[str, Any] | None = None
    geometry: Any | None = None  # KnownGeometry (1, V, H, W) of the kept frames (data.geometry)
    geometry_file: str | None = None
    geometry_fingerprint: str | None = None

    def record(self) -> dict[str, Any]:
        """JSON-ready fields for the sequence's result record."""
        out: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "value_range": self.value_range,
            "num_frames_stored": self.num_frames_stored,
            "input_sizes": [list(s) for s in self.input_sizes],
            "resized": self.resized,
        }
        if self.video is not None:
            out.update(self.video)
        if self.geometry_file is not None:
            out.update(geometry_file=self.geometry_file, geometry_fingerprint=self.geometry_fingerprint)
        return out


@dataclass
class _Raw:
    """The selected stored frames of a source, before the range mapping and the resize."""

    frames: list[torch.Tensor]  # (3, H, W) each: uint8, float32 [0, 1] (16-bit images), or the stored dtype
    ranges: list[str]  # the value range of each frame
    names: list[str]  # for error messages
    fingerprint: str
    num_stored: int
    indices: list[int]
    video: dict[str, Any] | None = None


def _read_source(source: SequenceSource, indices_of: Callable[[int], list[int]], fingerprint_mode: str) -> _Raw:
    """Read the frames of ``source`` that ``indices_of(num_stored)`` selects (a folder reads only those)."""
    path = Path(source.path)
    if source.loader is not None:  # a custom source: its own loader, range decided on its values, no fingerprint
        raw = source.loader()
        idx = indices_of(int(raw.shape[0]))
        rng = source.value_range or decide_value_range(raw, source._setting, what=f"sequence {source.name}")[0]
        return _Raw([raw[i] for i in idx], [rng] * len(idx), [f"frame {i}" for i in idx], "", int(raw.shape[0]), idx)
    if source.kind == "frames":
        files = _frame_files(path)
        fp = _frames_fingerprint(files, fingerprint_mode)  # stat before reading: a later change is seen
        idx = indices_of(len(files))
        read = [_read_image(files[i]) for i in idx]
        ranges = [r for _, r in read]
        if source._setting == "uint8" and "uint16" in ranges:
            k = ranges.index("uint16")
            raise ValueRangeError(
                f"data.value_range=uint8 but frame {files[idx[k]]} is a 16-bit image (0..65535): set data.value_range=auto"
            )
        return _Raw([f for f, _ in read], ranges, [files[i].name for i in idx], fp, len(files), idx)
    if source.kind == "video":
        fp = source.fingerprint(fingerprint_mode)
        frames, count = _decode_video(path)
        idx = indices_of(len(frames))
        return _Raw([frames[i] for i in idx], ["uint8"] * len(idx), [f"frame {i}" for i in idx], fp, len(frames), idx, count.record())
    if source.kind == "tensor":
        fp = source.fingerprint(fingerprint_mode)
        assert source._file is not None and source.index is not None and source.value_range is not None
        seq = source._file.data()[source.index]
        idx = indices_of(int(seq.shape[0]))
        return _Raw([seq[i] for i in idx], [source.value_range] * len(idx), [f"frame {i}" for i in idx], fp, int(seq.shape[0]), idx)
    if _is_broken_link(path):
        raise _broken_link_error(path, "sequence")
    raise ValueError(f"sequence {source.name}: unknown kind {source.kind!r}")


def prepare_views(
    source: SequenceSource,
    *,
    frame_stride: int = 1,
    start: int = 0,
    max_frames: int | None = None,
    resize: int | Sequence[int] | None = None,
    resize_filter: str = "bicubic",
    multiple: int = 16,
    height_multiple: int | None = None,
    min_side: int = 32,
    fingerprint_mode: str = "stat",
    geometry: str | None = None,
) -> PreparedViews:
    """Read ``source`` into what the metric takes: ``(V, 3, H, W)`` float32 in [0, 1], one valid size.

    With ``geometry`` (``data.geometry``, a pattern, see :func:`geometry_path`) the sequence's geometry
    file is fingerprinted, read and checked against the stored frames, and the kept frames' cameras
    become :attr:`PreparedViews.geometry` (refused together with ``resize``: the file's depth and
    intrinsics are those of the stored frames).

    Steps: select the frames (``data.frame_stride``/``start``/``max_frames``; a frame folder reads
    only the selected files), map them to [0, 1] with the source's value range (decided at
    discovery for tensor files, by bit depth for images), resize each frame on its own when
    ``resize`` (``data.resize``, with ``data.resize_filter``) is set, else check that the frames
    share one valid size (``multiple``, ``height_multiple``, ``min_side``: the metric's rules).

    Raises:
        FrameSizeError: an invalid ``resize`` target, frames of different sizes without
            ``resize``, or frames of a size the metric cannot take.
        ValueError: and its subclasses for every refused input (see the module docstring).
    """
    _check_fingerprint_mode(fingerprint_mode)
    if resize_filter not in RESIZE_FILTERS:
        raise ValueError(f"data.resize_filter must be one of {', '.join(RESIZE_FILTERS)}; got {resize_filter!r}")
    mh = height_multiple or multiple
    target = _check_resize_target(resize, multiple, mh, min_side) if resize is not None else None

    def indices_of(n: int) -> list[int]:
        idx = _selected_indices(n, frame_stride, start, max_frames)
        if not idx:
            raise ValueError(
                f"no frames left after frame selection: {n} stored, data.start={start}, data.frame_stride={frame_stride}"
            )
        return idx

    if geometry is not None and resize is not None:
        raise ValueError(f"data.resize must be null with data.geometry (the geometry file holds the stored frames' "
                         f"depth and intrinsics); got {resize!r}")
    geo_path = geo_fp = None
    if geometry is not None:
        geo_path = geometry_path(source, geometry)
        geo_fp = geometry_fingerprint(source, geometry, fingerprint_mode)  # before reading, as the frames
    raw = _read_source(source, indices_of, fingerprint_mode)
    sizes: list[tuple[int, int]] = sorted({(int(f.shape[-2]), int(f.shape[-1])) for f in raw.frames})
    unit = [_to_unit(f, r) for f, r in zip(raw.frames, raw.ranges)]
    if target is not None:
        # Each frame on its own: frames of different sizes are fine, the pixels equal a batch resize.
        views = torch.stack([resize_views(f[None], target, resize_filter)[0] for f in unit])
    else:
        _check_one_size(unit, raw.names, f"sequence {source.name}")
        views = check_or_resize(torch.stack(unit), resize=None, multiple=multiple, height_multiple=mh, min_side=min_side)
    kinds = set(raw.ranges)
    known = None
    if geo_path is not None:
        from .known_geometry import KnownGeometry

        arrays = read_geometry_file(geo_path, raw.num_stored, (int(views.shape[-2]), int(views.shape[-1])))
        idx = torch.tensor(raw.indices, dtype=torch.long)
        try:
            known = KnownGeometry.from_depth(
                *(arrays[k][idx][None] for k in ("depth", "intrinsics", "cam_to_world")),
                valid=arrays["valid"][idx][None] if "valid" in arrays else None,
            )
        except ValueError as err:
            raise ValueError(f"geometry file {geo_path}: {err}") from None
    return PreparedViews(
        views=views,
        value_range="uint8+uint16" if kinds == {"uint8", "uint16"} else kinds.pop(),
        fingerprint=raw.fingerprint,
        num_frames_stored=raw.num_stored,
        frame_indices=raw.indices,
        input_sizes=sizes,
        resized=target is not None and any(s != target for s in sizes),
        video=raw.video,
        geometry=known,
        geometry_file=None if geo_path is None else str(geo_path),
        geometry_fingerprint=geo_fp,
    )


# ---------------------------------------------------------------------------------------------
# Known cameras: one .npz of geometry beside each sequence (data.geometry)

_GEOMETRY_KEYS = {"depth": "(V, H, W)", "intrinsics": "(V, 3, 3)", "cam_to_world": "(V, 4, 4)"}


def geometry_path(source: SequenceSource, pattern: str) -> Path:
    """The geometry file of ``source``: ``pattern`` (``data.geometry``) with ``{name}`` (the sequence
    name) and ``{stem}`` (the name without its suffix) filled in, relative to the folder holding the
    sequence (a sequence folder's or video's parent, a tensor file's folder) unless absolute.

    ``'{name}.npz'`` puts ``seqs/seq_a.npz`` beside ``seqs/seq_a/``; ``'{name}/cameras.npz'`` puts it inside.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"data.geometry must be null or a file name pattern such as '{{name}}.npz'; got {pattern!r}")
    try:
        name = pattern.format(name=source.name, stem=Path(source.name).stem)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"data.geometry={pattern!r}: only {{name}} and {{stem}} can be filled in ({err})") from None
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(source.path).parent / path


def geometry_fingerprint(source: SequenceSource, pattern: str, mode: str = "stat") -> str:
    """Fingerprint of ``source``'s geometry file (as :meth:`SequenceSource.fingerprint` for the frames)."""
    _check_fingerprint_mode(mode)
    path = geometry_path(source, pattern)
    if not path.is_file():
        raise FileNotFoundError(f"no geometry file {path} for sequence {source.name} (data.geometry={pattern!r})")
    if mode == "stat":
        return _digest("stat", {"kind": "geometry", "file": _stat_entry(path)})
    return _digest("content", {"kind": "geometry", "sha256": _file_sha256(path)})


def read_geometry_file(path: str | Path, num_frames: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Read and check a geometry ``.npz`` (no pickle) for ``num_frames`` stored frames of ``size`` (H, W).

    Returns:
        ``depth`` (V, H, W) float32, ``intrinsics`` (V, 3, 3) float64, ``cam_to_world`` (V, 4, 4) float64
        and, when stored, ``valid`` (V, H, W) bool. Values (positive depth, rigid poses, ...) are checked
        by :class:`~met3r_metrics.KnownGeometry`.

    Raises:
        ValueError: naming the file, the array, what was expected and what it holds.
    """
    import numpy as np

    path = Path(path)
    h, w = size
    want = {"depth": (num_frames, h, w), "intrinsics": (num_frames, 3, 3), "cam_to_world": (num_frames, 4, 4),
            "valid": (num_frames, h, w)}
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:  # an object array (pickle) or not an npz at all
        raise ValueError(f"geometry file {path}: expected a .npz of numeric arrays (no pickled objects), got {err}") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"geometry file {path}: expected a readable .npz, got {type(err).__name__}: {err}") from None
    missing = [k for k in _GEOMETRY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"geometry file {path}: expected arrays {list(_GEOMETRY_KEYS)} (+ optional 'valid'), "
                         f"missing {missing} (it holds {sorted(arrays)})")
    out: dict[str, torch.Tensor] = {}
    for key in (*_GEOMETRY_KEYS, "valid"):
        if key not in arrays:
            continue
        a = arrays[key]
        shape_text = _GEOMETRY_KEYS.get(key, "(V, H, W)")
        if tuple(a.shape) != want[key]:
            raise ValueError(f"geometry file {path}: {key}: expected shape {shape_text} = {want[key]} (the sequence's "
                             f"{num_frames} stored frames of {h}x{w}), got {tuple(a.shape)}")
        if key == "valid":
            if a.dtype != np.bool_:
                raise ValueError(f"geometry file {path}: valid: expected a bool array, got dtype {a.dtype}")
            out[key] = torch.from_numpy(a.copy())
        else:
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"geometry file {path}: {key}: expected a float array, got dtype {a.dtype}")
            out[key] = torch.from_numpy(a.astype(np.float32 if key == "depth" else np.float64))
    return out


# ---------------------------------------------------------------------------------------------
# Reading sequences in DataLoader workers, in order


@dataclass(frozen=True)
class SequenceError:
    """A sequence that could not be read: recorded instead of its views (picklable)."""

    sequence: str
    error_type: str
    message: str

    def __str__(self) -> str:
        return f"{self.error_type}: {self.message}"


class SequenceDataset(torch.utils.data.Dataset):
    """Items ``(index, PreparedViews | SequenceError)`` over ``sources``, for a ``DataLoader``.

    ``prepare_fn(source)`` (default :func:`prepare_views`; a ``functools.partial`` of it carries
    the settings) runs in the worker; any exception it raises becomes that item's
    :class:`SequenceError` instead of ending the loader.
    """

    def __init__(self, sources: Sequence[SequenceSource], prepare_fn: Callable[[SequenceSource], Any] = prepare_views) -> None:
        self.sources = list(sources)
        self.prepare_fn = prepare_fn

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> tuple[int, Any]:
        source = self.sources[index]
        try:
            return index, self.prepare_fn(source)
        except Exception as err:  # noqa: BLE001 - one bad input must not end the run
            return index, SequenceError(source.name, type(err).__name__, str(err))


def _keep(item: Any) -> Any:
    return item


def iter_prepared(
    sources: Sequence[SequenceSource],
    prepare_fn: Callable[[SequenceSource], Any] = prepare_views,
    *,
    num_workers: int = 0,
    prefetch_factor: int = 2,
    timeout: float = 0,
) -> Iterator[tuple[SequenceSource, Any]]:
    """``(source, PreparedViews | SequenceError)`` for each source, in the order of ``sources``.

    ``num_workers > 0`` decodes in that many DataLoader worker processes, up to
    ``num_workers * prefetch_factor`` sequences ahead, while the caller scores; the order is kept.
    A worker process that dies (e.g. killed for memory) ends the iteration with the
    DataLoader's ``RuntimeError``.
    """
    from torch.utils.data import DataLoader

    dataset = SequenceDataset(sources, prepare_fn)
    if num_workers == 0:
        for i in range(len(dataset)):
            yield dataset.sources[i], dataset[i][1]
        return
    # Workers start from a fresh forkserver process, not a fork of this one: a forked worker inherits
    # PyAV (FFmpeg) objects whose libswscale slice threads do not survive the fork, and freeing one
    # there blocks the worker forever (seen in the test suite: a worker stuck in sws_freeContext).
    import multiprocessing

    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    loader = DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=num_workers, collate_fn=_keep,
        prefetch_factor=prefetch_factor, timeout=timeout, multiprocessing_context=method,
    )
    for expected, (index, result) in enumerate(loader):
        assert index == expected, f"DataLoader returned item {index}, expected {expected}"
        yield dataset.sources[index], result


# ---------------------------------------------------------------------------------------------
# Provenance


def decoder_versions() -> dict[str, str | None]:
    """Versions of the decoders that produced the pixels (recorded with the results).

    ``ffmpeg``: the FFmpeg release PyAV runs on (``av.ffmpeg_version_info``); ``libavcodec`` /
    ``libavformat`` / ``libswscale``: the library versions (decoding, demuxing, YUV -> RGB).
    """
    out: dict[str, str | None] = {}
    try:
        import PIL

        out["pillow"] = PIL.__version__
    except ImportError:  # pragma: no cover
        out["pillow"] = None
    try:
        import av
    except ImportError:  # pragma: no cover
        av = None
    out["pyav"] = getattr(av, "__version__", None)
    out["ffmpeg"] = str(getattr(av, "ffmpeg_version_info", "") or "") or None
    libs = getattr(av, "library_versions", {}) or {}
    for name in ("libavcodec", "libavformat", "libswscale"):
        out[name] = ".".join(str(v) for v in libs.get(name, ())) or None
    return out
