"""Checkpoints inside a sequence: the windows of pairs already scored, so that an interrupted long sequence
resumes pair window by pair window instead of from zero.

One file per sequence in progress, ``<output.dir>/.partial/<sha256(name)[:16]>.jsonl``: a header line with the
key of everything the numbers depend on (the run's settings fingerprint, weights identity included, the
sequence's name, input fingerprint, selected frames, sizes and geometry fingerprint, and its pairs), then one
line per scored window (``start``, ``scores``, ``overlap``), each a single fsync'ed append (results.append_jsonl).
A partial file whose key differs is stale and deleted, never reused; windows are taken only while they are
contiguous from pair 0. When the sequence's record is written the file is removed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from met3r_metrics.cli import results as res
from met3r_metrics.cli.scoring import PairResults

__all__ = ["PARTIAL_DIR", "SequenceCheckpoint", "partial_path"]

PARTIAL_DIR = ".partial"


def _nan_to_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _none_to_nan(v: float | None) -> float:
    return float("nan") if v is None else float(v)


class SequenceCheckpoint:
    """The partial file of one sequence: :meth:`load` the windows of a matching earlier run, :meth:`append` each
    new window, :meth:`remove` once the sequence's record is written."""

    def __init__(self, out_dir: Path, name: str, key: dict[str, Any]) -> None:
        self.path = partial_path(out_dir, name)
        self.key = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        self.name = name
        self.stale = False  # an earlier partial file of other inputs / settings / weights was found and dropped

    def load(self, num_pairs: int) -> PairResults | None:
        """The windows already scored under this key (contiguous from pair 0), or None; a stale file is deleted."""
        lines = res.read_jsonl(self.path)
        if not lines:
            self._start()
            return None
        head = lines[0]
        if head.get("key") != self.key or head.get("sequence") != self.name:
            self.stale = True
            self.path.unlink(missing_ok=True)
            self._start()
            return None
        scores: list[float] = []
        overlap: list[float] = []
        kept = [head]
        for window in lines[1:]:
            if window.get("start") != len(scores) or len(window.get("scores", ())) != len(window.get("overlap", ())):
                break
            scores.extend(_none_to_nan(s) for s in window["scores"])
            overlap.extend(_none_to_nan(o) for o in window["overlap"])
            kept.append(window)
        if len(scores) > num_pairs:  # cannot happen under the same key; never trust it
            self.stale = True
            self.path.unlink(missing_ok=True)
            self._start()
            return None
        # rewritten with only the windows used (drops a torn last line), so later appends follow them
        res.atomic_write_text(self.path, "".join(json.dumps(x, separators=(",", ":")) + "\n" for x in kept))
        return PairResults(scores=scores, overlap=overlap) if scores else None

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        res.append_jsonl(self.path, {"sequence": self.name, "key": self.key})

    def append(self, start: int, scores: list[float], overlap: list[float]) -> None:
        """One newly scored window of pairs ``start ... start + len(scores) - 1``."""
        res.append_jsonl(self.path, {"start": start, "scores": [_nan_to_none(s) for s in scores],
                                     "overlap": [_nan_to_none(o) for o in overlap]})

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def partial_path(out_dir: Path, name: str) -> Path:
    """Where the partial file of sequence ``name`` lives in ``out_dir``."""
    return Path(out_dir) / PARTIAL_DIR / f"{hashlib.sha256(name.encode()).hexdigest()[:16]}.jsonl"
