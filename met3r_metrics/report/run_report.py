"""Write ``report.html`` into a results folder (met3r-eval calls this at the end of every run and resume)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from met3r_metrics.cli.results import atomic_write_text
from met3r_metrics.settings import DISTANCES, Settings

from .run_page import run_report_html
from .worst_pairs import ViewLoader, rank_worst_pairs, worst_pair_pictures

__all__ = ["write_run_report", "REPORT_NAME"]

log = logging.getLogger("met3r_metrics.report")
REPORT_NAME = "report.html"


def write_run_report(
    out_dir: str | Path, summary: dict[str, Any], records: Sequence[dict[str, Any]], *,
    settings: Settings | None = None, views_of: ViewLoader | None = None, scorer: Any = None,
    worst_pairs: int = 0, max_curves: int = 50, title: str | None = None,
) -> Path:
    """Write ``<out_dir>/report.html`` atomically; returns its path.

    Args:
        summary, records: the run's ``summary.json`` and ``sequences.jsonl`` contents.
        settings, views_of, scorer: what rescoring the ``worst_pairs`` least consistent pairs needs
            (``views_of(name) -> (views (V, 3, H, W) in [0, 1], KnownGeometry or None)``); without them
            the page says that the pictures are not there.
        max_curves: sequences drawn in the curve chart.
    """
    out_dir = Path(out_dir)
    pictures: list = []
    higher = DISTANCES.get(str(summary.get("settings", {}).get("distance", "cosine")), DISTANCES["cosine"]).higher_is_better
    if worst_pairs <= 0:
        note = "Pictures of the worst pairs are off (output.report_pairs=0)."
    elif not rank_worst_pairs(records, 1, higher):
        note = "No pair got a score, so there are no worst pairs to show."
    elif None in (settings, views_of, scorer):
        note = "Pictures of the worst pairs are made at the end of a met3r-eval run; this page was written without them."
    else:
        note = None
        try:
            pictures = worst_pair_pictures(records, worst_pairs, settings, views_of, scorer)
        except Exception as err:  # noqa: BLE001 - the numbers are written already; the pictures are extra
            log.warning("report: worst-pair pictures skipped: %s: %s", type(err).__name__, err)
            note = f"The worst pairs could not be rescored ({type(err).__name__}: {err}); the numbers above are complete."
    html = run_report_html(summary, records, title=title or f"MEt3R results: {out_dir.resolve().name}",
                           pictures=pictures, pictures_note=note, max_curves=max_curves)
    path = out_dir / REPORT_NAME
    atomic_write_text(path, html)
    return path
