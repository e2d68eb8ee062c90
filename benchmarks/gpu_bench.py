"""MEt3R on one GPU: pairs/s, per-stage ms, peak memory, accuracy of the fast paths, and the floor.

Run on the lent GPU (see benchmarks/README.md)::

    PYTHONPATH=. python benchmarks/gpu_bench.py --out results_dir [--golden path/to/golden]

Full-size networks with random weights (speed does not depend on weight values). End-to-end and
per-stage timings use a plausible synthetic geometry after the real backbone ran (random MASt3R puts
almost no point in view, which would make splatting look cheap); one end-to-end row per precision
keeps the random geometry for comparison. Precision modes: ``fp32`` (TF32 off), ``tf32`` (TF32 on
for matmul and cuDNN, as the official code sets it), ``bf16`` (settings ``precision="bf16"``:
networks under bf16 autocast, geometry/splatting/score in fp32; TF32 on). The baseline
(:mod:`benchmarks.baseline`) reproduces the official pipeline's structure in the same process.
Writes ``gpu_bench.json`` and ``gpu_bench.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.baseline import official_structure_pairs, official_structure_sequence  # noqa: E402
from benchmarks.synthetic import build_scorer, random_networks, smooth_surface_pair  # noqa: E402
from benchmarks.timing import event_ms as _event_ms  # noqa: E402
from met3r_metrics.distances import pair_scores  # noqa: E402
from met3r_metrics.geometry import canonical_pointmap, estimate_focal, focal_to_ndc  # noqa: E402
from met3r_metrics.precision import set_tf32  # noqa: E402
from met3r_metrics.render import alpha_composite, project_points, rasterize_points  # noqa: E402
from met3r_metrics.render_reference import naive_rasterize_points  # noqa: E402

GiB = 1024**3
DEV = torch.device("cuda" if torch.cuda.is_available() else "cpu")
BACKBONES = {"official": "mast3r_512_catmlpdpt_metric", "paper": "dust3r_512_dpt"}


def set_precision(mode: str) -> dict:
    """Global TF32 switches for ``mode`` (for the stages timed outside the scorer); returns the settings
    override (the scorer pins TF32 itself from ``precision``)."""
    set_tf32(mode in ("tf32", "bf16"))  # through the running torch's TF32 API (met3r_metrics.precision)
    return {"precision": mode}


def sync() -> None:
    if DEV.type == "cuda":
        torch.cuda.synchronize()


def bench(fn, *, budget_s: float = 1.5, min_reps: int = 3, max_reps: int = 30, warmup: int = 1) -> dict:
    """Median wall time (s) of ``fn`` with a device sync around each call; peak memory of the calls."""
    for _ in range(warmup):
        fn()
    sync()
    torch.cuda.reset_peak_memory_stats()
    times: list[float] = []
    while len(times) < min_reps or (sum(times) < budget_s and len(times) < max_reps):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "reps": len(times),
            "peak_gib": torch.cuda.max_memory_allocated() / GiB}


def event_ms(fn, reps: int = 5) -> float:
    """Median device time (ms) of ``fn`` after one warm-up call (CUDA events)."""
    return _event_ms(fn, warmup=1, reps=reps)


def rand_images(*shape: int) -> torch.Tensor:
    g = torch.Generator(device=DEV).manual_seed(0)
    return torch.rand(*shape, device=DEV, generator=g) * 2 - 1


# ------------------------------------------------------------------------------------------------
def ceilings() -> dict:
    n = 8192
    a = torch.randn(n, n, device=DEV)
    b = torch.randn(n, n, device=DEV)
    out = {}
    for name, dt, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True), ("fp32", torch.float32, False)):
        set_tf32(tf32)
        x, y = a.to(dt), b.to(dt)
        ms = event_ms(lambda: x @ y, reps=5)
        out[f"{name}_tflops"] = 2 * n**3 / (ms / 1e3) / 1e12
    set_tf32(False)
    return out


def backbone_flops(stereo, size: int) -> float:
    """FLOPs of the stereo network for one pair (encoder on both frames + decoder + heads)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = rand_images(2, 3, size, size)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        tok, pos, shape = stereo.encode(x)
        stereo.decode_heads(tok[:1], pos[:1], shape, tok[1:], pos[1:], shape)
    return float(fc.get_total_flops())


