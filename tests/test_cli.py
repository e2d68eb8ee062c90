"""met3r-eval end to end on CPU with tiny random-weight networks and generated sequences.

Covers: folders of PNG frames, GIF and mp4 videos, tensor files, errors recorded not fatal,
outputs (pairs.csv, sequences.jsonl, summary.json, plots), resume, a SIGKILL mid-run followed by a
resume, a 2-process gloo run (torch.distributed.run) merged into the single-process summary, and
the installed ``met3r-eval`` console script.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import hydra_value, torch_threads, write_gif, write_mp4, write_png_sequence

from met3r_metrics.cli.evaluate import compose_config, run

REPO = Path(__file__).resolve().parents[1]
NUM_OK = 4  # scorable sequences in the data fixture


@pytest.fixture(scope="module")
def tiny_kwargs(golden_root, tmp_path_factory) -> dict:
    """met3r() keyword arguments for tiny random-weight networks (64x64 inputs)."""
    from met3r_metrics.testing import tiny_met3r_kwargs

    return tiny_met3r_kwargs(golden_root, tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="module")
def tiny(tiny_kwargs) -> list[str]:
    """The same as CLI overrides (the real CLI, tiny networks), single-threaded for shared CI cores."""
    return [f"metric.{k}={hydra_value(v)}" for k, v in tiny_kwargs.items()] + [
        "runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """4 scorable sequences (frames, GIF, mp4), one too short, one corrupt video."""
    root = tmp_path_factory.mktemp("data") / "seqs"
    write_png_sequence(root / "seq_a", 11, seed=0)  # f10.png must sort after f9.png
    write_png_sequence(root / "seq_b", 3, seed=1)
    write_gif(root / "clip.gif", 4)
    write_mp4(root / "clip.mp4", 5)
    write_png_sequence(root / "too_short", 1, seed=3)
    (root / "broken.mp4").write_bytes(b"not a video")
    return root


@pytest.fixture(scope="module")
def single_run(tiny, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    run(compose_config([f"data.path={data_dir}", f"output.dir={out}", "metric.batch_size=3", "output.worst_pairs=2", *tiny]))
    return out


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


def _lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw == b"" or raw.endswith(b"\n"), "file ends in a partial line"
    return [json.loads(line) for line in raw.splitlines()]


def test_outputs_of_a_folder_run(single_run: Path):
    out = single_run
    for name in ("pairs.csv", "sequences.jsonl", "summary.json", "config.yaml", "settings.json",
                 "sequence_curves.png", "histogram.png", "worst_pairs.png", "run_info.json"):
        assert (out / name).is_file(), name
    config = (out / "config.yaml").read_text()  # the resolved config, command-line overrides included
    assert f"dir: {out}" in config and "batch_size: 3" in config and "worst_pairs: 2" in config and "???" not in config
    records = _lines(out / "sequences.jsonl")
    names = [r["sequence"] for r in records]
    assert names == ["broken.mp4", "clip.gif", "clip.mp4", "seq_a", "seq_b", "too_short"]  # natural order
    by = {r["sequence"]: r for r in records}
    assert by["broken.mp4"]["status"] == "error" and by["too_short"]["status"] == "error"
    assert "too short" in by["too_short"]["error"]
    assert by["seq_a"]["num_frames"] == 11 and len(by["seq_a"]["pairs"]) == 10
    assert by["seq_a"]["pairs"][:2] == [[0, 1], [1, 2]]
    assert by["clip.mp4"]["num_frames"] == 5 and by["clip.gif"]["num_frames"] == 4

    with open(out / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 + 2 + 3 + 4
    assert set(rows[0]) == {"sequence", "i", "j", "score", "overlap", "frame_i", "frame_j"}
    assert [(r["frame_i"], r["frame_j"]) for r in rows if r["sequence"] == "seq_a"][:2] == [("0", "1"), ("1", "2")]

    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_sequences"] == NUM_OK and summary["num_errors"] == 2 and summary["num_pairs"] == 19
    seq_scores = [r["score"] for r in records if r["status"] == "ok" and r["score"] is not None]
    assert summary["met3r"] == pytest.approx(sum(seq_scores) / len(seq_scores))
    assert summary["met3r_ci95"][0] <= summary["met3r"] <= summary["met3r_ci95"][1]
    assert summary["settings"]["variant"] == "official" and summary["settings"]["img_size"] is not None
    assert summary["data"]["resize"] is None and summary["settings"]["precision"] == "tf32"
    assert summary["batch_sizes_used"] == [3] and summary["settings"]["batch_size"] == 3
    assert summary["package_version"]
    assert summary["num_zero_overlap_pairs"] == sum(r["score"] == "nan" for r in rows)


def test_scores_equal_the_functional_metric(single_run: Path, tiny_kwargs, data_dir):
    """A sequence's CLI score is met3r() of its frames (consecutive pairs, mean)."""
    from met3r_metrics import io as mio
    from met3r_metrics.functional import met3r

    rec = {r["sequence"]: r for r in _lines(single_run / "sequences.jsonl")}["seq_b"]
    views = mio.read_frame_folder(data_dir / "seq_b")  # uint8, 0..255
    with torch_threads(1):  # shared CI cores
        expected = met3r(views[None], variant="official", **tiny_kwargs, return_details=True)
    assert rec["pair_scores"] == pytest.approx(expected.pair_scores[0].tolist(), abs=1e-6)
    assert rec["score"] == pytest.approx(float(expected.sequence_scores[0]), abs=1e-6)
    assert rec["overlap"] == pytest.approx(expected.overlap[0].tolist(), abs=1e-6)


