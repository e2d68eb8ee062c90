"""report.html of met3r-eval runs on real images (scikit-image photographs, tiny networks), and its parts."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from report_data import IMAGES, evaluate, make_runs, tiny_overrides, write_pans

from met3r_metrics.report.images import colormap, png_bytes, renders_rgb


@pytest.fixture(scope="module")
def runs(golden_root, tmp_path_factory) -> dict[str, Path]:
    return make_runs(golden_root, tmp_path_factory.mktemp("report_runs"))


@pytest.fixture(scope="module")
def tiny(golden_root, tmp_path_factory) -> list[str]:
    return tiny_overrides(golden_root, tmp_path_factory.mktemp("report_weights"))


def _rows(html: str, table_id: str) -> list[str]:
    body = re.search(rf'<table class="sortable" id="{table_id}">.*?<tbody>(.*?)</tbody>', html, re.S).group(1)
    return re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)


def _pairs_csv(out: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((out / "pairs.csv").read_text())))


def test_report_of_a_real_image_run(runs):
    out = runs["clean"]
    html = (out / "report.html").read_text()
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "sequences.jsonl").read_text().splitlines()]
    lo, hi = summary["met3r_ci95"]
    assert f"MEt3R (official) = {summary['met3r']:.5f}" in html and f"95% CI [{lo:.5f}, {hi:.5f}]" in html
    assert "2000 resamples" in html  # how the interval was made, beside it
    # the sequence table: every record, in order, with its exact score for sorting, the error shown
    rows = _rows(html, "sequences")
    assert len(rows) == len(records) == len(IMAGES) + 1
    for row, rec in zip(rows, records):
        assert f"<td>{rec['sequence']}</td>" in row
        if rec["status"] == "ok":
            assert f'data-v="{float(rec["score"])!r}"' in row and "<svg" in row  # sparkline of its pairs
        else:
            assert "too short" in rec["error"] and "too short" in row and 'class=error' in html
    # the worst pairs: the 4 highest scores of pairs.csv, each with its frames, 2 renders, map and mask
    worst = sorted(_pairs_csv(out), key=lambda r: -float(r["score"]))[:4]
    shown = re.findall(r"<b>([^<]+)</b> frames (\d+) &rarr; (\d+): score ([0-9.]+).*?rescored now: ([0-9.]+)", html)
    assert [(s, int(i), int(j)) for s, i, j, *_ in shown] == [(r["sequence"], int(r["i"]), int(r["j"])) for r in worst]
    for (*_, score, rescored), r in zip(shown, worst):
        assert float(score) == pytest.approx(float(r["score"]), abs=1e-5)
        assert float(rescored) == pytest.approx(float(r["score"]), abs=1e-5)  # the pictures are of that pair
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', html)
    assert len(images) == 4 * 6 and all(src.startswith("data:image/png;base64,") for src, _ in images)
    assert {alt.split(" (")[0] for _, alt in images[:6]} >= {"score map", "overlap mask"}
    # self-contained: nothing is fetched from anywhere
    assert not re.search(r'(src|href)="(?!data:)', html)
    assert "<svg" in html and "metric.distance" in html


def test_report_flag_off_writes_no_report(runs, tiny, tmp_path):
    out = tmp_path / "out"
    evaluate(runs["clean"].parent / "data" / "clean", out, tiny, "output.report=false")
    assert (out / "summary.json").is_file() and not (out / "report.html").exists()


def test_report_is_rewritten_on_resume_with_the_new_scores(runs, tiny, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(runs["clean"].parent / "data" / "clean", data)
    out = tmp_path / "out"
    evaluate(data, out, tiny, "output.report_pairs=0")
    before = (out / "report.html").read_text()
    assert "output.report_pairs=0" in before  # says why there are no pictures
    # regenerate chelsea's frames (noisier): the resume recomputes it, and the report shows the new score
    write_pans(data, noise=60.0, names=("chelsea",))
    evaluate(data, out, tiny, "output.report_pairs=0")
    records = {r["sequence"]: r for r in map(json.loads, (out / "sequences.jsonl").read_text().splitlines())}
    after = (out / "report.html").read_text()
    new = f'data-v="{float(records["chelsea"]["score"])!r}"'
    assert new in after and new not in before
    (out / "report.html").unlink()  # a resume with nothing to do writes it again
    evaluate(data, out, tiny, "output.report_pairs=0")
    assert (out / "report.html").read_text() == after


def test_report_without_matplotlib(runs, tiny, tmp_path, monkeypatch):
    """The report draws its own charts: without matplotlib the PNG plots are skipped, report.html is complete."""
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = tmp_path / "out"
    evaluate(runs["clean"].parent / "data" / "clean", out, tiny, "output.report_pairs=1")
    assert not (out / "sequence_curves.png").exists()
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 4 and len(re.findall(r'<img src="data:image/png', html)) == 6


def test_png_encoder_is_read_back_exactly_by_pillow():
    from PIL import Image

    rgb = np.random.default_rng(0).integers(0, 256, (7, 13, 3), dtype=np.uint8)
    back = np.asarray(Image.open(io.BytesIO(png_bytes(rgb))).convert("RGB"))
    assert np.array_equal(back, rgb)
    with pytest.raises(ValueError, match=r"rgb: expected an \(H, W, 3\) uint8 array, got float64 \(2, 2\)"):
        png_bytes(np.zeros((2, 2)))


def test_colormap_greys_out_pixels_without_overlap():
    values = np.array([[0.0, 0.5, 1.0, 0.7]])
    valid = np.array([[True, True, True, False]])
    out = colormap(values, valid, 0.0, 1.0)
    assert out[0, 0].tolist() == [0, 0, 4] and out[0, 2].tolist() == [252, 253, 191]  # ramp ends
    assert out[0, 3].tolist() == [153, 153, 153]  # not covered: grey, never "consistent" dark
    assert out[0, 0].sum() < out[0, 1].sum() < out[0, 2].sum()  # brighter = less consistent


def test_feature_renders_become_pictures_with_uncovered_pixels_black():
    r = torch.randn(2, 16, 5, 6)
    r[0, :, 0, 0] = 0  # uncovered
    pics = renders_rgb(r)
    assert [p.shape for p in pics] == [(5, 6, 3)] * 2 and pics[0][0, 0].tolist() == [0, 0, 0]
    assert pics[1].std() > 0
    rgb = torch.rand(2, 3, 4, 4)
    assert np.array_equal(renders_rgb(rgb)[0], (rgb[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def test_front_door_renders_are_what_the_score_map_compares(golden_root, tmp_path):
    """score_views(return_renders=True): 1 - <a, b> / (|a| |b| + eps) of the two renders is the score map."""
    from met3r_metrics.functional import score_views
    from met3r_metrics.settings import resolve
    from met3r_metrics.testing import tiny_met3r_kwargs

    settings = resolve("official", **tiny_met3r_kwargs(golden_root, tmp_path))
    torch.manual_seed(0)
    views = torch.rand(1, 3, 3, 64, 64)
    out = score_views(views, settings, normalize=True, pairs=[(0, 1), (1, 2)], return_maps=True, return_renders=True)
    assert out.renders.shape[:3] == (1, 2, 2) and out.renders.shape[-2:] == out.score_maps.shape[-2:]
    a, b = out.renders[0, :, 0], out.renders[0, :, 1]  # (P, C, h, w)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + settings.cosine_eps)
    mask = out.overlap_masks[0].bool()
    assert torch.allclose((1 - cos)[mask], out.score_maps[0][mask], atol=1e-5)
    assert score_views(views, settings, normalize=True, pairs=[(0, 1)]).renders is None


def test_long_curves_are_thinned_but_keep_their_gaps_and_means():
    from met3r_metrics.report.charts import _thin, line_chart, sparkline

    values = [0.1] * 5000 + [None] * 3000 + [0.3] * 2000
    pts = _thin(values, 100)
    assert len(pts) == 100 and pts[0] == (49.5, pytest.approx(0.1)) and pts[-1][1] == pytest.approx(0.3)
    assert [y for _, y in pts[55:75]] == [None] * 20  # the no-overlap stretch stays a gap
    assert _thin([0.1, None, 0.2], 100) == [(0, 0.1), (1, None), (2, 0.2)]
    svg = line_chart({"long": values}, title="t", xlabel="x", ylabel="y")
    assert svg.count("<polyline") == 2 and len(svg) < 40_000
    assert len(sparkline(values)) < 6_000


def test_worst_pairs_are_the_least_consistent_for_either_direction():
    from met3r_metrics.report.worst_pairs import rank_worst_pairs

    recs = [{"sequence": "a", "status": "ok", "pairs": [[0, 1], [1, 2]], "pair_scores": [0.2, None], "overlap": [0.5, 0]},
            {"sequence": "b", "status": "ok", "pairs": [[0, 1], [1, 2]], "pair_scores": [0.5, 0.1], "overlap": [0.4, 0.6]},
            {"sequence": "c", "status": "error", "error": "too short"}]
    assert [(s, i, j) for s, i, j, *_ in rank_worst_pairs(recs, 2, False)] == [("b", 0, 1), ("a", 0, 1)]
    assert [(s, i, j) for s, i, j, *_ in rank_worst_pairs(recs, 2, True)] == [("b", 1, 2), ("a", 0, 1)]  # e.g. psnr
    assert len(rank_worst_pairs(recs, 10, False)) == 3  # NaN (no overlap) pairs are never "worst"


def test_a_run_without_any_score_still_gets_its_report(tiny, tmp_path):
    from PIL import Image

    (tmp_path / "d" / "lonely").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "d" / "lonely" / "0.png")
    summary = evaluate(tmp_path / "d", tmp_path / "out", tiny)
    assert summary["met3r"] is None
    html = (tmp_path / "out" / "report.html").read_text()
    assert "no sequence got a score" in html and "No pair got a score" in html and "too short" in html
