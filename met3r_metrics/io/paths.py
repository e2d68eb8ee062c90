"""Files on disk: the extensions of each input kind, natural name order, broken symbolic links, the frame
files of a folder."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
#: GIFs are decoded with Pillow (every frame, composited to RGB); the rest with PyAV.
VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
TENSOR_EXTENSIONS = (".pt", ".pth", ".npz", ".npy")


def natural_key(name: str) -> list[Any]:
    """Sort key that orders digit runs numerically: ``f2`` < ``f10``; case-insensitive."""
    return [int(tok) if tok.isdigit() else tok.lower() for tok in re.split(r"(\d+)", name)]


def _broken_link_error(path: Path, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"{what} {path} is a broken symbolic link (-> {os.readlink(path)}): restore its target or remove it"
    )


def _is_broken_link(path: Path) -> bool:
    return path.is_symlink() and not path.exists()


def _frame_entries(folder: Path) -> list[Path]:
    """Image-named entries directly in ``folder`` (broken links included), natural-sorted. Hidden entries
    (``.preview.png``, macOS AppleDouble ``._0.png``) are not frames: a preview would add a pair, an
    AppleDouble file (resource fork, not an image) would fail the sequence."""
    entries = (
        p for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS and (p.is_file() or _is_broken_link(p))
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


#: Written by ``met3r-eval`` into every results folder it creates: the folder is never read as data.
RESULTS_MARKER = ".met3r_results"


def is_results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a ``met3r-eval`` results folder: it holds :data:`RESULTS_MARKER`, or (folders
    written before the marker existed) a ``settings.json`` in met3r-eval's format (keys ``settings``,
    ``data`` and ``aggregation``) next to ``sequences.jsonl`` or ``summary.json``."""
    folder = Path(folder)
    try:
        if (folder / RESULTS_MARKER).is_file():
            return True
        settings = folder / "settings.json"
        if not settings.is_file() or not ((folder / "sequences.jsonl").is_file() or (folder / "summary.json").is_file()):
            return False
        content = json.loads(settings.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(content, dict) and {"settings", "data", "aggregation"} <= set(content)
