"""met3r-eval end to end on the inputs that used to give a silently wrong score (issue 13): changed
inputs on resume, per-file value ranges, mixed layouts, 16-bit frames, truncated videos, broken links,
mixed frame sizes, and decoding in DataLoader workers. Real files written by the tests; tiny networks."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import worker_probe
from conftest import write_mp4, write_png_sequence
from worker_probe import patch_cli_preparer

from met3r_metrics.cli.evaluate import compose_config, run


@pytest.fixture(scope="module")
def tiny(golden_root, tmp_path_factory) -> list[str]:
    from met3r_metrics.testing import tiny_met3r_kwargs

    kw = tiny_met3r_kwargs(golden_root, tmp_path_factory.mktemp("tiny_weights"))
    return [f"metric.{k}={v}" for k, v in kw.items()] + [
        "runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1", "output.plots=false"]


def _run(tiny: list[str], data: Path, out: Path, *extra: str) -> dict:
    return run(compose_config([f"data.path={data}", f"output.dir={out}", *tiny, *extra]))


def _records(out: Path) -> dict[str, dict]:
    return {r["sequence"]: r for r in map(json.loads, (out / "sequences.jsonl").read_text().splitlines())}


def test_resume_recomputes_sequences_whose_inputs_changed(tiny, tmp_path):
    """Regenerated samples in the same folder: the re-run equals a fresh run, not the old summary."""
    data = tmp_path / "seqs"
    for k in range(4):
        write_png_sequence(data / f"s{k}", 5, seed=k)
    out = tmp_path / "out"
    first = _run(tiny, data, out)
    assert first["num_pairs"] == 16
    time.sleep(0.01)  # a new mtime even on coarse clocks
    shutil.rmtree(data / "s1")
    write_png_sequence(data / "s1", 5, seed=11)  # replaced frames (same names and sizes)
    (data / "s2" / "f4.png").unlink()  # one frame fewer
    again = _run(tiny, data, out)
    fresh = _run(tiny, data, tmp_path / "fresh")
    assert again["num_pairs"] == fresh["num_pairs"] == 15
    assert again["met3r"] == pytest.approx(fresh["met3r"], abs=1e-7) and again["met3r"] != first["met3r"]
    recs = _records(out)
    assert recs["s2"]["num_frames"] == 4 and recs["s1"]["fingerprint"] == _records(tmp_path / "fresh")["s1"]["fingerprint"]
    # removing a sequence drops it from the results; unchanged ones are kept verbatim
    shutil.rmtree(data / "s3")
    third = _run(tiny, data, out)
    assert third["num_sequences"] == 3 and "s3" not in _records(out)
    assert _records(out)["s0"] == recs["s0"]


def test_tensor_file_range_is_decided_once_per_file(tiny, tmp_path):
    """A [-1, 1] file whose second sequence has no negative value (a white suit): read as [-1, 1] too."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 3, 64, 64, generator=g) * 2 - 1
    x[1] = x[1].abs()  # no negative value in sequence 1
    torch.save(x, tmp_path / "gen.pt")
    summary = _run(tiny, tmp_path / "gen.pt", tmp_path / "o")
    assert summary["data"]["value_range_resolved"]["value_range"] == "-11"
    assert {r["value_range"] for r in _records(tmp_path / "o").values()} == {"-11"}
    from met3r_metrics import met3r

    kw = {a.split("=", 1)[0][7:]: a.split("=", 1)[1] for a in tiny if a.startswith("metric.")}
    kw["img_size"], kw["radius"] = int(kw["img_size"]), float(kw["radius"])
    expected = met3r(x[1:], **kw)  # [-1, 1], the default convention
    assert _records(tmp_path / "o")["00001"]["score"] == pytest.approx(float(expected[0]), abs=1e-5)


def test_mixed_layout_is_refused_in_one_line(tiny, tmp_path):
    data = tmp_path / "seqs"
    for k in range(3):
        write_png_sequence(data / f"s{k}", 3, seed=k)
    write_png_sequence(data, 2, seed=9)  # two loose images next to the sequence folders
    with pytest.raises(SystemExit, match=r"^met3r-eval: data.path: .*loose image"):
        _run(tiny, data, tmp_path / "o")