# ------------------------------------------------------------------------------------------------
def e2e(nets, variant: str, size: int, batch: int, mode: str, synthetic: bool = True, **extra) -> dict:
    over = set_precision(mode)
    scorer = build_scorer(variant, *nets, synthetic, **over, **extra)  # library default chunking unless given
    images = rand_images(batch, 2, 3, size, size)
    r = bench(lambda: scorer.score_sequences(images, [(0, 1)]))
    scores = scorer.score_sequences(images, [(0, 1)])["pair_scores"].flatten()
    return {"variant": variant, "size": size, "batch": batch, "mode": mode, "geometry": "synthetic" if synthetic else "random",
            "chunk": scorer.settings.batch_size,
            "pairs_per_s": batch / r["median_s"], "ms_per_pair": 1e3 * r["median_s"] / batch, **r,
            "scores": scores.tolist()}


def stages(nets, size: int, batch: int, mode: str) -> dict:
    """ms per pair of each stage of the official variant (B pairs, synthetic geometry after the backbone)."""
    over = set_precision(mode)
    scorer = build_scorer("official", *nets, False, batch_size=batch, **over)
    s = scorer.settings
    stereo, feats = nets
    frames = rand_images(2 * batch, 3, size, size)
    x01 = (frames + 1) / 2
    out: dict[str, float] = {}
    with torch.no_grad(), torch.autocast("cuda", enabled=False):
        with scorer._net_precision(DEV):
            out["encoder"] = event_ms(lambda: stereo.encode(frames))
            tok, pos, shape = stereo.encode(frames)
            out["decoder"] = event_ms(lambda: stereo.decode(tok[:batch], pos[:batch], tok[batch:], pos[batch:]))
            d1, d2 = stereo.decode(tok[:batch], pos[:batch], tok[batch:], pos[batch:])
            out["heads"] = event_ms(lambda: stereo.run_heads(d1, shape, d2, shape, descriptors=False))
            out["features (DINO)"] = event_ms(lambda: feats.featurizer(x01))
            lr = feats.featurizer(x01)
            out["upsampler (JBU)"] = event_ms(lambda: feats.upsampler(lr, x01))
            hr = feats.upsampler(lr, x01).float()
        pts, conf = smooth_surface_pair(batch, size, size, DEV)
        out["focal"] = event_ms(lambda: focal_to_ndc(estimate_focal(canonical_pointmap(pts, conf)), size, size))
        fndc = focal_to_ndc(estimate_focal(canonical_pointmap(pts, conf)), size, size)
        rh = rw = s["img_size"]
        ndc = project_points(pts.reshape(2 * batch, -1, 3), fndc.repeat_interleave(2, 0), (rh, rw))
        out["splatting (rasterize)"] = event_ms(lambda: rasterize_points(ndc, (rh, rw), s["radius"], s["points_per_pixel"]))
        idx, _, dists = rasterize_points(ndc, (rh, rw), s["radius"], s["points_per_pixel"])
        f = hr.view(batch, 2, 384, size, size).permute(0, 1, 3, 4, 2).reshape(2 * batch, size * size, 384)
        out["compositing"] = event_ms(lambda: alpha_composite(idx, dists, f, s["radius"]))
        ren = alpha_composite(idx, dists, f, s["radius"]).reshape(batch, 2, 384, rh, rw)
        mask = (idx[..., 0] >= 0).view(batch, 2, rh, rw).all(1)
        out["score"] = event_ms(lambda: pair_scores(ren[:, 0], ren[:, 1], mask))
    per_pair = {k: v / batch for k, v in out.items()}
    return {"size": size, "batch": batch, "mode": mode, "ms_per_pair": per_pair, "sum_ms_per_pair": sum(per_pair.values())}


