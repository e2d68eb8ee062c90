"""Discovery: ``data.path`` (a folder of sequences, one sequence, a video or a tensor file) -> named
:class:`SequenceSource` s, in natural order."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .errors import MixedLayoutError
from .paths import IMAGE_EXTENSIONS, TENSOR_EXTENSIONS, VIDEO_EXTENSIONS, _is_broken_link, is_results_folder, natural_key
from .sources import SequenceSource
from .tensor_files import _TensorFile
from .value_ranges import _check_setting, _refuse_float_range_for_pixels

log = logging.getLogger(__package__)  # "met3r_metrics.io", the logger's name before io became a package


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
    * a video/GIF file -> one sequence named after the file (``clip.mp4``, as in a folder of sequences);
    * a folder holding images and nothing that is a sequence -> one sequence (the folder itself);
    * a folder of sequences: each sub-folder and each video file is one sequence (named by the
      sub-folder name / the file name).  A sub-folder without images is still listed so that it
      is reported as an error, not silently dropped; so is a broken symbolic link without a
      suffix.  Hidden entries and met3r-eval results folders (:func:`is_results_folder`) are skipped; other files (notes, metadata, tensor files) are
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
            return [_video_source(root, root.name, value_range)]  # the file name, as inside a folder of sequences
        hint = " (one image is not a sequence: point data.path at its folder)" if suffix in IMAGE_EXTENSIONS else ""
        raise ValueError(f"data.path: unsupported file type {suffix!r}: {root}{hint}")

    if is_results_folder(root):
        raise ValueError(f"data.path: {root} is a met3r-eval results folder, not data: point data.path at the "
                         "generated sequences")
    images, seqs, ignored, results = [], [], [], []
    for entry in sorted(root.iterdir(), key=lambda p: natural_key(p.name)):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and is_results_folder(entry):
            results.append(entry.name)  # our own outputs (plots are PNGs): never a sequence
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
    if results:
        log.warning("%s: skipped %d met3r-eval results folder(s), never read as data: %s", root, len(results),
                    _preview(results))
    if ignored:
        log.warning("%s: ignored %d entries that are neither sequences nor frames: %s", root, len(ignored), _preview(ignored))
    _refuse_float_range_for_pixels(root, value_range)
    if images:
        return [_frames_source(root, value_range)]
    sources = []
    for kind, entry in seqs:
        if kind == "frames":
            sources.append(_frames_source(entry, value_range))
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
