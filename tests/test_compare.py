"""met3r-compare on real-image runs (tiny networks): tables, statistics, the settings check, output safety."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from report_data import evaluate, make_runs, tiny_overrides

from met3r_metrics.cli.compare import main
from met3r_metrics.report.stats import bootstrap_interval, paired_interval

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(golden_root, tmp_path_factory) -> dict[str, Path]:
    return make_runs(golden_root, tmp_path_factory.mktemp("compare_runs"))


def _scores(run: Path) -> dict[str, float]:
    recs = [json.loads(line) for line in (run / "sequences.jsonl").read_text().splitlines()]
    return {r["sequence"]: r["score"] for r in recs if r["status"] == "ok" and r["score"] is not None}


def _compare(*args: str) -> tuple[int, str, str]:
    """The command as a user runs it (this checkout's code: python -m with PYTHONPATH)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "met3r_metrics.cli.compare", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_compare_three_methods(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    main([str(runs["clean"]), str(runs["noisy"]), str(runs["partial"]), f"output.dir={out}", "stats.resamples=3000",
          "stats.seed=5"])
    printed = capsys.readouterr().out
    assert "| clean |" in printed and "written:" in printed
    assert sorted(p.name for p in out.iterdir()) == ["compare.csv", "compare.html", "compare.json", "compare.md",
                                                     "compare.tex"]
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((out / "compare.csv").read_text()))}
    clean, noisy, partial = (_scores(runs[k]) for k in ("clean", "noisy", "partial"))
    for name, s in (("clean", clean), ("noisy", noisy), ("partial", partial)):
        iv = bootstrap_interval(list(s.values()), 3000, 5)
        r = rows[name]
        assert float(r["mean"]) == pytest.approx(sum(s.values()) / len(s), abs=1e-12)
        assert (float(r["ci_low"]), float(r["ci_high"])) == pytest.approx((iv.low, iv.high), abs=1e-12)
        assert int(r["sequences"]) == len(s) and (r["resamples"], r["seed"]) == ("3000", "5")
    assert (rows["clean"]["lacking"], rows["noisy"]["lacking"], rows["partial"]["lacking"]) == ("0", "0", "1")
    assert rows["clean"]["diff_vs_reference"] == ""  # the reference
    common = [n for n in clean if n in partial]
    assert len(common) == 2 and rows["partial"]["common_sequences"] == "2"
    d = paired_interval([partial[n] for n in common], [clean[n] for n in common], 3000, 5)
    assert float(rows["partial"]["diff_vs_reference"]) == pytest.approx(d.mean, abs=1e-12)
    assert float(rows["partial"]["diff_ci_low"]) == pytest.approx(d.low, abs=1e-12)
    # noise makes the pans less consistent on every sequence: the paired interval says so
    assert all(noisy[n] > clean[n] for n in clean)
    assert float(rows["noisy"]["diff_ci_low"]) > 0
    md = (out / "compare.md").read_text()
    assert "3000 resamples" in md and "seed 5" in md and "| partial |" in md
    tex = (out / "compare.tex").read_text()
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and tex.count(r"\\") == 4  # header + 3 methods
    record = json.loads((out / "compare.json").read_text())
    assert record["tool"] == "met3r-compare" and (record["resamples"], record["seed"]) == (3000, 5)
    largest = record["largest_differences"]["noisy"]
    gaps = [abs(x["noisy"] - x["clean"]) for x in largest]
    assert gaps == sorted(gaps, reverse=True) and len(largest) == 3
    html = (out / "compare.html").read_text()
    assert html.count("<circle") == 3 + 2  # one dot per common sequence, noisy and partial vs clean


def test_tex_escapes_method_names(runs, tmp_path):
    out = tmp_path / "cmp"
    main([str(runs["clean"]), str(runs["noisy"]), f"output.dir={out}", "names=[ours_v2,'base&50%']"])
    tex = (out / "compare.tex").read_text()
    assert r"ours\_v2" in tex and r"base\&50\%" in tex
    # with the default resamples and seed a method's interval is its summary.json's met3r_ci95
    rows = {r["method"]: r for r in csv.DictReader(io.StringIO((out / "compare.csv").read_text()))}
    for name, run in (("ours_v2", runs["clean"]), ("base&50%", runs["noisy"])):
        summary = json.loads((run / "summary.json").read_text())
        assert [float(rows[name]["ci_low"]), float(rows[name]["ci_high"])] == summary["met3r_ci95"]
        assert float(rows[name]["mean"]) == pytest.approx(summary["met3r"], abs=1e-12)


