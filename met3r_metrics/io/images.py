"""Image readers: one image file (8- and 16-bit, refusing float and 32-bit integer images) and a folder
of frames stacked into one sequence."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .decoders import _hwc_to_chw, _pil
from .paths import _broken_link_error, _frame_files, _is_broken_link
from .sizes import _check_one_size, _parse_size, resize_views

#: Pillow modes of 16-bit unsigned grayscale images (scaled by 65535).
_UINT16_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


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
