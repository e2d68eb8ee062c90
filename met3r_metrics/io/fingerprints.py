"""Fingerprints: digests of what a finished result was computed from (file stats or content hashes),
the same in every process."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


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
