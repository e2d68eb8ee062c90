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

The package, one job a module (each name below is importable from ``met3r_metrics.io``):

* ``errors``: the refusals (:class:`FrameSizeError`, :class:`ValueRangeError`, ...);
* ``paths``: extensions, natural order, broken links, the frame files of a folder;
* ``decoders``: Pillow and PyAV, imported lazily, and :func:`decoder_versions`;
* ``images``, ``videos``, ``tensor_files``: the readers;
* ``value_ranges``: :func:`decide_value_range` and the mapping to [0, 1];
* ``sizes``, ``selection``: the size rule and pinned resize; the frame selection;
* ``fingerprints``: digests of the inputs;
* ``sources``, ``discovery``: :class:`SequenceSource` and :func:`discover_sequences`;
* ``geometry_files``: the ``data.geometry`` files;
* ``prepare``: :func:`prepare_views` and :class:`PreparedViews`;
* ``dataset``: :class:`SequenceDataset`, :func:`iter_prepared`, :class:`SequenceError`.
"""

from __future__ import annotations

from .dataset import SequenceDataset, SequenceError, iter_prepared
from .decoders import decoder_versions
from .discovery import discover_sequences
from .errors import (
    FrameSizeError,
    MixedLayoutError,
    TruncatedVideoError,
    UnsafeTensorFileError,
    ValueRangeError,
    VideoDecodeError,
)
from .geometry_files import geometry_fingerprint, geometry_path, read_geometry_file
from .images import read_frame_folder, read_image
from .paths import IMAGE_EXTENSIONS, RESULTS_MARKER, TENSOR_EXTENSIONS, VIDEO_EXTENSIONS, is_results_folder, natural_key
from .prepare import PreparedViews, prepare_views
from .selection import select_frames
from .sizes import RESIZE_FILTERS, check_or_resize, resize_views
from .sources import SequenceSource
from .tensor_files import read_tensor_file
from .value_ranges import RANGE_TOLERANCE, VALUE_RANGES, decide_value_range
from .videos import read_video

# RESIZE_FILTERS and RANGE_TOLERANCE are importable from here too (cli.config reads RESIZE_FILTERS), outside __all__ as before.

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
    "RESULTS_MARKER",
    "is_results_folder",
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