def baseline_rows(nets, size: int, batch: int, reps_budget: float = 3.0) -> dict:
    set_precision("tf32")  # the official module switches TF32 on at import
    scorer = build_scorer("official", *nets, False, batch_size=batch)
    images = rand_images(batch, 2, 3, size, size)
    geo = smooth_surface_pair(batch, size, size, DEV)
    r = bench(lambda: official_structure_pairs(scorer, images[:, 0], images[:, 1], geo), budget_s=reps_budget, min_reps=1, warmup=1)
    return {"size": size, "batch": batch, "mode": "tf32", "pairs_per_s": batch / r["median_s"],
            "ms_per_pair": 1e3 * r["median_s"] / batch, **r}


def sequence_rows(nets, frames: int, mode: str, batch: int = 8, with_baseline: bool = True) -> dict:
    over = set_precision(mode)
    scorer = build_scorer("official", *nets, True, batch_size=batch, **over)
    seq = rand_images(1, frames, 3, 256, 256)
    pairs = [(i, i + 1) for i in range(frames - 1)]
    torch.cuda.empty_cache()
    base_alloc = torch.cuda.memory_allocated()
    r = bench(lambda: scorer.score_sequences(seq, pairs), budget_s=0.0, min_reps=1)
    row = {"frames": frames, "mode": mode, "batch": batch, "pairs_per_s": (frames - 1) / r["median_s"],
           "seconds": r["median_s"], "peak_gib": r["peak_gib"], "peak_above_inputs_and_weights_gib": (r["peak_gib"] * GiB - base_alloc) / GiB}
    if with_baseline:
        set_precision("tf32")
        b = bench(lambda: official_structure_sequence(scorer, seq[0], batch, lambda n: smooth_surface_pair(n, 256, 256, DEV)),
                  budget_s=0.0, min_reps=1)
        row["baseline_seconds"] = b["median_s"]
        row["baseline_pairs_per_s"] = (frames - 1) / b["median_s"]
        row["speedup"] = b["median_s"] / r["median_s"]
    return row


def accuracy_random(nets, mode: str, synthetic: bool, size: int = 256, batch: int = 16) -> dict:
    images = rand_images(batch, 2, 3, size, size)
    fp32 = set_precision("fp32")
    ref = build_scorer("official", *nets, synthetic, batch_size=batch, **fp32).score_sequences(images, [(0, 1)])["pair_scores"]
    over = set_precision(mode)
    got = build_scorer("official", *nets, synthetic, batch_size=batch, **over).score_sequences(images, [(0, 1)])["pair_scores"]
    d = (got - ref).abs()
    both = ~(torch.isnan(got) | torch.isnan(ref))
    return {"mode": mode, "geometry": "synthetic" if synthetic else "random", "max_abs_diff": float(d[both].max()) if both.any() else None,
            "valid_pairs": int(both.sum()), "nan_mismatch": int((torch.isnan(got) != torch.isnan(ref)).sum()),
            "fp32_scores": ref.flatten().tolist()}


def accuracy_golden(golden: Path) -> list[dict]:
    """Tiny golden MEt3R cases on CUDA in each mode vs the official CPU float32 scores."""
    import tempfile

    from safetensors.torch import load_file

    from met3r_metrics import met3r
    from met3r_metrics.scorer import clear_scorer_cache
    from met3r_metrics.testing import tiny_met3r_kwargs

    inputs = load_file(str(golden / "met3r" / "inputs.safetensors"))
    cases = {
        "a_mast3r_featup_cosine": ("sq64", "mast3r", {}),
        "b_dust3r_featup_cosine": ("sq64", "dust3r", {}),
        "c_mast3r_imgsizeNone_64x96": ("nonsq64x96", "mast3r", {"img_size": None, "radius": 0.01}),
        "d1_upsampler_bilinear": ("sq64", "mast3r", {"upsampler": "bilinear"}),
        "e_mast3r_reversed_pairs": ("sq64", "mast3r", {"swap": True}),
    }
    rows = []
    work = Path(tempfile.mkdtemp())
    for mode in ("fp32", "tf32", "bf16"):
        for case, (key, backbone, extra) in cases.items():
            over = set_precision(mode)
            extra = dict(extra)
            swap = extra.pop("swap", False)
            kw = {**tiny_met3r_kwargs(golden, work, backbone=backbone), **extra, **over, "nan_on_no_overlap": False}
            x = inputs[key].to(DEV)
            if swap:
                x = x[:, [1, 0]]
            got = met3r(x, return_details=True, **kw).pair_scores.flatten().cpu()
            ref = load_file(str(golden / "met3r" / f"{case}.safetensors"))["score"]
            rows.append({"case": case, "mode": mode, "max_abs_diff": float((got.double() - ref.double()).abs().max())})
            clear_scorer_cache()
    return rows


