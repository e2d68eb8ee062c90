"""Video readers: PyAV for mp4/webm/..., Pillow for animated GIFs, and the check that a video decodes to
the frames its container declares."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .decoders import _av, _hwc_to_chw, _pil
from .errors import TruncatedVideoError, VideoDecodeError
from .images import _stack_frames
from .paths import _broken_link_error, _is_broken_link


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
