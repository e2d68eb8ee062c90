"""met3r-eval and its inputs, round 2 (issue 26): no stale score, no lost file, no silent unit mistake.

Each test pins one item of the issue: weights identity on resume (1), results folders never read as data (2),
a user's folder never overwritten (3), hidden files are not frames (5), resume inside a sequence (6), stored
frame numbers in pairs.csv (7), one-line command-line errors with exit status 2 (9), a directory as
feature_weights (10), Ctrl-C (11), the headline and the name of a single video (12). Tiny networks, CPU.
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
from conftest import write_mp4, write_png_sequence

from met3r_metrics.cli import scoring
from met3r_metrics.cli.evaluate import EvalInterrupted, compose_config, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_kwargs(golden_root, tmp_path_factory) -> dict:
    from met3r_metrics.testing import tiny_met3r_kwargs

    return tiny_met3r_kwargs(golden_root, tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="module")
def tiny(tiny_kwargs) -> list[str]:
    return [f"metric.{k}={v}" for k, v in tiny_kwargs.items()] + [
        "runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1", "output.plots=false"]


def _run(tiny: list[str], data: Path, out: Path | None, *extra: str) -> dict:
    where = [f"output.dir={out}"] if out is not None else []
    return run(compose_config([f"data.path={data}", *where, *tiny, *extra]))


def _records(out: Path) -> dict[str, dict]:
    return {r["sequence"]: r for r in map(json.loads, (out / "sequences.jsonl").read_text().splitlines())}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update({"OMP_NUM_THREADS": "1", **extra})
    return env


CLI = [sys.executable, "-m", "met3r_metrics.cli.evaluate"]  # this worktree's code (PYTHONPATH), not the installed one


# -- 1: weights identity ----------------------------------------------------------------------------------------


def _perturb_stereo(folder: Path) -> None:
    """Rewrite model.safetensors at the same path with one tensor changed (a re-converted / fine-tuned file)."""
    from safetensors.torch import load_file, save_file

    sd = load_file(str(folder / "model.safetensors"))
    key = sorted(k for k in sd if k.endswith("weight") and sd[k].dim() == 4)[0]  # the patch embedding
    sd[key] = sd[key] + 0.5 * torch.randn(sd[key].shape, generator=torch.Generator().manual_seed(0))
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_changed_weights_at_the_same_path_are_never_resumed(tiny, tiny_kwargs, tmp_path, monkeypatch):
    from met3r_metrics.scorer import clear_scorer_cache

    data = tmp_path / "seqs"
    write_png_sequence(data / "s0", 3, seed=0)
    write_png_sequence(data / "s1", 3, seed=1)
    stereo = tmp_path / "my_stereo"
    shutil.copytree(tiny_kwargs["backbone_weights"], stereo)
    mine = [*tiny, f"metric.backbone_weights={stereo}"]
    first = _run(mine, data, tmp_path / "o")
    digests = first["weights"]
    assert set(digests) == {"stereo", "features"} and all(len(d) == 64 for d in digests.values())
    assert json.loads((tmp_path / "o" / "settings.json").read_text())["weights"] == digests

    before = (tmp_path / "o" / "sequences.jsonl").read_text()
    _perturb_stereo(stereo)
    clear_scorer_cache()  # a new process would load the file again; so does this one now
    with pytest.raises(SystemExit, match=r"holds results computed with other weights \(weights.stereo differ"):
        _run(mine, data, tmp_path / "o")
    assert (tmp_path / "o" / "sequences.jsonl").read_text() == before  # the old results stay as they were

    monkeypatch.chdir(tmp_path)  # the default output.dir: a folder of its own for the new weights, re-scored
    clear_scorer_cache()
    again = _run(mine, data, None)
    assert again["weights"]["stereo"] != digests["stereo"] and again["weights"]["features"] == digests["features"]
    assert again["met3r"] != first["met3r"]
    folders = sorted((tmp_path / "met3r_results").iterdir())
    assert len(folders) == 1
    clear_scorer_cache()


def test_weights_digest_is_the_state_dict_not_the_file(tiny_kwargs):
    """The same tensors give the same digest (whatever file held them); one changed value changes it."""
    from safetensors.torch import load_file

    from met3r_metrics.weights.identity import state_dict_digest

    sd = load_file(str(Path(tiny_kwargs["backbone_weights"]) / "model.safetensors"))
    copy = {k: v.clone() for k, v in reversed(list(sd.items()))}
    assert state_dict_digest(copy) == state_dict_digest(sd)
    key = next(iter(sd))
    copy[key].view(-1)[0] += 1e-6
    assert state_dict_digest(copy) != state_dict_digest(sd)
    copy[key] = sd[key].to(torch.float64)
    assert state_dict_digest(copy) != state_dict_digest(sd)  # the dtype is part of the identity


# -- 2, 3: results folders and the user's folders ------------------------------------------------------------


def test_a_results_folder_inside_data_path_is_never_read_as_data(tiny, tmp_path, caplog):
    data = tmp_path / "seqs"
    write_png_sequence(data / "s0", 3, seed=0)
    write_png_sequence(data / "s1", 3, seed=1)
    out = data / "results"
    first = _run([*tiny[:-1], "output.plots=true"], data, out, "data.resize=64")
    assert (out / "histogram.png").is_file() and first["num_sequences"] == 2
    with caplog.at_level("WARNING"):
        second = _run([*tiny[:-1], "output.plots=true"], data, out, "data.resize=64")
    assert second["num_sequences"] == 2 and second["met3r"] == first["met3r"]
    assert "skipped 1 met3r-eval results folder(s), never read as data: results" in caplog.text
    with pytest.raises(SystemExit, match=r"data.path: .* is a met3r-eval results folder, not data"):
        _run(tiny, out, tmp_path / "o2")

    one = write_png_sequence(tmp_path / "one", 3)  # one sequence with its results inside: not a mixed layout
    _run(tiny, one, one / "res")
    assert _run(tiny, one, one / "res")["num_pairs"] == 2


def test_a_folder_with_files_we_did_not_write_is_refused(tiny, tmp_path):
    data = write_png_sequence(tmp_path / "one", 2)
    train = tmp_path / "train_run"
    train.mkdir()
    (train / "config.yaml").write_text("lr: 0.1\n")
    (train / "summary.json").write_text('{"loss": 0.3}\n')
    with pytest.raises(SystemExit, match=r"^met3r-eval: output.dir: expected a new or empty folder or a met3r-eval "
                                         r"results folder, got .*train_run', which holds files met3r-eval did not "
                                         r"write \(config.yaml, summary.json\)"):
        _run(tiny, data, train)
    assert (train / "config.yaml").read_text() == "lr: 0.1\n" and sorted(p.name for p in train.iterdir()) == [
        "config.yaml", "summary.json"]
    (tmp_path / "empty").mkdir()
    assert _run(tiny, data, tmp_path / "empty")["num_pairs"] == 1  # an empty folder is fine
    assert _run(tiny, data, train, "output.overwrite=true")["num_pairs"] == 1  # asked for: written
    assert json.loads((train / "summary.json").read_text())["num_pairs"] == 1


# -- 5: hidden files -------------------------------------------------------------------------------------------


def test_hidden_files_in_a_sequence_folder_are_not_frames(tiny, tmp_path):
    from met3r_metrics import io as mio

    seq = write_png_sequence(tmp_path / "seqs" / "s0", 3)
    shutil.copyfile(seq / "f0.png", seq / ".preview.png")
    (seq / "._f0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble resource fork")
    (src,) = mio.discover_sequences(tmp_path / "seqs")
    assert mio.prepare_views(src).views.shape[0] == 3
    summary = _run(tiny, tmp_path / "seqs", tmp_path / "o")
    assert summary["num_errors"] == 0 and summary["num_pairs"] == 2


# -- 6: checkpoints inside a sequence --------------------------------------------------------------------------


class _Calls:
    """Counts the front-door calls of the scoring loop; raises KeyboardInterrupt on call ``stop_at``."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.n, self.stop_at = 0, stop_at
        self.real = scoring.score_views

    def __call__(self, *args, **kwargs):
        self.n += 1
        if self.stop_at is not None and self.n == self.stop_at:
            raise KeyboardInterrupt
        return self.real(*args, **kwargs)