def raster_cuda_check() -> dict:
    """Fast vs naive rasterizer on CUDA, synthetic geometry at 64x64 (same semantics, all-slot equality)."""
    pts, conf = smooth_surface_pair(2, 64, 64, DEV)
    fndc = focal_to_ndc(estimate_focal(canonical_pointmap(pts, conf)), 64, 64)
    ndc = project_points(pts.reshape(4, -1, 3), fndc.repeat_interleave(2, 0), (64, 64))
    a = rasterize_points(ndc, (64, 64), 0.04, 10)
    b = naive_rasterize_points(ndc, (64, 64), 0.04, 10)
    return {"idx_equal_fraction": float((a[0] == b[0]).float().mean()), "dists_max_abs": float((a[2] - b[2]).abs().max()),
            "coverage": float((a[0][..., 0] >= 0).float().mean())}


def profile_e2e(nets, out_dir: Path, mode: str = "tf32", batch: int = 16, warm: int = 1) -> str:
    """torch.profiler table (top CUDA kernels) of one official 256x256 call on ``batch`` pairs, after
    ``warm`` calls (3: the network stages replay from CUDA graphs)."""
    from torch.profiler import ProfilerActivity, profile

    over = set_precision(mode)
    scorer = build_scorer("official", *nets, True, **over)
    images = rand_images(batch, 2, 3, 256, 256)
    for _ in range(warm):
        scorer.score_sequences(images, [(0, 1)])
    sync()
    t0 = time.perf_counter()
    scorer.score_sequences(images, [(0, 1)])
    sync()
    wall_ms = 1e3 * (time.perf_counter() - t0)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        scorer.score_sequences(images, [(0, 1)])
        sync()
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=60)
    busy = sum(getattr(e, "self_device_time_total", 0) for e in prof.key_averages()) / 1e3
    table = f"unprofiled wall {wall_ms:.1f} ms; profiled device time (sum of kernels) {busy:.1f} ms\n" + table
    (out_dir / f"profile_{mode}_b{batch}.txt").write_text(table)
    return table


def gpu_state() -> dict:
    """SM/memory clocks, temperature and power now (nvidia-smi), to tell clock changes from code changes."""
    import subprocess

    q = "clocks.sm,clocks.mem,clocks.max.sm,temperature.gpu,power.draw,clocks_throttle_reasons.active"
    try:
        line = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"], capture_output=True,
                              text=True, timeout=10).stdout.strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return {}
    return dict(zip(q.split(","), (v.strip() for v in line.split(","))))


GRAPH_CASES = [(256, 1, "tf32", None), (256, 16, "tf32", None), (256, 16, "tf32", 16), (256, 16, "bf16", None),
               (256, 16, "bf16", 16), (512, 4, "tf32", None), (512, 4, "bf16", None)]


