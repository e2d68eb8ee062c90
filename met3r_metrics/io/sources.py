"""SequenceSource: one discovered sequence (frame folder, video, or one sequence of a tensor file),
read lazily, with its fingerprint."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .fingerprints import _check_fingerprint_mode, _digest, _file_sha256, _frames_fingerprint, _stat_entry
from .images import read_frame_folder
from .paths import _broken_link_error, _frame_files, _is_broken_link
from .tensor_files import _TensorFile
from .videos import read_video


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
