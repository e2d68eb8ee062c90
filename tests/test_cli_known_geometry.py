"""met3r-eval with known cameras (issue 16): a per-sequence .npz beside each sequence (data.geometry).

The plane scene of tests/known_geometry_scenes.py written as PNG frames: with its true geometry and an
RGB distance no network is built, and the score is 0 with overlap 0.75.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from known_geometry_scenes import DEPTH, H, W, plane_cameras, plane_views
from worker_probe import assert_ran_in_workers, patch_cli_preparer

from met3r_metrics.cli.evaluate import compose_config, default_output_dir, run
from met3r_metrics.cli import config as mconf

BASE = ["runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1", "output.plots=false",
        "metric.distance=rmse", "metric.radius=0.01", "metric.img_size=input"]
GEO = "data.geometry='{name}.npz'"  # hydra needs the quotes around braces


def _write_sequence(root: Path, name: str, num_views: int = 3, seed: int = 0, world=None) -> Path:
    from PIL import Image

    folder = root / name
    folder.mkdir(parents=True)
    views = ((plane_views(num_views, seed=seed)[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    for t, frame in enumerate(views):
        Image.fromarray(frame.permute(1, 2, 0).numpy()).save(folder / f"f{t}.png")
    _write_geometry(root / f"{name}.npz", num_views, world)
    return folder


def _write_geometry(path: Path, num_views: int, world=None, **changes) -> None:
    k, poses = plane_cameras(num_views, world=world)
    arrays = {"depth": np.full((num_views, H, W), DEPTH, dtype=np.float32), "intrinsics": k[0].numpy(),
              "cam_to_world": poses[0].numpy(), **changes}
    np.savez(path, **{key: v for key, v in arrays.items() if v is not None})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "seqs"
    _write_sequence(root, "plane_a", seed=0)
    _write_sequence(root, "plane_b", seed=1)
    return root


def _run(data: Path, out: Path, *extra: str):
    return run(compose_config([f"data.path={data}", f"output.dir={out}", *BASE, *extra]))


def test_geometry_files_score_the_plane_exactly(data: Path, tmp_path: Path):
    summary = _run(data, tmp_path / "o", GEO)
    assert summary["num_sequences_scored"] == 2 and summary["num_pairs"] == 4
    assert summary["met3r"] == 0.0
    assert summary["settings"]["geometry"] == "given" and summary["settings"]["focal_source"] == "intrinsics"
    assert summary["data"]["geometry"] == "{name}.npz"
    recs = [json.loads(line) for line in (tmp_path / "o" / "sequences.jsonl").read_text().splitlines()]
    assert [r["overlap"] for r in recs] == [[0.75, 0.75], [0.75, 0.75]]
    assert recs[0]["geometry_file"] == str(data / "plane_a.npz") and recs[0]["geometry_fingerprint"].startswith("stat:")


def test_frame_selection_applies_to_the_geometry(data: Path, tmp_path: Path):
    summary = _run(data, tmp_path / "o", GEO, "data.frame_stride=2")  # frames 0 and 2: a 32-px shift
    recs = [json.loads(line) for line in (tmp_path / "o" / "sequences.jsonl").read_text().splitlines()]
    assert summary["met3r"] == 0.0 and recs[0]["overlap"] == [0.5]


def test_a_network_geometry_result_is_never_reused_for_given_geometry(data: Path, tmp_path: Path):
    cfg = lambda *extra: compose_config([f"data.path={data}", *BASE, *extra])  # noqa: E731
    with_geo, without = cfg(GEO), cfg()
    from omegaconf import OmegaConf

    plain = lambda c: OmegaConf.to_container(c, resolve=True)  # noqa: E731
    s_geo, s_net = mconf.validate(plain(with_geo)), mconf.validate(plain(without))
    assert s_geo.digest() != s_net.digest()
    assert default_output_dir(s_geo, plain(with_geo)["data"]) != default_output_dir(s_net, plain(without)["data"])
    _run(data, tmp_path / "o", GEO)
    with pytest.raises(SystemExit, match=r"different settings \(.*settings.focal_source.*settings.geometry"):
        _run(data, tmp_path / "o")


def test_resume_recomputes_a_sequence_whose_geometry_changed(data: Path, tmp_path: Path):
    first = _run(data, tmp_path / "o", GEO)
    assert first["met3r"] == 0.0
    k, poses = plane_cameras(3)
    _write_geometry(data / "plane_b.npz", 3, cam_to_world=np.linalg.inv(poses[0].numpy()))  # a wrong pose
    second = _run(data, tmp_path / "o", GEO)
    recs = {r["sequence"]: r for r in map(json.loads, (tmp_path / "o" / "sequences.jsonl").read_text().splitlines())}
    assert recs["plane_a"]["score"] == 0.0 and recs["plane_b"]["score"] > 0.1
    assert second["met3r"] > 0.05


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda p: p.unlink(), "no geometry file {p} for sequence plane_b (data.geometry='{{name}}.npz')"),
        (lambda p: _write_geometry(p, 2), "geometry file {p}: depth: expected shape (V, H, W) = (3, 64, 64)"),
        (lambda p: _write_geometry(p, 3, depth=np.zeros((3, H, W), np.float32)),
         "geometry file {p}: depth: expected finite values > 0 at valid pixels"),
        (lambda p: _write_geometry(p, 3, intrinsics=None), "geometry file {p}: expected arrays ['depth', 'intrinsics', "),
        (lambda p: _write_geometry(p, 3, valid=np.ones((3, H, W), np.float32)), "geometry file {p}: valid: expected a bool array"),
        (lambda p: np.savez(p, depth=np.array([object()], dtype=object)), "geometry file {p}: expected a .npz of numeric arrays"),
    ],
)
def test_bad_geometry_files_are_errors_of_their_sequence(data: Path, tmp_path: Path, write, message):
    path = data / "plane_b.npz"
    write(path)
    summary = _run(data, tmp_path / "o", GEO)
    assert summary["num_sequences_scored"] == 1 and summary["num_errors"] == 1
    error = summary["errors"][0]["error"]
    assert message.format(p=path) in error and "\n" not in error


@pytest.mark.parametrize(
    "extra, message",
    [
        ((GEO, "data.resize=64"), "data.resize: expected null with data.geometry"),
        (("data.geometry=cams.txt",), "data.geometry: expected null or a .npz file name pattern"),
        (("data.geometry='{seq}.npz'",), "data.geometry: expected a pattern whose only fields are {name} and {stem}"),
        (("metric.geometry=given",), "metric.geometry: expected 'network' without data.geometry"),
    ],
)
def test_geometry_settings_are_checked_before_reading(data: Path, tmp_path: Path, extra, message):
    with pytest.raises(SystemExit, match="met3r-eval: " + message.replace("(", r"\(").replace(")", r"\)").replace("{", r"\{").replace("}", r"\}")):
        _run(data, tmp_path / "o", *extra)
    assert not (tmp_path / "o").exists()


def test_geometry_travels_through_dataloader_workers(data: Path, tmp_path: Path, monkeypatch):
    """Prepared views with their KnownGeometry come back from a forkserver worker intact."""
    one = _run(data, tmp_path / "o0", GEO)
    patch_cli_preparer(monkeypatch, tmp_path / "calls.log")
    # output.report_pairs=0: the report's worst-pair pictures read sequences again, here, after the run
    two = _run(data, tmp_path / "o1", GEO, "runtime.num_workers=1", "output.report_pairs=0")
    assert_ran_in_workers(tmp_path / "calls.log", 1, {"plane_a", "plane_b"})  # read in the worker process
    assert two["met3r"] == one["met3r"] and two["num_pairs"] == 4


def _normalized(k: np.ndarray) -> np.ndarray:
    """Pixel intrinsics (integer pixel centres) -> the RealEstate10K / pixelSplat convention (by image size)."""
    n = k.copy()
    n[..., 0, 0] /= W
    n[..., 1, 1] /= H
    n[..., 0, 2] = (k[..., 0, 2] + 0.5) / W
    n[..., 1, 2] = (k[..., 1, 2] + 0.5) / H
    return n


def test_normalized_intrinsics_are_refused_as_pixels_and_accepted_as_normalized(tmp_path: Path):
    """Issue 26 item 4: K in image-size units (fx = 1.25, cx = 0.5) used as pixels scored a consistent pair 0.41."""
    from met3r_metrics import KnownGeometry

    k, poses = plane_cameras(2)
    depth = torch.full((1, 2, H, W), DEPTH)
    k_norm = torch.from_numpy(_normalized(k.numpy()))
    with pytest.raises(ValueError, match=r"^intrinsics: expected pixel intrinsics for 64x64 images .* these look "
                                         r"normalized by the image size .*intrinsics_units='normalized'"):
        KnownGeometry.from_depth(depth, k_norm, poses)
    pixels = KnownGeometry.from_depth(depth, k, poses)
    normalized = KnownGeometry.from_depth(depth, k_norm, poses, intrinsics_units="normalized")
    torch.testing.assert_close(normalized.intrinsics, pixels.intrinsics, rtol=0, atol=1e-12)
    torch.testing.assert_close(normalized.points, pixels.points, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"^intrinsics_units: expected one of \('pixels', 'normalized'\), got 'ndc'"):
        KnownGeometry.from_depth(depth, k, poses, intrinsics_units="ndc")


def test_cli_normalized_intrinsics_need_data_intrinsics(tmp_path: Path):
    root = tmp_path / "seqs"
    _write_sequence(root, "plane_a", seed=0)
    k, poses = plane_cameras(3)
    np.savez(root / "plane_a.npz", depth=np.full((3, H, W), DEPTH, dtype=np.float32),
             intrinsics=_normalized(k[0].numpy()), cam_to_world=poses[0].numpy())
    refused = _run(root, tmp_path / "o1", GEO)
    assert refused["num_sequences_scored"] == 0
    assert "look normalized by the image size" in refused["errors"][0]["error"]
    assert "data.intrinsics=normalized" in refused["errors"][0]["error"]
    summary = _run(root, tmp_path / "o2", GEO, "data.intrinsics=normalized")
    assert summary["met3r"] == 0.0 and summary["data"]["intrinsics"] == "normalized"
    with pytest.raises(SystemExit, match=r"data.intrinsics: expected one of \('pixels', 'normalized'\)"):
        _run(root, tmp_path / "o3", GEO, "data.intrinsics=ndc")
