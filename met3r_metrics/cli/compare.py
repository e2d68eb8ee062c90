"""``met3r-compare RUN_DIR RUN_DIR ... [key=value ...]``: several met3r-eval runs side by side.

Writes ``compare.md``, ``compare.csv``, ``compare.tex`` (booktabs), ``compare.html`` and ``compare.json``
(the machine-readable record, also the mark that says the folder holds our files) to ``output.dir``,
and prints the Markdown table. The first run is the reference of the paired differences.

Settings are hydra-style overrides on a structured config (as met3r-eval's): ``output.dir=DIR``,
``output.overwrite=true``, ``allow_different_settings=true``, ``names=[a,b]``, ``stats.resamples=10000``,
``stats.seed=1``, ``largest=20``. Exit status: 0 written; 1 written, but a method has no scored sequence
or shares none with the reference; 2 nothing written (a bad argument, a folder that is not a results
folder, runs of different settings, an output folder holding other files).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

__all__ = ["CompareConfig", "CompareOutputConfig", "CompareStatsConfig", "compare", "main", "OUTPUT_FILES"]

OUTPUT_FILES = ("compare.md", "compare.csv", "compare.tex", "compare.html", "compare.json")
_TOOL = "met3r-compare"


@dataclass
class CompareStatsConfig:
    """The bootstrap: resample count, generator seed, coverage (recorded in every output)."""

    resamples: int = 2000
    seed: int = 0
    level: float = 0.95


@dataclass
class CompareOutputConfig:
    """Where the comparison goes; a non-empty folder that met3r-compare did not write is refused."""

    dir: str = "met3r_compare"
    overwrite: bool = False  # true: write into a folder holding other files (ours are replaced, none deleted)


@dataclass
class CompareConfig:
    """The whole ``met3r-compare`` configuration; ``runs`` also come as positional arguments."""

    runs: list[str] = field(default_factory=list)  # results folders of met3r-eval; the first is the reference
    names: Optional[list[str]] = None  # method names (default: the folders' names)
    allow_different_settings: bool = False  # compare runs whose settings differ (the differences are recorded)
    largest: int = 10  # sequences listed where two methods differ most
    stats: CompareStatsConfig = field(default_factory=CompareStatsConfig)
    output: CompareOutputConfig = field(default_factory=CompareOutputConfig)


class CompareError(ValueError):
    """A problem with the command (exit 2); the message names the argument."""


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CompareError(f"{name}: expected an int >= {low}, got {value!r}")


def _validate(conf: dict[str, Any]) -> None:
    if len(conf["runs"]) < 2:
        raise CompareError(f"runs: expected at least 2 results folders (met3r-compare RUN_DIR RUN_DIR ...), "
                           f"got {len(conf['runs'])}")
    if conf["names"] is not None and len(conf["names"]) != len(conf["runs"]):
        raise CompareError(f"names: expected one name per run ({len(conf['runs'])}), got {len(conf['names'])}")
    _check_int("stats.resamples", conf["stats"]["resamples"], 1)
    _check_int("stats.seed", conf["stats"]["seed"], 0)
    _check_int("largest", conf["largest"], 0)
    level = conf["stats"]["level"]
    if not (isinstance(level, (int, float)) and 0 < level < 1):
        raise CompareError(f"stats.level: expected a number in (0, 1), got {level!r}")


def _check_output_dir(out: Path, overwrite: bool) -> None:
    """Never write over a user's files: a non-empty folder must be one met3r-compare wrote (compare.json)."""
    if out.exists() and not out.is_dir():
        raise CompareError(f"output.dir: expected a folder, got a file {out}")
    if not out.is_dir() or overwrite or not any(out.iterdir()):
        return
    try:
        ours = json.loads((out / "compare.json").read_text()).get("tool") == _TOOL
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise CompareError(f"output.dir: expected an empty folder or an earlier met3r-compare output, got {out} "
                           f"holding other files (choose another output.dir, or output.overwrite=true to write "
                           f"{', '.join(OUTPUT_FILES)} into it)")