def test_16bit_frames_score_like_their_8bit_originals(tiny, tmp_path):
    from PIL import Image

    eight = write_png_sequence(tmp_path / "d8" / "s", 3)
    sixteen = tmp_path / "d16" / "s"
    sixteen.mkdir(parents=True)
    for f in sorted(eight.iterdir()):
        gray = np.asarray(Image.open(f).convert("L"), dtype=np.uint16) * 257  # exact 16-bit version
        Image.fromarray(gray).save(sixteen / f.name)
        Image.fromarray((gray // 257).astype(np.uint8)).convert("RGB").save(f)  # the same grey, 8 bit
    a = _run(tiny, eight.parent, tmp_path / "o8")
    b = _run(tiny, sixteen.parent, tmp_path / "o16")
    assert _records(tmp_path / "o16")["s"]["value_range"] == "uint16"
    assert b["met3r"] == pytest.approx(a["met3r"], abs=1e-5)  # not "perfectly consistent" white frames


def test_truncated_video_and_broken_link_are_errors_not_scores(tiny, tmp_path):
    data = tmp_path / "seqs"
    full = write_mp4(tmp_path / "full.mkv", 20)
    raw = full.read_bytes()
    data.mkdir()
    (data / "cut.mkv").write_bytes(raw[: int(0.85 * len(raw))])
    seq = write_png_sequence(data / "linked", 4)
    (seq / "f2.png").unlink()
    (seq / "f2.png").symlink_to(tmp_path / "nowhere.png")
    write_png_sequence(data / "good", 3)
    summary = _run(tiny, data, tmp_path / "o")
    recs = _records(tmp_path / "o")
    assert recs["good"]["status"] == "ok" and summary["num_sequences_scored"] == 1
    assert recs["cut.mkv"]["status"] == "error" and "of the 20 frames" in recs["cut.mkv"]["error"]
    assert recs["linked"]["status"] == "error" and "f2.png" in recs["linked"]["error"]


def test_frames_of_different_sizes_with_resize(tiny, tmp_path):
    seq = write_png_sequence(tmp_path / "d" / "s", 3)
    write_png_sequence(tmp_path / "big", 1, height=96, width=96)
    os.replace(tmp_path / "big" / "f0.png", seq / "f1.png")
    no = _run(tiny, seq.parent, tmp_path / "o1")
    assert no["num_sequences"] == 0 and "data.resize" in no["errors"][0]["error"]
    yes = _run(tiny, seq.parent, tmp_path / "o2", "data.resize=64")
    assert yes["num_sequences_scored"] == 1 and _records(tmp_path / "o2")["s"]["resized"] is True


def test_dataloader_workers_give_the_same_records(tiny, tmp_path, monkeypatch):
    data = tmp_path / "seqs"
    for k in range(3):
        write_png_sequence(data / f"s{k}", 3, seed=k)
    (data / "broken.mp4").write_bytes(b"not a video")
    patch_cli_preparer(monkeypatch, tmp_path / "calls.log")
    # output.report_pairs=0: the report's worst-pair pictures would read sequences again after the run
    _run(tiny, data, tmp_path / "w0", "runtime.num_workers=0", "output.report_pairs=0")
    main = worker_probe.calls(tmp_path / "calls.log")  # no workers: every sequence read here
    assert len(main) == 4 and {(pid, w) for pid, w, _ in main} == {(os.getpid(), -1)}
    (tmp_path / "calls.log").unlink()
    _run(tiny, data, tmp_path / "w2", "runtime.num_workers=2", "output.report_pairs=0")
    worker_probe.assert_ran_in_workers(tmp_path / "calls.log", 2, {n for _, _, n in main})  # really in 2 workers
    strip = lambda r: {k: v for k, v in r.items() if k != "seconds"}  # noqa: E731
    assert {k: strip(v) for k, v in _records(tmp_path / "w0").items()} == {k: strip(v) for k, v in _records(tmp_path / "w2").items()}
    assert (tmp_path / "w0" / "pairs.csv").read_text() == (tmp_path / "w2" / "pairs.csv").read_text()
