"""Reading view sequences from disk: frame folders, video files, GIFs and tensor files.

Every reader returns a ``(V, 3, H, W)`` tensor of one sequence: ``uint8`` for images and videos
(exactly the decoded pixels), the stored dtype for tensor files.  Frame order is the natural sort
of the file names (``frame2.png`` before ``frame10.png``).  Resizing is never implicit: frames
whose sizes the metric cannot take raise :class:`FrameSizeError` unless an explicit ``resize`` is
given, and the resize applied is a pinned, antialiased filter (clean-fid's lesson: the resize
filter changes the number, so it is part of the result's settings).

Pillow is needed for images/GIFs and PyAV for mp4/webm/...; both are imported lazily.
"""

from __future__ import annotations

import math
import re
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
    "FrameSizeError",
    "SequenceSource",
    "natural_key",
    "read_image",
    "read_frame_folder",
    "read_video",
    "read_tensor_file",
    "discover_sequences",
    "select_frames",
    "check_or_resize",
    "resize_views",
    "to_unit_range",
    "decoder_versions",
    "iter_pairs",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: GIFs are decoded with Pillow (every frame, composited to RGB); the rest with PyAV.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
TENSOR_EXTENSIONS = (".pt", ".pth", ".npz", ".npy")
RESIZE_FILTERS = ("bicubic", "bilinear", "area", "nearest")


class FrameSizeError(ValueError):
    """Frames have a size the metric cannot take and no explicit resize was requested."""


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs numerically: ``f2`` < ``f10``; case-insensitive."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


# ---------------------------------------------------------------------------------------------
# Readers: one file or folder -> (V, 3, H, W)


def _pil() -> Any:
    try:
        from PIL import Image, ImageSequence
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs pillow: pip install 'met3r-metrics[cli]'") from err
    return Image, ImageSequence


def _hwc_to_chw(array: Any) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()


def read_image(path: str | Path) -> torch.Tensor:
    """One image file -> ``(3, H, W)`` uint8 RGB (alpha dropped, palette/grey expanded)."""
    import numpy as np

    Image, _ = _pil()
    with Image.open(path) as img:
        return _hwc_to_chw(np.asarray(img.convert("RGB")))


def read_frame_folder(folder: str | Path) -> torch.Tensor:
    """All images directly inside ``folder``, natural-sorted -> ``(V, 3, H, W)`` uint8.

    Raises:
        ValueError: no images, or frames of different sizes (a sequence must have one size).
    """
    folder = Path(folder)
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: natural_key(p.name),
    )
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
    frames = [read_image(p) for p in files]
    sizes = {tuple(f.shape[1:]) for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"frames of {folder} have different sizes {sorted(sizes)}")
    return torch.stack(frames)


def _read_gif(path: Path) -> torch.Tensor:
    import numpy as np

    Image, ImageSequence = _pil()
    with Image.open(path) as img:
        # convert("RGB") on each frame composites GIF deltas/palettes into full frames.
        frames = [_hwc_to_chw(np.asarray(f.convert("RGB"))) for f in ImageSequence.Iterator(img)]
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return torch.stack(frames)


def read_video(path: str | Path) -> torch.Tensor:
    """A video (PyAV: mp4, webm, ...) or animated GIF (Pillow) -> ``(V, 3, H, W)`` uint8 RGB.

    Every decoded frame of the first video stream, in presentation order, converted to rgb24 by
    libswscale (the decoding path is recorded in :func:`decoder_versions`).
    """
    path = Path(path)
    if path.suffix.lower() == ".gif":
        return _read_gif(path)
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading videos needs PyAV: pip install 'met3r-metrics[video]'") from err
    frames = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            frames.append(_hwc_to_chw(frame.to_ndarray(format="rgb24")))
    if not frames:
        raise ValueError(f"no frames decoded from {path}")
    return torch.stack(frames)


