"""A met3r-eval results folder, read back: summary, per-sequence records, the settings they depend on."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RunResults", "load_run", "RunFolderError"]


class RunFolderError(ValueError):
    """A folder is not a finished met3r-eval results folder; the message names the folder and the missing file."""


@dataclass
class RunResults:
    """One run: ``summary`` (summary.json), ``records`` (sequences.jsonl, one per sequence, input order),
    ``fingerprint`` (settings.json: what the numbers depend on) and a ``name`` (the folder's name)."""

    path: Path
    name: str
    summary: dict[str, Any]
    records: list[dict[str, Any]]
    fingerprint: dict[str, Any]

    @property
    def distance(self) -> str:
        return str(self.summary.get("settings", {}).get("distance", "cosine"))

    def sequence_scores(self) -> dict[str, float]:
        """Scored sequences only: name -> per-sequence score (errors and all-NaN sequences left out)."""
        return {r["sequence"]: float(r["score"]) for r in self.records
                if r.get("status") == "ok" and r.get("score") is not None and math.isfinite(float(r["score"]))}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path.parent}: expected a met3r-eval results folder, got no {path.name} "
                             f"(run met3r-eval to the end with output.dir={path.parent})") from None
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path}: expected JSON, got a file that does not parse ({err})") from None


def _read_records(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise RunFolderError(f"{path.parent}: expected a met3r-eval results folder, got no {path.name}")
    records = []
    for line in path.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a partial line of a killed writer: met3r-eval repairs it on resume
    return records


def load_run(path: str | Path, name: str | None = None) -> RunResults:
    """Read a finished results folder (``summary.json``, ``sequences.jsonl``, ``settings.json``).

    Raises:
        RunFolderError: a missing or unreadable file, named with the folder.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise RunFolderError(f"{path}: expected a met3r-eval results folder, got "
                             f"{'a file' if root.exists() else 'nothing (no such folder)'}")
    summary = _read_json(root / "summary.json")
    fingerprint = _read_json(root / "settings.json")
    records = _read_records(root / "sequences.jsonl")
    return RunResults(root, name or root.resolve().name, summary, records, fingerprint)
