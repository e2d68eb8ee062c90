"""Proof that DataLoader work ran in worker processes: a picklable prepare_fn wrapper that appends the
process id and ``torch.utils.data.get_worker_info()`` id of each call to a log file (a side channel that
survives the worker). Importable by the forkserver workers (tests/ is on the sys.path they inherit)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


class RecordWorkers:
    """``prepare_fn(source)``, logging ``pid worker_id name`` (worker_id -1: not in a DataLoader worker)."""

    def __init__(self, prepare_fn: Any, log: Path) -> None:
        self.prepare_fn, self.log = prepare_fn, Path(log)

    def __call__(self, source: Any) -> Any:
        info = torch.utils.data.get_worker_info()
        with open(self.log, "a") as fh:  # one short line per call: appends from several workers stay whole
            fh.write(f"{os.getpid()} {info.id if info is not None else -1} {source.name}\n")
        return self.prepare_fn(source)


def calls(log: Path) -> list[tuple[int, int, str]]:
    """The logged ``(pid, worker_id, name)`` of every call."""
    return [(int(p), int(w), n) for p, w, n in (line.split(" ", 2) for line in Path(log).read_text().splitlines())]


def assert_ran_in_workers(log: Path, num_workers: int, names: set[str]) -> None:
    """Every item ran once, in a DataLoader worker process other than this one, and all workers took part."""
    seen = calls(log)
    assert sorted(n for _, _, n in seen) == sorted(names), seen
    assert all(pid != os.getpid() for pid, _, _ in seen), f"ran in the main process {os.getpid()}: {seen}"
    assert {w for _, w, _ in seen} == set(range(num_workers)), seen
    assert len({pid for pid, _, _ in seen}) == num_workers, seen


def patch_cli_preparer(monkeypatch: Any, log: Path) -> None:
    """met3r-eval's reader (cli.evaluate._preparer) wrapped in :class:`RecordWorkers`."""
    from met3r_metrics.cli import evaluate

    real = evaluate._preparer
    monkeypatch.setattr(evaluate, "_preparer", lambda data, settings: RecordWorkers(real(data, settings), log))
