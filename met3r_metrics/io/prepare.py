"""Preparing one sequence for the metric: select, read, map to [0, 1], resize or check the size, attach
known geometry; :class:`PreparedViews` records what the numbers depend on."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .errors import ValueRangeError
from .fingerprints import _check_fingerprint_mode, _frames_fingerprint
from .geometry_files import geometry_fingerprint, geometry_path, read_geometry_file
from .images import _read_image
from .paths import _broken_link_error, _frame_files, _is_broken_link
from .selection import _selected_indices
from .sizes import RESIZE_FILTERS, _check_one_size, _check_resize_target, check_or_resize, resize_views
from .sources import SequenceSource
from .value_ranges import _to_unit, decide_value_range
from .videos import _decode_video


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
    intrinsics_units: str = "pixels",
) -> PreparedViews:
    """Read ``source`` into what the metric takes: ``(V, 3, H, W)`` float32 in [0, 1], one valid size.

    With ``geometry`` (``data.geometry``, a pattern, see :func:`geometry_path`) the sequence's geometry
    file is fingerprinted, read and checked against the stored frames, and the kept frames' cameras
    become :attr:`PreparedViews.geometry` (refused together with ``resize``: the file's depth and
    intrinsics are those of the stored frames). ``intrinsics_units`` (``data.intrinsics``): ``pixels`` or
    ``normalized`` (by the image size), see :meth:`~met3r_metrics.KnownGeometry.from_depth`.

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
        from ..known_geometry import KnownGeometry

        arrays = read_geometry_file(geo_path, raw.num_stored, (int(views.shape[-2]), int(views.shape[-1])))
        idx = torch.tensor(raw.indices, dtype=torch.long)
        try:
            known = KnownGeometry.from_depth(
                *(arrays[k][idx][None] for k in ("depth", "intrinsics", "cam_to_world")),
                valid=arrays["valid"][idx][None] if "valid" in arrays else None,
                intrinsics_units=intrinsics_units,
            )
        except ValueError as err:
            raise ValueError(f"geometry file {geo_path}: {str(err).replace('intrinsics_units=', 'data.intrinsics=')}") from None
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
