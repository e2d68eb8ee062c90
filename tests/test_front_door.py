"""One typed Settings and one front door (issue 12): every entry point records what ran, refuses what it
cannot run, and reaches the scorer through ``functional.score_views``. Tiny networks, CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import golden_path, write_png_sequence

from met3r_metrics import MEt3R, MEt3RScorer, Settings, met3r
from met3r_metrics.cli.evaluate import compose_config, run
from met3r_metrics.scorer import canonical_device, get_scorer
from met3r_metrics.settings import FIELDS
from met3r_metrics.testing import tiny_met3r_kwargs

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def kw(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return tiny_met3r_kwargs(golden_path(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def cli_tiny(kw: dict) -> list[str]:
    def value(v):
        return "null" if v is None else str(v)

    return [f"metric.{k}={value(v)}" for k, v in kw.items()] + [
        "runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1", "output.plots=false"]


@pytest.fixture(scope="module")
def three_frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_png_sequence(tmp_path_factory.mktemp("data") / "seqs" / "s0", 3).parent


def _seqs() -> torch.Tensor:
    from safetensors.torch import load_file

    x = load_file(str(golden_path("met3r", "inputs.safetensors")))["sq64"]  # (3, 2, 3, 64, 64)
    return torch.stack([x[0, 0], x[1, 1], x[2, 1]])[None]  # (1, 3, 3, 64, 64)


# 1 ------------------------------------------------------------------------------------------------
def test_cli_summary_records_the_pairing_that_ran(cli_tiny, three_frames, tmp_path):
    summary = run(compose_config([f"data.path={three_frames}", f"output.dir={tmp_path / 'o'}", "metric.pairing=all", *cli_tiny]))
    assert summary["settings"]["pairing"] == "all" and "pairing" in summary["settings"]["overrides"]
    assert summary["num_pairs"] == 3  # (0, 1), (0, 2), (1, 2)
    rec = json.loads((tmp_path / "o" / "sequences.jsonl").read_text().splitlines()[0])
    assert rec["pairs"] == [[0, 1], [0, 2], [1, 2]]
    assert Settings.from_dict(summary["settings"]).pairing == "all"  # the summary is the Settings, exactly


# 2 ------------------------------------------------------------------------------------------------
def test_backbone_must_name_the_network_its_weights_hold(kw, cli_tiny, three_frames, tmp_path):
    from met3r_metrics.models.dust3r import build_stereo_model
    from met3r_metrics.scorer import check_backbone_identity, stereo_identity
    from met3r_metrics.weights import CHECKPOINTS

    x = _seqs()[:, :2]
    # the paper variant's DUSt3R with MASt3R weights (and the reverse) is refused, never mislabelled
    with pytest.raises(ValueError, match=r"^backbone: expected the network backbone_weights=.* holds \(a custom mast3r "
                                         r"network\), got 'dust3r_512_dpt' \(variant='paper'\)"):
        MEt3R("paper", backbone_weights=kw["backbone_weights"], feature_weights=kw["feature_weights"],
              img_size=64, radius=0.04).update(x)
    dust = tiny_met3r_kwargs(golden_path(), Path(kw["feature_weights"]).parent, backbone="dust3r")
    with pytest.raises(ValueError, match=r"holds \(a custom dust3r network\), got 'mast3r_512_catmlpdpt_metric'"):
        met3r(x, backbone_weights=dust["backbone_weights"], feature_weights=kw["feature_weights"], img_size=64)
    # a registry architecture must be named exactly (built on the meta device: no weights needed)
    with torch.device("meta"):
        linear224 = build_stereo_model(CHECKPOINTS["dust3r_224_linear"].config)
    assert stereo_identity(linear224) == ("dust3r_224_linear", "dust3r")
    with pytest.raises(ValueError, match=r"holds \(dust3r_224_linear\), got 'dust3r_512_dpt'.*backbone='dust3r_224_linear'"):
        check_backbone_identity(Settings.paper(backbone_weights="ckpt.pth"), linear224)
    check_backbone_identity(Settings.paper(backbone="dust3r_224_linear", backbone_weights="ckpt.pth"), linear224)
    # the CLI says the same in one line, naming metric.backbone
    args = [a for a in cli_tiny if not a.startswith("metric.backbone=")]
    with pytest.raises(SystemExit, match=r"^met3r-eval: metric\.backbone: expected the network"):
        run(compose_config([f"data.path={three_frames}", f"output.dir={tmp_path / 'o'}", "metric=paper", *args]))


# 3 ------------------------------------------------------------------------------------------------
def test_cli_frame_size_rule_is_the_library_rule(cli_tiny, tmp_path):
    """48 px = 3 patch rows: refused for DINO features with any upsampler, before scoring."""
    data = write_png_sequence(tmp_path / "d" / "s0", 2, height=48, width=64).parent
    summary = run(compose_config([f"data.path={data}", f"output.dir={tmp_path / 'o'}", "metric.upsampler=bilinear", *cli_tiny]))
    err = summary["errors"][0]["error"]
    assert summary["num_sequences"] == 0 and "FrameSizeError" in err and "height must be a multiple of 32" in err
    with pytest.raises(SystemExit, match=r"data\.resize: expected H a multiple of 32 .*, got \[48, 64\]"):
        run(compose_config([f"data.path={data}", f"output.dir={tmp_path / 'p'}", "data.resize=[48,64]", *cli_tiny]))
    assert not (tmp_path / "p").exists()  # refused before anything was written


# 4 ------------------------------------------------------------------------------------------------
def test_explicit_variant_is_not_overridden_by_a_scorer(kw):
    dust = tiny_met3r_kwargs(golden_path(), Path(kw["feature_weights"]).parent, backbone="dust3r")
    paper_scorer = get_scorer(Settings.paper(**dust))
    x = _seqs()[:, :2]
    with pytest.raises(ValueError, match=r"^scorer: expected a scorer built for the requested networks, got one with "
                                         r"backbone='dust3r_512_dpt' \(requested 'mast3r_512_catmlpdpt_metric'\)"):
        met3r(x, "official", scorer=paper_scorer)
    # not given: the scorer's settings (the paper's symmetric score)
    det = met3r(x, scorer=paper_scorer, return_details=True)
    assert det.settings == paper_scorer.settings and det.settings.symmetric and det.forward_scores is not None


# 5 ------------------------------------------------------------------------------------------------
def test_cli_type_checks_and_validates_every_knob_before_reading(cli_tiny, three_frames, tmp_path):
    cfg = compose_config([f"data.path={three_frames}", "metric.precision=bf16", "metric.batch_size=16"])
    assert cfg.metric.precision == "bf16" and cfg.metric.batch_size == 16
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException):
        compose_config([f"data.path={three_frames}", "metric.batch_size=abc"])  # hydra's type check
    for bad, message in [
        ("metric.batch_size=0", "metric.batch_size: expected an int in [1, 65536], got 0"),
        ("metric.batch_size=-3", "metric.batch_size: expected an int in [1, 65536], got -3"),
        ("metric.radius=inf", "metric.radius: expected a finite float in (0, 2], got inf"),
        ("metric.points_per_pixel=1000000000", "metric.points_per_pixel: expected an int in [1, 150], got 1000000000"),
        ("metric.pairing=bogus", "metric.pairing: expected one of ('consecutive', 'all', 'first'), got 'bogus'"),
        ("metric.pair_gap=0", "metric.pair_gap: expected an int in [1, 1000000], got 0"),
        ("data.value_range=foo", "data.value_range: expected one of ('auto', 'uint8', '01', '-11'), got 'foo'"),
        ("data.frame_stride=0", "data.frame_stride: expected an int >= 1, got 0"),
        ("data.resize=abc", "data.resize: expected null, an int or [H, W], got 'abc'"),
    ]:
        out = tmp_path / bad.replace("=", "_")
        with pytest.raises(SystemExit) as err:
            run(compose_config([f"data.path={three_frames}", f"output.dir={out}", *cli_tiny, bad]))
        assert str(err.value.code) == f"met3r-eval: {message}", bad
        assert not out.exists(), bad  # nothing written: a corrected re-run is not locked out


# 6 ------------------------------------------------------------------------------------------------
def test_hydra_multirun_jobs_get_their_own_output_dirs(cli_tiny, three_frames, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    tiny = [a for a in cli_tiny if not a.startswith("metric.radius=")]
    cmd = [sys.executable, "-m", "met3r_metrics.cli.evaluate", "-m", f"data.path={three_frames}",
           "metric.radius=0.04,0.05", *tiny]
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    dirs = sorted((tmp_path / "met3r_results").glob("seqs_official_*"))
    assert len(dirs) == 2
    radii = sorted(json.loads((d / "summary.json").read_text())["settings"]["radius"] for d in dirs)
    assert radii == [0.04, 0.05]


# 7 ------------------------------------------------------------------------------------------------
def test_direction_and_bounds_follow_the_distance():
    from met3r_metrics.plotting import plot_pair_maps, plot_sequence_curves, score_label

    assert MEt3R.higher_is_better is False and MEt3R().plot_upper_bound == 2.0 and MEt3R().plot_lower_bound == 0.0
    for distance in ("psnr", "ssim"):
        m = MEt3R(distance=distance)
        assert m.higher_is_better is True and "higher is more consistent" in score_label(distance)
    assert MEt3R(distance="ssim").plot_lower_bound == -1.0 and MEt3R(distance="psnr").plot_upper_bound is None
    assert MEt3R(distance="mse").higher_is_better is False
    fig = plot_sequence_curves({"a": [20.0, 21.0]}, distance="psnr")
    assert "higher is more consistent" in fig.axes[0].get_ylabel() and "1 - cos" not in fig.axes[0].get_ylabel()
    maps = plot_pair_maps(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8), torch.rand(1, 8, 8), torch.ones(1, 8, 8),
                          distance="ssim")
    assert [a.get_ylabel() for a in maps.axes if a.get_label() == "<colorbar>"] == ["SSIM"]


# 8 ------------------------------------------------------------------------------------------------
def test_set_dtype_and_frozen_container(kw):
    m = MEt3R(**kw)
    m.update(_seqs())
    assert m.compute().dtype == torch.float32
    m.set_dtype(torch.float64)
    assert m.compute().dtype == torch.float64 and m.compute_details()["met3r"].dtype == torch.float64
    scorer = MEt3RScorer.from_settings(Settings.official(**kw))
    assert not scorer.training and not any(mod.training for mod in scorer.modules())


# 9 ------------------------------------------------------------------------------------------------
def test_one_cache_entry_per_gpu(monkeypatch, kw):
    import met3r_metrics.networks as networks_mod

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"^device: expected an available device, got 'cuda' \(torch.cuda"):
            canonical_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert canonical_device("cuda") == canonical_device("cuda:0") == torch.device("cuda", 0)
    built = []
    monkeypatch.setattr(MEt3RScorer, "from_settings", classmethod(lambda cls, s, d: built.append(d) or object()))
    monkeypatch.setattr(networks_mod, "_SCORERS", {})
    s = Settings.official(**kw)
    assert get_scorer(s, "cuda") is get_scorer(s, "cuda:0") and built == [torch.device("cuda", 0)]


# 10 -----------------------------------------------------------------------------------------------
def test_metric_collection_does_not_merge_differently_configured_met3r(kw):
    from torchmetrics import MetricCollection

    seqs = _seqs()
    collection = MetricCollection({"consecutive": MEt3R(**kw), "first": MEt3R(**kw, pairing="first")})
    collection.update(seqs[:, :2])  # V = 2: both pairings score the same single pair -> equal states
    collection.update(seqs)  # V = 3: (0, 1), (1, 2) vs (0, 1), (0, 2)
    got = {k: float(v) for k, v in collection.compute().items()}
    for name, pairing in (("consecutive", "consecutive"), ("first", "first")):
        alone = MEt3R(**kw, pairing=pairing)
        alone.update(seqs[:, :2])
        alone.update(seqs)
        assert got[name] == pytest.approx(float(alone.compute()), abs=1e-7), name
    assert got["consecutive"] != pytest.approx(got["first"], abs=1e-6)


# the knob list is written once ----------------------------------------------------------------------
def test_docs_name_every_settings_field():
    metric_md = (REPO / "docs" / "metric.md").read_text()
    cli_md = (REPO / "docs" / "cli.md").read_text()
    for name in FIELDS:
        assert f"`{name}`" in metric_md, f"docs/metric.md does not name the setting {name}"
        if name != "variant":
            assert f"metric.{name}" in cli_md, f"docs/cli.md does not name metric.{name}"
    # every default in the docs table equals the dataclass default
    defaults = {f.name: f.default for f in dataclasses.fields(Settings)}
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]*)` \|", metric_md, flags=re.M))
    assert set(rows) == set(FIELDS)
    for name, text in rows.items():
        assert text == json.dumps(defaults[name]), (name, text)


def test_entry_points_share_one_path(kw, monkeypatch):
    """met3r, MEt3R.update and the CLI scoring all reach the scorer through functional.score_views."""
    import met3r_metrics.cli.scoring as cli_scoring
    import met3r_metrics.functional as functional
    import met3r_metrics.metric as metric_mod

    calls = []
    real = functional.score_views

    def spy(*args, **kwargs):
        calls.append(kwargs.get("normalize"))
        return real(*args, **kwargs)

    for mod in (functional, metric_mod, cli_scoring):
        monkeypatch.setattr(mod, "score_views", spy)
    x = _seqs()
    functional.met3r(x, **kw)
    m = MEt3R(**kw)
    m.update(x)
    s = m.settings
    cli_scoring.score_sequence((x[0] + 1) / 2, s.pairs(3), s, get_scorer(s))
    assert calls == [False, False, True]


def test_non_square_warning_names_both_spellings(kw):
    x = torch.rand(1, 2, 3, 64, 96) * 2 - 1
    with pytest.warns(UserWarning, match=r"pass img_size=None \(met3r-eval: metric.img_size=input\)"):
        met3r(x, **kw)