def test_an_interrupted_sequence_resumes_pair_window_by_window(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "PAIRS_PER_CALL", 2)  # 9 frames: 8 pairs, 4 windows of 2
    data = tmp_path / "seqs"
    write_png_sequence(data / "long", 9, seed=4)
    reference = _run(tiny, data, tmp_path / "ref")
    ref = _records(tmp_path / "ref")["long"]

    calls = _Calls(stop_at=3)  # killed while scoring the third window
    monkeypatch.setattr(scoring, "score_views", calls)
    with pytest.raises(EvalInterrupted, match=r"interrupted: 0 of 1 sequences kept in .* \(\+ 2 window\(s\) of pairs"):
        _run(tiny, data, tmp_path / "o")
    (partial,) = (tmp_path / "o" / ".partial").glob("*.jsonl")
    assert len(partial.read_text().splitlines()) == 1 + 2  # header + the two finished windows

    calls = _Calls()
    monkeypatch.setattr(scoring, "score_views", calls)
    resumed = _run(tiny, data, tmp_path / "o")
    assert calls.n == 2  # only the two windows that were lost
    rec = _records(tmp_path / "o")["long"]
    assert rec["pair_scores"] == ref["pair_scores"] and rec["overlap"] == ref["overlap"]  # bitwise
    assert resumed["met3r"] == reference["met3r"]
    assert not list((tmp_path / "o" / ".partial").glob("*.jsonl"))  # removed once the record is written