def test_rerun_skips_finished_sequences(single_run: Path, tiny, data_dir):
    before = _lines(single_run / "sequences.jsonl")
    summary = run(compose_config([f"data.path={data_dir}", f"output.dir={single_run}", "metric.batch_size=3",
                                  "runtime.retry_errors=false", *tiny]))
    after = _lines(single_run / "sequences.jsonl")
    assert after == before  # nothing recomputed ("seconds" would differ)
    assert summary["num_sequences"] == NUM_OK


def test_changed_settings_are_refused(single_run: Path, tiny, data_dir):
    with pytest.raises(SystemExit, match="different settings"):
        run(compose_config([f"data.path={data_dir}", f"output.dir={single_run}", *tiny, "metric.symmetric=true"]))


def test_tensor_file_needs_explicit_resize(tiny, tmp_path):
    x = torch.rand(2, 3, 3, 40, 40)  # 40 is not a multiple of 16
    torch.save(x, tmp_path / "gen.pt")
    summary = run(compose_config([f"data.path={tmp_path / 'gen.pt'}", f"output.dir={tmp_path / 'a'}", "output.plots=false", *tiny]))
    assert summary["num_sequences"] == 0 and summary["num_errors"] == 2
    assert "data.resize=" in summary["errors"][0]["error"]
    summary = run(compose_config([f"data.path={tmp_path / 'gen.pt'}", f"output.dir={tmp_path / 'b'}", "output.plots=false",
                                  "data.resize=64", *tiny]))
    assert summary["num_sequences"] == 2 and summary["num_pairs"] == 4
    assert summary["data"]["resize"] == 64 and summary["data"]["resize_filter"] == "bicubic"
    recs = _lines(tmp_path / "b" / "sequences.jsonl")
    assert [r["sequence"] for r in recs] == ["00000", "00001"] and recs[0]["height"] == 64