def graph_rows(nets) -> list[dict]:
    """Eager vs CUDA-graph replay of the network stages, per precision and chunk, in one process.

    Each row: pairs/s and ms per call with graphs off and on (same inputs, same scorer), the score
    difference graphed vs eager, and the difference of both from the exact fp32 eager path.
    """
    from met3r_metrics import cuda_graphs

    rows = []
    for size, batch, mode, chunk in GRAPH_CASES:
        images = rand_images(batch, 2, 3, size, size)
        extra = {"batch_size": chunk} if chunk else {}
        fp32 = set_precision("fp32")
        with cuda_graphs.enabled(False):
            exact = build_scorer("official", *nets, True, **fp32, **extra).score_sequences(images, [(0, 1)])["pair_scores"]
        over = set_precision(mode)
        scorer = build_scorer("official", *nets, True, **over, **extra)
        row = {"size": size, "batch": batch, "mode": mode, "chunk": scorer.settings.batch_size, "gpu_before": gpu_state()}
        for graphs in (False, True):
            with cuda_graphs.enabled(graphs):
                torch.cuda.empty_cache()
                r = bench(lambda: scorer.score_sequences(images, [(0, 1)]), warmup=2, budget_s=2.0)
                got = scorer.score_sequences(images, [(0, 1)])["pair_scores"]
            tag = "graphs" if graphs else "eager"
            row[tag] = {"pairs_per_s": batch / r["median_s"], "ms_per_call": 1e3 * r["median_s"],
                        "ms_per_call_min": 1e3 * r["min_s"], "peak_gib": r["peak_gib"], "reps": r["reps"],
                        "max_abs_diff_vs_exact_fp32": float((got - exact).abs().max())}
            row[f"scores_{tag}"] = got
        row["graphs_vs_eager_max_abs_diff"] = float((row.pop("scores_graphs") - row.pop("scores_eager")).abs().max())
        row["speedup"] = row["graphs"]["pairs_per_s"] / row["eager"]["pairs_per_s"]
        row["gpu_after"] = gpu_state()
        rows.append(row)
    return rows


def stage_kernels(nets, size: int = 256, batch: int = 16, mode: str = "tf32", top: int = 8) -> dict:
    """Per stage (B pairs): GPU ms, kernel count, the top kernels by GPU time, and the stage's peak memory
    above its inputs (GiB). Answers where the GPU time of a graphed step goes (e.g. why the decoder is slower
    than the encoder) and what holds the peak memory."""
    from torch.profiler import ProfilerActivity, profile

    over = set_precision(mode)
    scorer = build_scorer("official", *nets, False, batch_size=batch, **over)
    stereo, feats = nets
    frames = rand_images(2 * batch, 3, size, size)
    x01 = (frames + 1) / 2
    with torch.no_grad(), torch.autocast("cuda", enabled=False), scorer._net_precision(DEV):
        tok, pos, shape = stereo.encode(frames)
        d1, d2 = stereo.decode(tok[:batch], pos[:batch], tok[batch:], pos[batch:], (shape, shape))
        lr = feats.featurizer(x01)
        hr = feats.upsampler(lr, x01).float()
        pts, conf = smooth_surface_pair(batch, size, size, DEV)
        f = hr.view(batch, 2, 384, size, size).permute(0, 1, 3, 4, 2).reshape(batch, 2, size * size, 384)
        fns = {
            "encoder": lambda: stereo.encode(frames),
            "decoder": lambda: stereo.decode(tok[:batch], pos[:batch], tok[batch:], pos[batch:], (shape, shape)),
            "heads": lambda: stereo.run_heads(d1, shape, d2, shape, descriptors=False),
            "DINO": lambda: feats.featurizer(x01),
            "JBU": lambda: feats.upsampler(lr, x01),
            "render + score": lambda: scorer.render_pairs(pts, conf, f),
        }
        out = {}
        for name, fn in fns.items():
            fn()
            sync()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                fn()
                sync()
            peak = (torch.cuda.max_memory_allocated() - base) / GiB
            ev = [e for e in prof.key_averages() if e.device_type.name == "CUDA" or getattr(e, "device_time_total", 0) > 0]
            ev = [e for e in ev if getattr(e, "device_time_total", 0) > 0]
            ev.sort(key=lambda e: e.device_time_total, reverse=True)
            total = sum(e.device_time_total for e in ev) / 1e3
            out[name] = {"gpu_ms": total, "gpu_ms_per_pair": total / batch, "kernels": sum(e.count for e in ev),
                         "peak_above_inputs_gib": peak,
                         "top": [{"kernel": e.key[:90], "ms": e.device_time_total / 1e3, "count": e.count} for e in ev[:top]]}
    return {"size": size, "batch": batch, "mode": mode, "stages": out}


