"""The errors io raises for refused inputs (each a ``ValueError``, so callers can catch them together)."""

from __future__ import annotations


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
