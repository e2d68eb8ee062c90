"""Several runs side by side: the settings check, sequences matched by name, intervals and paired differences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from met3r_metrics.settings import DISTANCES

from .load import RunResults
from .stats import LEVEL, RESAMPLES, SEED, Interval, bootstrap_interval, paired_interval

__all__ = ["MethodRow", "PairedRow", "Comparison", "settings_differences", "compare_runs", "SettingsDiffer"]

#: recorded but not part of the check: where the samples are (each method has its own), derived lists,
#: and decoder library versions (they decode the same files to the same pixels)
_NOT_COMPARED = ("data.path", "data.decoders", "settings.overrides")


class SettingsDiffer(ValueError):
    """The runs were made with different settings; the message names the first differing one."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_differences(runs: Sequence[RunResults]) -> list[tuple[str, list[Any]]]:
    """Settings (dotted keys of settings.json) whose values are not the same in every run: (key, values per run)."""
    flat = [_flatten(r.fingerprint) for r in runs]
    keys = sorted(set().union(*flat))
    diffs = []
    for key in keys:
        if any(key == n or key.startswith(n + ".") for n in _NOT_COMPARED):
            continue
        values = [f.get(key, "<missing>") for f in flat]
        if any(v != values[0] for v in values[1:]):
            diffs.append((key, values))
    return diffs


@dataclass
class MethodRow:
    """One run: its mean over its scored sequences with the interval, and what it lacks."""

    name: str
    interval: Interval
    lacking: int  # sequences scored by some other run but not by this one


@dataclass
class PairedRow:
    """``name`` minus ``reference`` on the sequences both scored, with the paired interval."""

    name: str
    reference: str
    interval: Interval
    # (sequence, reference score, this run's score), largest |difference| first
    largest: list[tuple[str, float, float]] = field(default_factory=list)
    points: list[tuple[str, float, float]] = field(default_factory=list)


@dataclass
class Comparison:
    """Everything met3r-compare writes: method rows, paired rows against the reference (the first run)."""

    methods: list[MethodRow]
    paired: list[PairedRow]
    distance: str
    differences: list[tuple[str, list[Any]]]
    num_sequences: int  # sequences scored by at least one run
    resamples: int
    seed: int
    level: float
    paths: list[str]

    @property
    def higher_is_better(self) -> bool:
        return DISTANCES.get(self.distance, DISTANCES["cosine"]).higher_is_better


def compare_runs(
    runs: Sequence[RunResults], *, allow_different_settings: bool = False, resamples: int = RESAMPLES,
    seed: int = SEED, level: float = LEVEL, largest: int = 10,
) -> Comparison:
    """Compare ``runs`` (the first is the reference of the paired differences).

    Raises:
        SettingsDiffer: the runs' settings differ and ``allow_different_settings`` is False.
        ValueError: fewer than 2 runs, two runs of one name.
    """
    if len(runs) < 2:
        raise ValueError(f"runs: expected at least 2 results folders, got {len(runs)}")
    names = [r.name for r in runs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"names: expected a distinct name per run, got {dup[0]!r} twice (set names=[...])")
    diffs = settings_differences(runs)
    if diffs and not allow_different_settings:
        key, values = diffs[0]
        shown = ", ".join(f"{n}: {v!r}" for n, v in zip(names, values))
        more = f" (and {len(diffs) - 1} more)" if len(diffs) > 1 else ""
        raise SettingsDiffer(f"runs differ in setting {key} ({shown}){more}; numbers made with different settings "
                             f"are not comparable (allow_different_settings=true compares them anyway)")
    scores = [r.sequence_scores() for r in runs]
    union = set().union(*scores)
    methods = [MethodRow(r.name, bootstrap_interval(list(s.values()), resamples, seed, level), len(union - set(s)))
               for r, s in zip(runs, scores)]
    ref, ref_scores = runs[0], scores[0]
    paired = []
    for run, s in zip(runs[1:], scores[1:]):
        common = [name for name in ref_scores if name in s]  # the reference's order
        pts = [(n, ref_scores[n], s[n]) for n in common]
        iv = paired_interval([p[2] for p in pts], [p[1] for p in pts], resamples, seed, level)
        top = sorted(pts, key=lambda p: -abs(p[2] - p[1]))[:largest]
        paired.append(PairedRow(run.name, ref.name, iv, top, pts))
    distances = {r.distance for r in runs}
    return Comparison(methods, paired, runs[0].distance if len(distances) == 1 else "cosine", diffs, len(union),
                      resamples, seed, level, [str(r.path) for r in runs])

