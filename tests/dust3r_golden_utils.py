"""Helpers shared by the DUSt3R/MASt3R golden tests (tolerances from shared/golden/dust3r/README.md §6)."""

from __future__ import annotations

import json
from functools import lru_cache

import pytest
import torch
from safetensors.torch import load_file

from conftest import golden_path, torch_threads

CONFIGS = ("dust3r_linear_tiny", "dust3r_dpt_tiny", "mast3r_catmlpdpt_tiny")
CASES = ("sq64", "land48x80", "mixed48x80_80x48")
REF64_CASE = "land48x80"


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models run fastest on one thread; on a shared 2-core box, 2 threads are ~5x slower. Restored after."""
    with torch_threads(1):
        yield


@lru_cache(maxsize=None)
def golden_meta(cfg: str) -> dict:
    return json.loads(golden_path("dust3r", f"{cfg}.json").read_text())


def golden_config(cfg: str) -> dict:
    """Constructor kwargs of a tiny config plus its DPT width overrides (as build_stereo_model accepts them)."""
    meta = golden_meta(cfg)
    config = dict(meta["constructor_kwargs"])
    if meta["dpt_head_overrides"]:
        config["dpt_head_overrides"] = dict(meta["dpt_head_overrides"])
    return config


@lru_cache(maxsize=None)
def _weights_f16(cfg: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("dust3r", f"{cfg}.weights.safetensors")))


def golden_weights(cfg: str) -> dict[str, torch.Tensor]:
    """Official-key state dict (both alias names present), cast to float32 (exact)."""
    return {k: v.float() for k, v in _weights_f16(cfg).items()}


@lru_cache(maxsize=None)
def golden_outputs(cfg: str) -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("dust3r", f"{cfg}.outputs.safetensors")))


@lru_cache(maxsize=None)
def golden_inputs() -> dict[str, torch.Tensor]:
    return load_file(str(golden_path("dust3r", "inputs.safetensors")))


def tolerance_ratio(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> float:
    """Worst |a - b| / (rtol |b| + atol); must be <= 1."""
    a, e = actual.detach().double().cpu(), expected.double()
    assert a.shape == e.shape, f"shape {tuple(a.shape)} != expected {tuple(e.shape)}"
    assert torch.isfinite(a).all(), "non-finite values"
    return ((a - e).abs() / (rtol * e.abs() + atol)).max().item()


def f32_tolerance(name: str, expected: torch.Tensor) -> tuple[float, float]:
    """rtol 1e-4, atol 1e-5 * max|expected| per tensor; desc gets 1e-4 absolute on top."""
    atol = 1e-5 * expected.abs().max().item() + (1e-4 if name.endswith(".desc") else 0.0)
    return 1e-4, atol


def f64_tolerance(expected: torch.Tensor) -> tuple[float, float]:
    """rtol 1e-6, atol 1e-7 * max|expected|."""
    return 1e-6, 1e-7 * expected.abs().max().item()


def compare_outputs(
    res1: dict, res2: dict, cfg: str, case: str, *, ref64: bool = False,
) -> dict[str, float]:
    """Compare model outputs with every stored golden tensor of a case; returns {name: ratio}, asserts <= 1."""
    out = golden_outputs(cfg)
    prefix = f"ref64.{case}" if ref64 else case
    ratios = {}
    for view, res in (("pred1", res1), ("pred2", res2)):
        for key, value in res.items():
            name = f"{prefix}.{view}.{key}"
            if name not in out:
                continue  # trimmed from the golden set (README §8)
            expected = out[name]
            rtol, atol = f64_tolerance(expected) if ref64 else f32_tolerance(name, expected)
            ratios[name] = tolerance_ratio(value, expected, rtol, atol)
    assert ratios, f"no golden tensors compared for {cfg}/{prefix}"
    bad = {k: v for k, v in ratios.items() if not v <= 1.0}
    assert not bad, f"outside golden tolerance (ratio > 1): {bad}"
    return ratios