def read_tensor_file(path: str | Path, key: str | None = None) -> torch.Tensor:
    """A ``.pt``/``.pth`` (torch.save) or ``.npz``/``.npy`` file -> ``(N, V, 3, H, W)`` tensor.

    A single sequence ``(V, 3, H, W)`` is returned as ``N = 1``.  For ``.npz`` and for ``.pt``
    files holding a dict, ``key`` picks the array (default: the only one, else ``"images"``).
    Channels-last ``(..., H, W, 3)`` arrays are permuted to channels-first.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        import numpy as np

        loaded: Any = np.load(path, allow_pickle=False)
        if suffix == ".npz":
            loaded = {k: loaded[k] for k in loaded.files}
    else:
        # weights_only: a results folder may come from anywhere; never unpickle code.
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(loaded, dict):
        if key is None:
            key = next(iter(loaded)) if len(loaded) == 1 else "images"
        if key not in loaded:
            raise KeyError(f"{path} holds {sorted(loaded)}; choose one with data.tensor_key=...")
        loaded = loaded[key]
    tensor = torch.as_tensor(loaded)
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
# Discovery: a path -> named sequences, each loaded lazily


@dataclass
class SequenceSource:
    """One sequence to evaluate: a stable ``name`` and a ``load()`` giving ``(V, 3, H, W)``."""

    name: str
    kind: str  # "frames" | "video" | "tensor"
    path: str
    loader: Callable[[], torch.Tensor] = field(repr=False)

    def load(self) -> torch.Tensor:
        return self.loader()


class _TensorFileCache:
    """Loads a tensor file once and hands out its sequences (sequences are indexed into it)."""

    def __init__(self, path: Path, key: str | None) -> None:
        self.path, self.key, self._data = path, key, None

    def __call__(self, index: int) -> torch.Tensor:
        if self._data is None:
            self._data = read_tensor_file(self.path, self.key)
        return self._data[index]

    def count(self) -> int:
        # Counting needs the shape; .npy/.pt must be read (mmap where torch allows it).
        if self._data is None:
            self._data = read_tensor_file(self.path, self.key)
        return int(self._data.shape[0])


def _has_images(folder: Path) -> bool:
    return any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in folder.iterdir())


def discover_sequences(path: str | Path, *, tensor_key: str | None = None) -> list[SequenceSource]:
    """Find the sequences under ``path``, in natural-sort order of their names.

    * a tensor file (.pt/.npz/...) -> one sequence per leading index, named ``"00000"`` ...;
    * a video/GIF file -> one sequence named after the file stem;
    * a folder holding images -> one sequence (the folder itself);
    * otherwise a folder of sequences: each sub-folder holding images and each video file is one
      sequence (named by the sub-folder name / the file name); other entries are ignored.
      A sub-folder without images is still listed so that it is reported as an error, not
      silently dropped.
    """
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"data.path does not exist: {root}")
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix in TENSOR_EXTENSIONS:
            cache = _TensorFileCache(root, tensor_key)
            width = max(5, len(str(cache.count() - 1)))
            return [
                SequenceSource(f"{i:0{width}d}", "tensor", str(root), lambda i=i: cache(i))
                for i in range(cache.count())
            ]
        if suffix in VIDEO_EXTENSIONS:
            return [SequenceSource(root.stem, "video", str(root), lambda: read_video(root))]
        raise ValueError(f"unsupported file type {suffix!r}: {root}")
    if _has_images(root):
        return [SequenceSource(root.name, "frames", str(root), lambda: read_frame_folder(root))]
    sources = []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            sources.append(
                SequenceSource(entry.name, "frames", str(entry), lambda e=entry: read_frame_folder(e))
            )
        elif entry.suffix.lower() in VIDEO_EXTENSIONS:
            sources.append(SequenceSource(entry.name, "video", str(entry), lambda e=entry: read_video(e)))
    if not sources:
        raise ValueError(
            f"no sequences found in {root}: expected sub-folders of frames, video files "
            f"({', '.join(VIDEO_EXTENSIONS)}), images, or a tensor file"
        )
    return sources


# ---------------------------------------------------------------------------------------------
# Frame selection, range and size


def select_frames(views: torch.Tensor, *, stride: int = 1, start: int = 0, max_frames: int | None = None) -> torch.Tensor:
    """Every ``stride``-th frame from ``start``, at most ``max_frames`` of them."""
    if stride < 1:
        raise ValueError(f"frame stride must be >= 1, got {stride}")
    views = views[start::stride]
    return views[:max_frames] if max_frames is not None else views


def to_unit_range(views: torch.Tensor, value_range: str = "auto") -> torch.Tensor:
    """Any supported input -> float32 in [0, 1].

    ``value_range``: ``"uint8"`` (0..255), ``"01"``, ``"-11"``, or ``"auto"``: uint8 tensors are
    0..255; float tensors are [-1, 1] if any value is negative, else [0, 1] (values above 1 are an
    error in auto mode rather than a silent guess).
    """
    if value_range == "auto":
        if views.dtype == torch.uint8:
            value_range = "uint8"
        elif bool((views < 0).any()):
            value_range = "-11"
        else:
            if float(views.max()) > 1.0 + 1e-3:
                raise ValueError(
                    "float frames with values above 1: set data.value_range=uint8 (0..255) explicitly"
                )
            value_range = "01"
    if value_range == "uint8":
        out = views.float() / 255.0
    elif value_range == "01":
        out = views.float()
    elif value_range == "-11":
        out = (views.float() + 1.0) / 2.0
    else:
        raise ValueError(f"value_range must be auto, uint8, 01 or -11; got {value_range!r}")
    return out.clamp_(0.0, 1.0)


def _parse_size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"resize must be an int or [height, width], got {size}")
    return size  # type: ignore[return-value]


def resize_views(views: torch.Tensor, size: int | Sequence[int], filter: str = "bicubic") -> torch.Tensor:
    """Resize float ``(V, 3, H, W)`` in [0, 1] to ``size`` with a pinned, antialiased filter.

    ``bicubic``/``bilinear`` use ``torch.nn.functional.interpolate(..., antialias=True)`` (a
    proper low-pass when shrinking, like PIL); ``area`` is box averaging; ``nearest`` is for
    label-like data only.  Output clamped to [0, 1] (bicubic overshoots).
    """
    h, w = _parse_size(size)
    if tuple(views.shape[-2:]) == (h, w):
        return views
    if filter not in RESIZE_FILTERS:
        raise ValueError(f"resize filter must be one of {RESIZE_FILTERS}, got {filter!r}")
    kwargs: dict[str, Any] = {}
    if filter in ("bicubic", "bilinear"):
        kwargs = {"antialias": True, "align_corners": False}
    out = F.interpolate(views.float(), size=(h, w), mode=filter, **kwargs)
    return out.clamp_(0.0, 1.0)


def _round_to(v: int, m: int) -> int:
    return max(m, int(math.floor(v / m + 0.5)) * m)


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

    def invalid(h: int, w: int) -> bool:
        return bool(h % mh or w % multiple or min(h, w) < min_side)

    if resize is not None:
        h, w = _parse_size(resize)
        if invalid(h, w):
            raise FrameSizeError(
                f"resize {h}x{w} is invalid: height must be a multiple of {mh}, width of {multiple}, both >= {min_side}"
            )
        return resize_views(views, (h, w), filter)
    h, w = views.shape[-2:]
    if invalid(h, w):
        sh, sw = max(_round_to(h, mh), min_side), max(_round_to(w, multiple), min_side)
        raise FrameSizeError(
            f"frames are {h}x{w}; height must be a multiple of {mh}, width of {multiple}, both >= {min_side}. "
            f"Resize explicitly (antialiased, recorded with the results), e.g. data.resize=[{sh},{sw}]"
        )
    return views


def decoder_versions() -> dict[str, str | None]:
    """Versions of the decoders that produced the pixels (recorded with the results)."""
    out: dict[str, str | None] = {}
    try:
        import PIL

        out["pillow"] = PIL.__version__
    except ImportError:  # pragma: no cover
        out["pillow"] = None
    try:
        import av

        out["pyav"] = av.__version__
        out["ffmpeg"] = ".".join(str(v) for v in av.library_versions.get("libavcodec", ())) or None
    except (ImportError, AttributeError):  # pragma: no cover
        out["pyav"] = None
    return out


def iter_pairs(num_views: int, pairing: str = "consecutive", gap: int = 1) -> Iterator[tuple[int, int]]:
    """Frame index pairs: ``consecutive`` (i, i+gap) as in the paper, ``first`` (0, j), ``all`` i<j."""
    if pairing == "consecutive":
        for i in range(num_views - gap):
            yield i, i + gap
    elif pairing == "first":
        for j in range(1, num_views):
            yield 0, j
    elif pairing == "all":
        for i in range(num_views):
            for j in range(i + 1, num_views):
                yield i, j
    else:
        raise ValueError(f"pairing must be 'consecutive', 'first' or 'all', got {pairing!r}")