def _record(c: Any, conf: dict[str, Any]) -> dict[str, Any]:
    from met3r_metrics.report.tables import footnote, table_rows

    return {"tool": _TOOL, "runs": c.paths, "reference": c.methods[0].name, "rows": table_rows(c),
            "resamples": c.resamples, "seed": c.seed, "level": c.level, "distance": c.distance,
            "num_sequences": c.num_sequences, "settings_differences": [{"setting": k, "values": v} for k, v in c.differences],
            "largest_differences": {p.name: [{"sequence": n, p.reference: a, p.name: b} for n, a, b in p.largest]
                                    for p in c.paired},
            "method": footnote(c), "config": conf}


def compare(conf: dict[str, Any]) -> tuple[Any, Path]:
    """Run a comparison with a plain config dict (CompareConfig's fields); returns (Comparison, output dir).

    Raises:
        CompareError: a bad argument, folder, or output folder; SettingsDiffer: different settings.
    """
    from met3r_metrics.cli.results import atomic_write_text
    from met3r_metrics.report import load_run
    from met3r_metrics.report.compare_page import compare_html
    from met3r_metrics.report.comparison import SettingsDiffer, compare_runs
    from met3r_metrics.report.load import RunFolderError
    from met3r_metrics.report.tables import csv_table, latex_table, markdown_table

    _validate(conf)
    out = Path(str(conf["output"]["dir"])).expanduser()
    _check_output_dir(out, bool(conf["output"]["overwrite"]))
    names = conf["names"] or [None] * len(conf["runs"])
    try:
        runs = [load_run(p, n) for p, n in zip(conf["runs"], names)]
    except RunFolderError as err:
        raise CompareError(f"runs: {err}") from None
    st = conf["stats"]
    try:
        c = compare_runs(runs, allow_different_settings=bool(conf["allow_different_settings"]),
                         resamples=int(st["resamples"]), seed=int(st["seed"]), level=float(st["level"]),
                         largest=int(conf["largest"]))
    except SettingsDiffer:
        raise
    except ValueError as err:  # too few runs, two runs of one name
        raise CompareError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    texts = {"compare.md": markdown_table(c), "compare.csv": csv_table(c), "compare.tex": latex_table(c),
             "compare.html": compare_html(c, runs),
             "compare.json": json.dumps(_record(c, conf), indent=2, default=str) + "\n"}
    for name, text in texts.items():
        atomic_write_text(out / name, text)
    return c, out


def _split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Positional results folders vs ``key=value`` overrides (a folder whose name holds '=' goes in runs=[...])."""
    runs = [a for a in argv if "=" not in a]
    return runs, [a for a in argv if "=" in a]


def compose(overrides: list[str]) -> dict[str, Any]:
    """The config ``met3r-compare <overrides>`` runs with (hydra's override grammar and type checks)."""
    from hydra import compose as hydra_compose
    from hydra import initialize
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="met3r_compare", node=CompareConfig)
    with initialize(version_base="1.3", config_path=None):
        cfg = hydra_compose("met3r_compare", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``met3r-compare``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    runs, overrides = _split_argv(argv)
    unknown = [a for a in runs if a.startswith("-")]
    try:
        if unknown:
            raise CompareError(f"{unknown[0]}: expected a results folder or key=value, got an option")
        try:
            conf = compose(overrides)
        except Exception as err:  # hydra's grammar / type errors: one line, naming the key
            raise CompareError(str(err).strip().splitlines()[0]) from None
        conf["runs"] = list(conf["runs"]) + runs
        c, out = compare(conf)
    except (CompareError, ValueError) as err:
        print(f"met3r-compare: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    from met3r_metrics.report.tables import markdown_table

    print(markdown_table(c), end="")
    print(f"written: {', '.join(str(out / n) for n in OUTPUT_FILES)}", flush=True)
    missing = [m.name for m in c.methods if m.interval.n == 0] + [p.name for p in c.paired if p.interval.n == 0]
    if missing:
        print(f"met3r-compare: no score to compare for {', '.join(sorted(set(missing)))} (no scored sequence, or "
              f"none in common with {c.methods[0].name})", file=sys.stderr, flush=True)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
