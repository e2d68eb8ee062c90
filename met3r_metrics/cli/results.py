"""Result files of ``met3r-eval``: crash-safe appends, resume, merge, summary statistics.

The per-sequence JSON-lines file is the single source of truth.  Each finished sequence is one
line written with a single ``write`` on an ``O_APPEND`` descriptor and ``fsync``-ed, so a run
killed at any moment (SIGKILL included) keeps every finished sequence and leaves at most one
partial trailing line, which :func:`repair_jsonl` truncates before the file is appended to again
and :func:`read_jsonl` ignores.  ``pairs.csv``, ``summary.json`` and the plots are derived from
the records at the end and written atomically (temp file + ``os.replace``).
"""

from __future__ import annotations

import csv
import io as _io
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from met3r_metrics.bootstrap import bootstrap_means

__all__ = [
    "append_jsonl",
    "repair_jsonl",
    "read_jsonl",
    "atomic_write_text",
    "merge_records",
    "pairs_csv_text",
    "summarize",
    "bootstrap_ci95",
    "CI95_METHOD",
]


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one record as one whole line, durably (single write + fsync)."""
    data = (json.dumps(record, allow_nan=True, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, data)
        while written < len(data):  # short writes are rare but legal
            written += os.write(fd, data[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def repair_jsonl(path: Path) -> int:
    """Truncate a partial trailing line left by a killed writer; returns the bytes removed.

    Only the file's owner (the process that will append to it) may call this.
    """
    if not path.exists():
        return 0
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb+") as fh:
        fh.seek(0)
        data = fh.read()
        if data.endswith(b"\n"):
            return 0
        keep = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
        fh.truncate(keep)
        fh.flush()
        os.fsync(fh.fileno())
    return size - keep


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Complete, parseable lines of ``path`` (a partial or corrupt line is skipped, not fatal)."""
    if not path.exists():
        return []
    records = []
    with open(path, "rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break  # partial trailing line of a killed writer
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new file, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def merge_records(
    records: Iterable[dict[str, Any]], order: Sequence[str], *, latest: Iterable[str] = ()
) -> list[dict[str, Any]]:
    """One record per sequence (an ``ok`` record beats an error; later beats earlier), in ``order``.

    For the names in ``latest`` (sequences recomputed because their inputs changed) the last record
    wins whatever its status: an old score of other inputs must never survive a failed recompute.
    Sequences not in ``order`` (e.g. removed from the data folder since) go last, by name.
    """
    latest = set(latest)
    best: dict[str, dict[str, Any]] = {}
    for rec in records:
        name = rec["sequence"]
        old = best.get(name)
        if old is None or name in latest or rec.get("status") == "ok" or old.get("status") != "ok":
            best[name] = rec
    rank = {name: k for k, name in enumerate(order)}
    return sorted(best.values(), key=lambda r: (rank.get(r["sequence"], len(rank)), r["sequence"]))


def _fmt(x: float) -> str:
    return "nan" if not math.isfinite(x) else repr(float(x))


def pairs_csv_text(records: Iterable[dict[str, Any]]) -> str:
    """``sequence,i,j,score,overlap,frame_i,frame_j`` for every scored pair (NaN score = zero overlap).

    ``i, j`` index the selected frames (after ``data.start`` / ``data.frame_stride`` / ``data.max_frames``);
    ``frame_i, frame_j`` are the stored frame numbers they are (empty for records without ``frame_indices``)."""
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["sequence", "i", "j", "score", "overlap", "frame_i", "frame_j"])
    for rec in records:
        if rec.get("status") != "ok":
            continue
        frames = rec.get("frame_indices")
        for (i, j), score, overlap in zip(rec["pairs"], rec["pair_scores"], rec["overlap"]):
            stored = [frames[i], frames[j]] if frames else ["", ""]
            writer.writerow([rec["sequence"], i, j, _fmt(_num(score)), _fmt(_num(overlap)), *stored])
    return buf.getvalue()


def _num(x: Any) -> float:
    return float("nan") if x is None else float(x)


#: How the 95 % intervals in summary.json are computed (recorded there as ``ci95_method``).
CI95_METHOD = "percentile bootstrap of the mean: 2000 resamples, torch.Generator seed 0 (inside the range of the values)"
_RESAMPLES = 2000


def bootstrap_ci95(values: Sequence[float], resamples: int = _RESAMPLES, seed: int = 0) -> list[float] | None:
    """95 % percentile-bootstrap interval of the mean of ``values`` (None for fewer than 2 values).

    Unlike a Student-t interval it never leaves the range of the values (a MEt3R mean cannot go below
    0), and with a fixed seed it is the same in every process, so 1- and N-process summaries agree.
    """
    n = len(values)
    if n < 2:
        return None
    means = bootstrap_means(values, resamples, seed)
    lo, hi = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return [lo, hi]


def _mean_std_ci(values: Sequence[float]) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0}
    mean = math.fsum(values) / n
    if n == 1:
        return {"mean": mean, "std": None, "ci95": None, "n": 1}
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return {"mean": mean, "std": std, "ci95": bootstrap_ci95(values), "n": n}


def summarize(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate per-sequence records the paper's way: mean of per-sequence means.

    Pairs without overlap (NaN) are excluded from every mean and counted; a sequence whose pairs
    all lack overlap has no score and is counted in ``num_sequences_without_score``.
    """
    ok = [r for r in records if r.get("status") == "ok"]
    errors = [r for r in records if r.get("status") != "ok"]
    seq_scores = [float(r["score"]) for r in ok if r.get("score") is not None and math.isfinite(r["score"])]
    pair_scores: list[float] = []
    overlaps: list[float] = []
    num_pairs = num_zero = 0
    for r in ok:
        for s, o in zip(r["pair_scores"], r["overlap"]):
            num_pairs += 1
            s = _num(s)
            if math.isfinite(s):
                pair_scores.append(s)
            else:
                num_zero += 1
            o = _num(o)
            if math.isfinite(o):
                overlaps.append(o)
    seq = _mean_std_ci(seq_scores)
    pair = _mean_std_ci(pair_scores)
    return {
        "met3r": seq["mean"],  # headline: mean over sequences of per-sequence means
        "met3r_std": seq["std"],  # std over sequences
        "met3r_ci95": seq["ci95"],  # 95% bootstrap CI of the mean over sequences (CI95_METHOD)
        "pair_mean": pair["mean"],
        "pair_std": pair["std"],
        "pair_ci95": pair["ci95"],  # treats pairs as independent (they are not within a sequence): narrower
        "ci95_method": CI95_METHOD,
        "mean_overlap": (math.fsum(overlaps) / len(overlaps)) if overlaps else None,
        "num_sequences": len(ok),
        "num_sequences_scored": len(seq_scores),
        "num_sequences_without_score": len(ok) - len(seq_scores),
        "num_pairs": num_pairs,
        "num_pairs_scored": len(pair_scores),
        "num_zero_overlap_pairs": num_zero,
        "num_errors": len(errors),
        "errors": [{"sequence": r["sequence"], "error": r.get("error", "")} for r in errors],
    }