def test_a_stale_partial_sequence_is_never_reused(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "PAIRS_PER_CALL", 2)
    data = tmp_path / "seqs"
    write_png_sequence(data / "long", 9, seed=4)
    monkeypatch.setattr(scoring, "score_views", _Calls(stop_at=3))
    with pytest.raises(EvalInterrupted):
        _run(tiny, data, tmp_path / "o")
    time.sleep(0.01)
    write_png_sequence(data / "long", 9, seed=5)  # regenerated frames: the partial windows are of other inputs
    calls = _Calls()
    monkeypatch.setattr(scoring, "score_views", calls)
    _run(tiny, data, tmp_path / "o")
    assert calls.n == 4  # every window again
    monkeypatch.setattr(scoring, "score_views", calls.real)
    _run(tiny, data, tmp_path / "fresh")
    assert _records(tmp_path / "o")["long"]["pair_scores"] == _records(tmp_path / "fresh")["long"]["pair_scores"]

    # other frame selection (data.max_frames): other pairs, other key; refused at the folder level anyway
    monkeypatch.setattr(scoring, "score_views", _Calls(stop_at=2))
    with pytest.raises(EvalInterrupted):
        _run(tiny, data, tmp_path / "p")
    with pytest.raises(SystemExit, match="different settings"):
        _run(tiny, data, tmp_path / "p", "data.max_frames=5")


def test_the_checkpoint_key_covers_settings_weights_frames_and_pairs(tmp_path):
    """A partial file written under one key is dropped under any other (the unit under the CLI tests)."""
    import math

    from met3r_metrics.cli.partial import SequenceCheckpoint

    base = {"run": {"weights": {"stereo": "a"}}, "inputs": {"fingerprint": "stat:1"}, "pairs": [[0, 1], [1, 2]]}
    cp = SequenceCheckpoint(tmp_path, "seq", base)
    assert cp.load(2) is None
    cp.append(0, [0.25], [float("nan")])
    again = SequenceCheckpoint(tmp_path, "seq", base).load(2)
    assert again.scores == [0.25] and math.isnan(again.overlap[0])
    for change in ({"run": {"weights": {"stereo": "b"}}}, {"inputs": {"fingerprint": "stat:2"}}, {"pairs": [[0, 2]]}):
        other = SequenceCheckpoint(tmp_path, "seq", {**base, **change})
        assert other.load(2) is None and other.stale
        cp = SequenceCheckpoint(tmp_path, "seq", base)  # the file now holds the other key: base's is gone too
        assert cp.load(2) is None and cp.stale
        cp.append(0, [0.25], [0.5])


# -- 7: stored frame numbers ------------------------------------------------------------------------------------


