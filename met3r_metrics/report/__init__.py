"""HTML reports of met3r-eval runs and comparisons of several runs (``met3r-compare``).

One job a module: :mod:`.load` reads a results folder, :mod:`.stats` has the bootstrap intervals,
:mod:`.images` / :mod:`.charts` draw (PNG data URIs, inline SVG: no matplotlib needed), :mod:`.html` is
the page shell, :mod:`.worst_pairs` rescores the worst pairs through the front door,
:mod:`.run_page` / :mod:`.run_report` make ``report.html``, :mod:`.comparison` / :mod:`.tables` /
:mod:`.compare_page` make the comparison outputs.
"""

from .load import RunFolderError, RunResults, load_run
from .run_report import REPORT_NAME, write_run_report
from .stats import Interval, bootstrap_interval, paired_interval

__all__ = ["RunFolderError", "RunResults", "load_run", "REPORT_NAME", "write_run_report", "Interval",
           "bootstrap_interval", "paired_interval"]