def toggle_rows(nets, module, attr: str, values: tuple, configs: tuple, key: str) -> list[dict]:
    """A/B of a module-level switch ``module.attr`` in one process: each (size, pairs, chunk) config, TF32,
    every value twice, alternating (so drift between rows shows); speed, peak memory and the score
    difference from the first value's scores."""
    saved = getattr(module, attr)
    rows = []
    try:
        for size, batch, chunk in configs:
            images = rand_images(batch, 2, 3, size, size)
            scorer = build_scorer("official", *nets, True, batch_size=chunk, **set_precision("tf32"))
            ref = None
            for rep in range(2):
                for value in values:
                    setattr(module, attr, value)
                    torch.cuda.empty_cache()
                    r = bench(lambda: scorer.score_sequences(images, [(0, 1)]), warmup=2, budget_s=1.5)
                    got = scorer.score_sequences(images, [(0, 1)])["pair_scores"]
                    ref = got if ref is None else ref
                    rows.append({"size": size, "batch": batch, "chunk": chunk, key: value, "rep": rep,
                                 "pairs_per_s": batch / r["median_s"], "ms_per_call": 1e3 * r["median_s"],
                                 "peak_gib": r["peak_gib"], f"max_abs_diff_vs_{key}_{values[0]}": float((got - ref).abs().max())})
    finally:
        setattr(module, attr, saved)
    return rows


def feature_frame_rows(nets) -> list[dict]:
    """Frames per feature-network call (``stages.features.FEATURE_FRAMES``)."""
    from met3r_metrics.stages import features as features_mod

    return toggle_rows(nets, features_mod, "FEATURE_FRAMES", (4, 8, 1000), ((256, 16, 8), (256, 16, 16), (512, 4, 8)),
                       "feature_frames")


def raster_rows(nets) -> list[dict]:
    """The sync-free dense rasterizer (graphed) vs the chunked one with host syncs."""
    from met3r_metrics.render import rasterize

    return toggle_rows(nets, rasterize, "DENSE_ON_ACCELERATORS", (False, True), ((256, 1, 8), (256, 16, 8), (512, 4, 8)),
                       "dense_raster")


def compiled_rows(nets, mode_kw: dict | None = None, chunk: int | None = None) -> list[dict]:
    """Opt-in torch.compile of the transformer blocks: compile time, speed and score deviation.

    Runs last: compiling mutates the shared networks in place.
    """
    from met3r_metrics.compile import compile_networks

    cases = [(256, 16, "tf32"), (256, 16, "bf16"), (256, 1, "tf32"), (512, 4, "tf32")]
    refs = {}
    for size, batch, mode in cases:  # uncompiled references on the same inputs
        over = set_precision(mode)
        images = rand_images(batch, 2, 3, size, size)
        refs[(size, batch, mode)] = build_scorer("official", *nets, True, **over).score_sequences(images, [(0, 1)])["pair_scores"]
    compile_networks(build_scorer("official", *nets, True), dynamic=False, **(mode_kw or {}))
    extra = {"batch_size": chunk} if chunk else {}
    rows = []
    for size, batch, mode in cases:
        over = set_precision(mode)
        scorer = build_scorer("official", *nets, True, **over, **extra)
        images = rand_images(batch, 2, 3, size, size)
        t0 = time.perf_counter()
        got = scorer.score_sequences(images, [(0, 1)])["pair_scores"]
        sync()
        first = time.perf_counter() - t0
        r = bench(lambda: scorer.score_sequences(images, [(0, 1)]))
        rows.append({"size": size, "batch": batch, "mode": mode, "compile": mode_kw or {}, "chunk": scorer.settings.batch_size,
                     "first_call_s": first, "pairs_per_s": batch / r["median_s"],
                     "ms_per_pair": 1e3 * r["median_s"] / batch, "peak_gib": r["peak_gib"],
                     "max_abs_diff_vs_uncompiled": float((got - refs[(size, batch, mode)]).abs().max())})
    return rows


# ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--golden", default=None)
    ap.add_argument("--sections", default="all")
    ap.add_argument("--long-frames", type=int, default=1000)
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode for the compile section")
    ap.add_argument("--chunk", type=int, default=None, help="batch_size setting for the compile section")
    args = ap.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    want = set(args.sections.split(",")) if args.sections != "all" else None

    def on(name: str) -> bool:
        return want is None or name in want

    res: dict = {"device": torch.cuda.get_device_name() if DEV.type == "cuda" else platform.processor() or "cpu", "torch": torch.__version__, "python": platform.python_version()}
    t_start = time.time()

    def save() -> None:
        res["wall_s"] = time.time() - t_start
        (out_dir / "gpu_bench.json").write_text(json.dumps(res, indent=1))

    def log(msg: str) -> None:
        print(f"[{time.time() - t_start:7.1f}s] {msg}", flush=True)

    if on("ceil"):
        res["ceilings"] = ceilings()
        log(f"ceilings {res['ceilings']}")
    if on("check"):
        res["raster_cuda_check"] = raster_cuda_check()
        log(f"raster check {res['raster_cuda_check']}")
    if on("golden") and args.golden:
        res["accuracy_golden"] = accuracy_golden(Path(args.golden))
        for r in res["accuracy_golden"]:
            log(f"golden {r}")
        save()

    if not any(on(n) for n in ("floor", "accuracy", "stages", "e2e", "e2e256", "baseline", "sequence", "profile", "compile",
                               "graphs", "kernels", "seqdefault", "featframes", "kernels1", "profile1", "raster")):
        save()
        return
    nets = {v: random_networks(b, DEV) for v, b in BACKBONES.items()}
    log("networks built")
    if on("floor"):
        res["flops_per_pair"] = {str(s): backbone_flops(nets["official"][0], s) for s in (256, 512)}
        if "ceilings" in res:
            res["floor_ms_per_pair_bf16"] = {s: f / (res["ceilings"]["bf16_tflops"] * 1e12) * 1e3 for s, f in res["flops_per_pair"].items()}
            res["floor_ms_per_pair_tf32"] = {s: f / (res["ceilings"]["tf32_tflops"] * 1e12) * 1e3 for s, f in res["flops_per_pair"].items()}
        log(f"flops {res['flops_per_pair']}")
        save()
    if on("accuracy"):
        res["accuracy_random"] = [accuracy_random(nets["official"], m, g) for m in ("tf32", "bf16") for g in (False, True)]
        for r in res["accuracy_random"]:
            log(f"accuracy {({k: v for k, v in r.items() if k != 'fp32_scores'})}")
        save()
    if on("stages"):
        res["stages"] = [stages(nets["official"], s, b, m) for s, b in ((256, 16), (512, 4)) for m in ("fp32", "tf32", "bf16")]
        for r in res["stages"]:
            log(f"stages {r['size']} b{r['batch']} {r['mode']}: " + ", ".join(f"{k} {v:.2f}" for k, v in r["ms_per_pair"].items()))
        save()
    if on("e2e"):
        rows = []
        for variant in ("official", "paper"):
            for size in (256, 512):
                for batch in (1, 4, 16):
                    for mode in ("fp32", "tf32", "bf16"):
                        r = e2e(nets[variant], variant, size, batch, mode)
                        rows.append(r)
                        log(f"e2e {variant} {size} b{batch} {mode}: {r['pairs_per_s']:.1f} pairs/s, {r['ms_per_pair']:.2f} ms/pair, peak {r['peak_gib']:.2f} GiB")
                    save()
        for mode in ("fp32", "tf32", "bf16"):
            r = e2e(nets["official"], "official", 256, 16, mode, synthetic=False)
            rows.append(r)
            log(f"e2e official 256 b16 {mode} random geometry: {r['pairs_per_s']:.1f} pairs/s")
        for chunk in (4, 16):  # the memory/speed knob: directed pairs per network chunk
            r = e2e(nets["official"], "official", 256, 16, "tf32", batch_size=chunk)
            rows.append(r)
            log(f"e2e official 256 b16 tf32 chunk {chunk}: {r['pairs_per_s']:.1f} pairs/s, peak {r['peak_gib']:.2f} GiB")
        res["e2e"] = rows
        save()
    if on("e2e256"):  # quick re-check of the official 256x256 rows (speed and peak memory)
        rows = [e2e(nets["official"], "official", 256, b, m) for b in (1, 16) for m in ("fp32", "tf32", "bf16")]
        rows += [e2e(nets["official"], "official", 256, 16, "tf32", batch_size=c) for c in (4, 16)]
        for r in rows:
            log(f"e2e256 b{r['batch']} chunk {r['chunk']} {r['mode']}: {r['pairs_per_s']:.1f} pairs/s, peak {r['peak_gib']:.2f} GiB")
        res["e2e256"] = rows
        save()
    if on("kernels1"):  # one pair per call: GPU time per stage, to split the 1-pair latency into GPU and host
        res["stage_kernels_1pair"] = [stage_kernels(nets["official"], batch=1, mode="tf32")]
        for name, st in res["stage_kernels_1pair"][0]["stages"].items():
            log(f"kernels1 {name}: {st['gpu_ms']:.2f} ms GPU, {st['kernels']} kernels")
        save()
    if on("kernels"):
        res["stage_kernels"] = [stage_kernels(nets["official"], mode=m) for m in ("tf32", "bf16")]
        for r in res["stage_kernels"]:
            for name, st in r["stages"].items():
                log(f"kernels {r['mode']} {name}: {st['gpu_ms_per_pair']:.2f} ms/pair, {st['kernels']} kernels, peak +{st['peak_above_inputs_gib']:.2f} GiB; "
                    + "; ".join(f"{k['kernel'][:50]} {k['ms']:.1f}ms x{k['count']}" for k in st["top"][:4]))
        save()
    if on("graphs"):
        res["graphs"] = []
        for r in graph_rows(nets["official"]):
            res["graphs"].append(r)
            log(f"graphs {r['size']} b{r['batch']} chunk {r['chunk']} {r['mode']}: eager {r['eager']['pairs_per_s']:.1f} "
                f"-> graphs {r['graphs']['pairs_per_s']:.1f} pairs/s ({r['graphs']['ms_per_call']:.1f} ms/call, peak "
                f"{r['graphs']['peak_gib']:.2f} GiB), graphs-eager {r['graphs_vs_eager_max_abs_diff']:.1e}, "
                f"vs fp32 {r['graphs']['max_abs_diff_vs_exact_fp32']:.1e}")
        save()
    if on("baseline"):
        res["baseline"] = [baseline_rows(nets["official"], 256, 16), baseline_rows(nets["official"], 256, 1),
                           baseline_rows(nets["official"], 512, 4, reps_budget=0.0)]
        for r in res["baseline"]:
            log(f"baseline {r['size']} b{r['batch']}: {r['pairs_per_s']:.2f} pairs/s, peak {r['peak_gib']:.2f} GiB")
        save()
    if on("profile"):
        print(profile_e2e(nets["official"], out_dir), flush=True)
    if on("profile1"):  # one graphed 1-pair call: device busy time vs wall time shows the host gaps
        print(profile_e2e(nets["official"], out_dir, batch=1, warm=3), flush=True)
    if on("sequence"):
        res["sequence"] = [sequence_rows(nets["official"], 64, m) for m in ("tf32", "bf16")]
        res["sequence"].append(sequence_rows(nets["official"], args.long_frames, "bf16", with_baseline=False))
        for r in res["sequence"]:
            log(f"sequence {r}")
        save()
    if on("featframes"):
        res["feature_frames"] = feature_frame_rows(nets["official"])
        for r in res["feature_frames"]:
            log(f"feature frames {r}")
        save()
    if on("raster"):
        res["raster"] = raster_rows(nets["official"])
        for r in res["raster"]:
            log(f"raster {r}")
        save()
    if on("seqdefault"):  # the defaults (tf32, CUDA graphs, chunk 8): a short and a long sequence, bounded memory
        res["sequence_default"] = [sequence_rows(nets["official"], n, "tf32", with_baseline=False) for n in (64, args.long_frames)]
        for r in res["sequence_default"]:
            log(f"sequence default {r}")
        save()
    if on("compile"):
        res["compiled"] = compiled_rows(nets["official"], {"mode": args.compile_mode} if args.compile_mode else None, args.chunk)
        for r in res["compiled"]:
            log(f"compiled {r}")
    save()
    log("done")


if __name__ == "__main__":
    main()