def test_pairs_csv_holds_the_stored_frame_numbers(tiny, tmp_path):
    data = tmp_path / "seqs"
    write_png_sequence(data / "s0", 9, seed=0)
    _run(tiny, data, tmp_path / "o", "data.frame_stride=3", "data.start=1")
    with open(tmp_path / "o" / "pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["i"], r["j"], r["frame_i"], r["frame_j"]) for r in rows] == [("0", "1", "1", "4"), ("1", "2", "4", "7")]
    assert _records(tmp_path / "o")["s0"]["frame_indices"] == [1, 4, 7]


# -- 9, 10, 11, 12: the command line ------------------------------------------------------------------------------


def test_every_command_line_problem_is_one_line_naming_the_key_exit_2(tiny, tmp_path):
    seq = write_png_sequence(tmp_path / "one", 2)
    (tmp_path / "a_file").write_text("x")
    cases = [
        (["data.pathh=/x"], "met3r-eval: data.pathh: unknown setting; expected one of data.path, "),
        (["metric.bogus=1"], "met3r-eval: metric.bogus: unknown setting; expected one of metric.variant, "),
        (["metric.batch_size=abc"], "met3r-eval: metric.batch_size: Value 'abc' of type 'str' could not be converted"),
        ([f"data.path={seq}", f"output.dir={tmp_path / 'a_file' / 'out'}"], "met3r-eval: output.dir: expected a folder "
         "that can be created and written, got "),
        ([f"data.path={seq}", "output.dir=/proc/met3r_out"], "met3r-eval: output.dir: expected a folder that can be "
         "created and written, got '/proc/met3r_out'"),
        ([f"data.path={seq}", f"metric.feature_weights={tmp_path}"], "met3r-eval: metric.feature_weights: expected a "
         "checkpoint file (.ckpt/.pth/.pt/.bin/.safetensors), got "),
        # weights problems come before any progress bar is drawn: the one line is not inside the bars
        ([f"data.path={seq}", f"metric.feature_weights={tmp_path / 'missing.pth'}", "runtime.progress=true"],
         "met3r-eval: feature_weights: expected an existing checkpoint file, got "),
    ]
    for args, message in cases:
        done = subprocess.run([*CLI, *tiny, *args], env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(message), (args, done.stderr[-2000:])


def test_ctrl_c_prints_one_line_and_exits_130(tiny, tmp_path):
    data = tmp_path / "seqs"
    for k in range(3):
        write_png_sequence(data / f"s{k}", 2, seed=k)
    out = tmp_path / "o"
    proc = subprocess.Popen([*CLI, f"data.path={data}", f"output.dir={out}", *tiny],
                            env=_env(_MET3R_EVAL_SLEEP_AFTER_SEQUENCE="3"), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and not ((out / "sequences.jsonl").is_file() and (out / "sequences.jsonl").read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"met3r-eval: interrupted: 1 of 3 sequences kept in {out}; re-run the same command to resume")


def test_headline_names_the_distance_and_its_direction(capsys):
    from met3r_metrics import Settings
    from met3r_metrics.cli.evaluate import _report

    summary = {"met3r": 148.13, "met3r_ci95": None, "variant": "official", "num_sequences_scored": 1,
               "num_pairs_scored": 2, "num_zero_overlap_pairs": 0, "num_errors": 0,
               "settings": Settings.from_variant("official").replace(distance="psnr").to_dict()}
    _report(summary, Path("out"))
    assert capsys.readouterr().out.startswith("MEt3R (official, psnr, higher is better) = 148.13000")
    summary["settings"] = Settings.from_variant("official").to_dict()
    _report(summary, Path("out"))
    assert capsys.readouterr().out.startswith("MEt3R (official, cosine, lower is better) = 148.13000")


def test_a_video_is_named_by_its_file_name_alone_or_in_a_folder(tmp_path):
    from met3r_metrics import io as mio

    (tmp_path / "seqs").mkdir()
    video = write_mp4(tmp_path / "seqs" / "rocket.mp4", 3)
    assert [s.name for s in mio.discover_sequences(video)] == ["rocket.mp4"]
    assert [s.name for s in mio.discover_sequences(video.parent)] == ["rocket.mp4"]