def test_different_settings_are_refused_naming_the_setting(runs, golden_root, tmp_path):
    tiny = tiny_overrides(golden_root, runs["clean"].parent / "weights")  # the same weight files as the runs
    sym = tmp_path / "symmetric"
    evaluate(runs["clean"].parent / "data" / "noisy", sym, tiny, "metric.symmetric=true", "output.report=false")
    out = tmp_path / "cmp"
    rc, stdout, stderr = _compare(str(runs["clean"]), str(sym), f"output.dir={out}")
    assert rc == 2 and not out.exists()
    line = stderr.strip()
    assert "\n" not in line and "settings.symmetric" in line and "clean: False" in line and "symmetric: True" in line
    assert "allow_different_settings=true" in line
    rc, stdout, stderr = _compare(str(runs["clean"]), str(sym), f"output.dir={out}", "allow_different_settings=true")
    assert rc == 0, stderr
    assert "WARNING" in (out / "compare.md").read_text() and "settings.symmetric" in (out / "compare.md").read_text()
    assert json.loads((out / "compare.json").read_text())["settings_differences"][0]["setting"] == "settings.symmetric"


def test_a_users_folder_is_never_written_into(runs, tmp_path):
    out = tmp_path / "paper"
    out.mkdir()
    (out / "compare.md").write_text("my own notes\n")
    rc, _, stderr = _compare(str(runs["clean"]), str(runs["noisy"]), f"output.dir={out}")
    assert rc == 2 and "output.dir" in stderr and "output.overwrite=true" in stderr
    assert (out / "compare.md").read_text() == "my own notes\n" and len(list(out.iterdir())) == 1
    # a folder met3r-compare wrote is updated in place
    mine = tmp_path / "mine"
    assert _compare(str(runs["clean"]), str(runs["noisy"]), f"output.dir={mine}")[0] == 0
    (mine / "extra.txt").write_text("kept")
    rc, _, stderr = _compare(str(runs["clean"]), str(runs["partial"]), f"output.dir={mine}")
    assert rc == 0, stderr
    assert "| partial |" in (mine / "compare.md").read_text() and (mine / "extra.txt").read_text() == "kept"
    rc, _, _ = _compare(str(runs["clean"]), str(runs["noisy"]), f"output.dir={out}", "output.overwrite=true")
    assert rc == 0 and "| noisy |" in (out / "compare.md").read_text()


@pytest.mark.parametrize("args,message", [
    (["{clean}"], "runs: expected at least 2 results folders"),
    (["{clean}", "{missing}"], "expected a met3r-eval results folder, got nothing"),
    (["{clean}", "{noisy}", "stats.resamples=0"], "stats.resamples: expected an int >= 1, got 0"),
    (["{clean}", "{noisy}", "names=[a]"], "names: expected one name per run (2), got 1"),
    (["{clean}", "{noisy}", "stats.resamples=abc"], "stats.resamples"),
    (["{clean}", "{noisy}", "no_such_key=1"], "no_such_key"),
    (["{clean}", "{clean}"], "names: expected a distinct name per run, got 'clean' twice"),
])
def test_bad_arguments_exit_2_with_one_line(runs, tmp_path, capsys, args, message):
    paths = {"clean": runs["clean"], "noisy": runs["noisy"], "missing": tmp_path / "nope"}
    with pytest.raises(SystemExit) as err:
        main([a.format(**paths) for a in args] + [f"output.dir={tmp_path / 'cmp'}"])
    assert err.value.code == 2
    stderr = capsys.readouterr().err
    assert message in stderr and stderr.count("\n") == 1 and stderr.startswith("met3r-compare: ")
    assert not (tmp_path / "cmp").exists()


def test_a_method_without_common_sequences_exits_1(runs, golden_root, tmp_path):
    from report_data import write_pans

    tiny = tiny_overrides(golden_root, runs["clean"].parent / "weights")
    other = tmp_path / "other"
    evaluate(write_pans(tmp_path / "d", names=("rocket",)), other, tiny, "output.report=false")
    rc, stdout, stderr = _compare(str(runs["clean"]), str(other), f"output.dir={tmp_path / 'cmp'}")
    assert rc == 1 and "none in common with clean" in stderr and (tmp_path / "cmp" / "compare.md").is_file()


def test_the_console_script_is_declared():
    import importlib
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, func = scripts["met3r-compare"].partition(":")
    assert getattr(importlib.import_module(module), func) is main
    dev = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    assert any(d.startswith("playwright") for d in dev)  # the browser tests' driver comes with [dev]