def test_sigkill_midway_then_resume(tiny, data_dir, single_run, tmp_path):
    """Kill -9 after the first *scored* sequence: nothing finished is lost, no corrupt line.

    The first sequence in order (broken.mp4) is an error, which a resume retries; the kill waits for
    the second line (clip.gif, status ok), whose record (with its timing) must survive verbatim.
    """
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "met3r_metrics.cli.evaluate", f"data.path={data_dir}", f"output.dir={out}",
           "metric.batch_size=3", "output.plots=false", *tiny]
    proc = subprocess.Popen(cmd, env=_env(_MET3R_EVAL_SLEEP_AFTER_SEQUENCE="8"), cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    jsonl = out / "sequences.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (jsonl.exists() and jsonl.read_bytes().count(b"\n") >= 2):
        assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    kept = _lines(jsonl)
    assert len(kept) == 2 and not (out / "summary.json").exists()
    assert [r["status"] for r in kept] == ["error", "ok"] and kept[1]["sequence"] == "clip.gif"
    # what a kill in the middle of a write would leave: a partial trailing line
    with open(jsonl, "ab") as fh:
        fh.write(b'{"sequence":"seq_a","status":"ok","sco')

    done = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    records = _lines(jsonl)
    assert len(records) == 6
    assert kept[1] in records  # the finished sequence was kept, not recomputed ("seconds" would differ)
    # same numbers as an uninterrupted run
    expected = json.loads((single_run / "summary.json").read_text())
    got = json.loads((out / "summary.json").read_text())
    assert got["met3r"] == expected["met3r"] and got["num_pairs"] == expected["num_pairs"]


def test_two_processes_gloo_match_single(tiny, data_dir, single_run, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "met3r_metrics.cli.evaluate", f"data.path={data_dir}", f"output.dir={out}", "metric.batch_size=3",
           "output.worst_pairs=2", *tiny]
    done = subprocess.run(cmd, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert not list(out.glob("sequences.rank*.jsonl"))  # merged and removed
    assert json.loads((out / "run_info.json").read_text())["world_size"] == 2
    assert (out / "summary.json").read_text() == (single_run / "summary.json").read_text()
    assert (out / "pairs.csv").read_text() == (single_run / "pairs.csv").read_text()
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    assert strip(_lines(out / "sequences.jsonl")) == strip(_lines(single_run / "sequences.jsonl"))


def test_console_script_main_job_line(tiny, tmp_path):
    """The README line, through the installed entry point (falls back to python -m)."""
    seq = write_png_sequence(tmp_path / "one_sequence", 3)
    script = shutil.which("met3r-eval")
    exe = [script] if script else [sys.executable, "-c", "from met3r_metrics.cli.evaluate import main; main()"]
    done = subprocess.run([*exe, f"data.path={seq}", *tiny], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out,) = (tmp_path / "met3r_results").glob("one_sequence_official_*")  # default: data name, variant, digest
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_sequences"] == 1 and summary["num_pairs"] == 2
    assert "MEt3R (official, cosine, lower is better) =" in done.stdout


def test_config_groups_and_overrides():
    """The four groups compose, group choices and single values override; nothing runs."""
    from met3r_metrics.cli.config import metric_settings

    cfg = compose_config(["data.path=/x/seqs", "metric=paper", "metric.precision=bf16", "metric.batch_size=4",
                          "data.resize=[64,96]", "output.worst_pairs=3"])
    assert set(cfg) >= {"metric", "data", "runtime", "output"}
    assert cfg.metric.variant == "paper" and cfg.metric.pairing is None  # null: the variant's value
    assert cfg.metric.precision == "bf16" and cfg.metric.batch_size == 4
    assert list(cfg.data.resize) == [64, 96] and cfg.output.worst_pairs == 3
    assert cfg.output.dir is None  # default: met3r_results/<data name>_<variant>_<settings digest>
    s = metric_settings(dict(cfg.metric))
    assert s.variant == "paper" and s.symmetric and s.precision == "bf16" and s.overrides == ("batch_size", "precision")


def test_console_script_errors_leave_no_results_dir(tmp_path):
    """No data.path: a clear message and no (empty) results dir; missing weights: the met3r-download command."""
    script = shutil.which("met3r-eval")
    exe = [script] if script else [sys.executable, "-c", "from met3r_metrics.cli.evaluate import main; main()"]
    done = subprocess.run(exe, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "set data.path=" in done.stderr
    assert list(tmp_path.iterdir()) == []

    seq = write_png_sequence(tmp_path / "one_sequence", 2)
    caches = {"TORCH_HOME": str(tmp_path / "torch"), "HF_HUB_CACHE": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
              "HF_HOME": str(tmp_path / "hf_home")}
    done = subprocess.run([*exe, f"data.path={seq}", "runtime.device=cpu", "runtime.progress=false"],
                          env=_env(**caches), cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "met3r-download mast3r_512_catmlpdpt_metric" in done.stderr, done.stderr[-3000:]
    assert not list((tmp_path / "met3r_results").glob("*/summary.json"))


def test_curve_plot_labels_follow_the_pairing():
    from met3r_metrics.cli.run_outputs import _curve_labels

    assert _curve_labels("consecutive", 1)["xlabel"].endswith("(frame i -> i+1)")
    assert _curve_labels("consecutive", 3)["xlabel"].endswith("(frame i -> i+3)")
    assert "frame 0 -> k+1" in _curve_labels("first", 1)["xlabel"] and "first" in _curve_labels("first", 1)["title"]
    assert "i < j" in _curve_labels("all", 1)["title"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_node_cmds(out: Path, data_dir: Path, tiny: list[str], port: int) -> list[list[str]]:
    """Two torchrun launchers, one per "node", meeting on loopback (static rendezvous, gloo)."""
    return [[sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={rank}",
             "--master_addr=127.0.0.1", f"--master_port={port}", "-m", "met3r_metrics.cli.evaluate",
             f"data.path={data_dir}", f"output.dir={out}", "metric.batch_size=3", "output.worst_pairs=2", *tiny]
            for rank in (0, 1)]


def _worker_pid(out: Path, rank: int) -> int:
    """The met3r-eval worker of global ``rank`` writing to ``out`` (torchrun starts workers in their own session)."""
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if b"met3r_metrics.cli.evaluate" in cmd and f"output.dir={out}".encode() in cmd and f"RANK={rank}".encode() in env:
            return int(proc.name)
    raise AssertionError(f"no worker of rank {rank} found")


def test_two_nodes_match_single_process(tiny, data_dir, single_run, tmp_path):
    """--nnodes=2 --node_rank=0/1: sequences sharded by global rank, one summary equal to one process's."""
    out = tmp_path / "nodes"
    procs = [subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for cmd in _two_node_cmds(out, data_dir, tiny, _free_port())]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-2000:] for log in logs)
    assert json.loads((out / "run_info.json").read_text())["world_size"] == 2
    assert (out / "summary.json").read_text() == (single_run / "summary.json").read_text()
    assert (out / "pairs.csv").read_text() == (single_run / "pairs.csv").read_text()


def test_a_dead_node_fails_the_run_loudly_and_resume_completes_it(tiny, data_dir, single_run, tmp_path):
    out = tmp_path / "dead"
    cmds = _two_node_cmds(out, data_dir, tiny, _free_port())
    slow = _env(_MET3R_EVAL_SLEEP_AFTER_SEQUENCE="3")
    procs = [subprocess.Popen(cmd, env=slow, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True) for cmd in cmds]
    rank_file = out / "sequences.rank1.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (rank_file.exists() and rank_file.read_bytes().count(b"\n") >= 1):
        assert all(p.poll() is None for p in procs), [p.communicate()[0][-2000:] for p in procs]
        time.sleep(0.1)
    os.kill(_worker_pid(out, rank=1), signal.SIGKILL)  # rank 1 dies mid-run
    log0 = procs[0].communicate(timeout=240)[0]
    procs[1].communicate(timeout=60)
    assert procs[0].returncode != 0 and procs[1].returncode != 0, log0[-3000:]  # both launchers report failure
    assert "Connection closed by peer" in log0 or "rank 1" in log0, log0[-3000:]  # loudly, naming the cause
    assert not (out / "summary.json").exists()
    # resume in one process: finished sequences of both ranks are kept, the rest computed
    done = subprocess.run([sys.executable, "-m", "met3r_metrics.cli.evaluate", f"data.path={data_dir}", f"output.dir={out}",
                           "metric.batch_size=3", "output.worst_pairs=2", *tiny], env=_env(), cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["met3r"] == json.loads((single_run / "summary.json").read_text())["met3r"]


def test_non_ascii_paths_need_hydra_quotes_as_documented(tiny, tmp_path):
    """docs/cli.md: "data.path='/data/séquences'"; unquoted, hydra's grammar refuses it."""
    from hydra.errors import OverrideParseException

    seq = write_png_sequence(tmp_path / "séquences" / "générée 1", 2).parent
    with pytest.raises(OverrideParseException):
        compose_config([f"data.path={seq}"])
    out = tmp_path / "résultats"
    summary = run(compose_config([f"data.path='{seq}'", f"output.dir='{out}'", "output.plots=false", *tiny]))
    assert summary["num_sequences_scored"] == 1 and summary["data"]["path"] == str(seq.resolve())
    assert (out / "summary.json").is_file()


def test_exit_status_and_one_line_errors(tiny, tmp_path):
    """0: a score; 1: finished without any score; 2: the command was wrong (one line naming the setting)."""
    exe = [sys.executable, "-m", "met3r_metrics.cli.evaluate"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*exe, *args], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)

    bad = tmp_path / "bad"
    (bad / "broken.mp4").parent.mkdir()
    (bad / "broken.mp4").write_bytes(b"not a video")
    write_png_sequence(bad / "one_frame", 1)
    done = cli(f"data.path={bad}", f"output.dir={tmp_path / 'o1'}", *tiny)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "no sequence got a score (2 failed, 0 without overlap)" in done.stderr
    assert json.loads((tmp_path / "o1" / "summary.json").read_text())["met3r"] is None

    loop = tmp_path / "loop"
    loop.symlink_to(loop)  # unreadable: ELOOP
    cases = [
        ([f"data.path={tmp_path / 'missing'}"], "met3r-eval: data.path: "),
        ([f"data.path={loop}"], "met3r-eval: data.path: "),
        ([f"data.path={bad}", "metric.radius=inf"], "met3r-eval: metric.radius: expected a finite float in (0, 2], got inf"),
    ]
    if not torch.cuda.is_available():
        cases.append(([f"data.path={bad}", "runtime.device=cuda"], "met3r-eval: runtime.device: expected auto or cpu"))
    for args, message in cases:
        done = cli(*tiny, *args)  # later overrides win
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert done.stderr.strip().splitlines()[-1].startswith(message), (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr, (args, done.stderr[-2000:])
