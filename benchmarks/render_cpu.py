"""CPU benchmark of met3r_metrics.render at MEt3R's size, against PyTorch3D's naive CPU rasterizer.

Workload: one MEt3R pair = 2 clouds x 65,536 points (256 x 256 point maps of a smooth surface seen from
two cameras, both expressed in view 1's frame), 384 features per point, rendered into 256 x 256 with
radius 0.01, 10 points per pixel, background -10000, MEt3R's focal fx = 1 + f/w.

Baselines:
* PyTorch3D 0.7.9's naive CPU kernel, measured on this machine when the golden data was made
  (../shared/golden/pytorch3d/timings_cpu_naive.json; not re-run here, PyTorch3D is not installed).
* This package's all-pairs reference ``naive_rasterize_points``, run in this process on a smaller size
  (too slow at full size) and extrapolated linearly in (pixels x points), which is how its cost grows.

Peak memory: each step runs once (cold) in a fresh subprocess. After the inputs exist, the kernel's
resident-set high-water mark is reset (``echo 5 > /proc/self/clear_refs``); the number reported is
VmHWM after the step minus VmRSS before it (/proc/self/status), i.e. the peak extra resident memory of
the step, outputs and allocator overhead included. Where clear_refs is unavailable it falls back to the
growth of ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which misses peaks below an earlier high-water.

Usage: python benchmarks/render_cpu.py [--repeats 5]  (writes benchmarks/results/render_cpu.json and
benchmarks/render_cpu.md). The machine is shared; timings are wall-clock medians and minima.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from met3r_metrics.render import alpha_composite, project_points, rasterize_points, splat
from met3r_metrics.render_reference import naive_rasterize_points

HERE = Path(__file__).resolve().parent
GOLDEN_TIMINGS = HERE.parent.parent / "shared" / "golden" / "pytorch3d" / "timings_cpu_naive.json"
SIZE = 256
RADIUS = 0.01
K = 10
C = 384
FOCAL_PX = 230.0  # DUSt3R-like pixel focal at 256 px (wide FOV: f < w, so MEt3R's render zooms in)


def _height(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Smooth depth field z = h(x, y) in view 1's frame (a tilted, gently undulating surface)."""
    return 2.5 + 0.25 * x + 0.1 * y + 0.15 * torch.sin(2.5 * x) * torch.cos(2.0 * y)


def _cast(origin: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
    """Intersect rays origin + t * dirs with the surface by fixed-point iteration on t (it is smooth)."""
    t = torch.full(dirs.shape[:-1], 2.5, dtype=torch.float64)
    for _ in range(60):
        p = origin + t[..., None] * dirs
        t = (_height(p[..., 0], p[..., 1]) - origin[2]) / dirs[..., 2]
    return origin + t[..., None] * dirs


def make_pair(seed: int = 0) -> dict[str, torch.Tensor]:
    """A MEt3R-like pair: pts3d of view 1 and pts3d_in_other_view of view 2, features, focal."""
    v, u = torch.meshgrid(torch.arange(SIZE, dtype=torch.float64), torch.arange(SIZE, dtype=torch.float64), indexing="ij")
    rays = torch.stack(((u - SIZE / 2) / FOCAL_PX, (v - SIZE / 2) / FOCAL_PX, torch.ones_like(u)), -1)
    pts1 = _cast(torch.zeros(3, dtype=torch.float64), rays)
    yaw = math.radians(-6.0)  # view 2: yawed and shifted, rays expressed in view 1's frame
    rot = torch.tensor(
        [[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]], dtype=torch.float64
    )
    pts2 = _cast(torch.tensor([0.25, -0.03, 0.02], dtype=torch.float64), rays @ rot.T)
    points = torch.stack((pts1, pts2)).reshape(2, SIZE * SIZE, 3).float()
    gen = torch.Generator().manual_seed(seed)
    features = torch.randn(2, SIZE * SIZE, C, generator=gen)
    focal = torch.full((2, 2), 1.0 + FOCAL_PX / SIZE)  # MEt3R: fx = 1 + f/w, fy = 1 + f/h
    return {"points": points, "features": features, "focal": focal}


def _time(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up (allocator, thread pool)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return {"median_s": statistics.median(runs), "min_s": min(runs), "all_s": runs}


def _status_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _memory_child(step: str, threads: int) -> None:
    """Run one step once in this fresh process and print the RSS high-water growth as JSON."""
    torch.set_num_threads(threads)
    data = make_pair()
    ndc = project_points(data["points"], data["focal"], (SIZE, SIZE))
    idx = dists = None
    if step == "composite":
        idx, _, dists = rasterize_points(ndc, (SIZE, SIZE), RADIUS, K)
    reset = _reset_peak()
    rss_before = _status_bytes("VmRSS")
    maxrss_before = _maxrss_bytes()
    if step == "rasterize":
        out = rasterize_points(ndc, (SIZE, SIZE), RADIUS, K)
    elif step == "composite":
        out = alpha_composite(idx, dists, data["features"], RADIUS)
    elif step == "splat":
        out = splat(data["points"], data["features"], data["focal"], (SIZE, SIZE), RADIUS, K)
    else:
        raise ValueError(step)
    hwm = _status_bytes("VmHWM")
    del out
    if reset and hwm is not None and rss_before is not None:
        growth, method = hwm - rss_before, "VmHWM after - VmRSS before, peak reset via /proc/self/clear_refs"
    else:
        growth, method = _maxrss_bytes() - maxrss_before, "ru_maxrss growth (lower bound)"
    print(json.dumps({"step": step, "peak_growth_bytes": growth, "baseline_rss_bytes": rss_before, "method": method}))


def _memory(step: str, threads: int) -> dict:
    res = subprocess.run(
        [sys.executable, __file__, "--memory-child", step, "--threads", str(threads)],
        capture_output=True, text=True, check=True, env={**os.environ, "PYTHONHASHSEED": "0"},
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def run(repeats: int) -> dict:
    data = make_pair()
    pts, feats, focal = data["points"], data["features"], data["focal"]
    size = (SIZE, SIZE)
    pt3d = json.loads(GOLDEN_TIMINGS.read_text())
    p3d_pair = pt3d["runs"]["met3r_pair_2clouds"]
    p3d_cloud = pt3d["runs"]["met3r_view1_every_pixel_hit"]

    result: dict = {
        "workload": {
            "clouds": 2, "points_per_cloud": SIZE * SIZE, "features": C, "image": [SIZE, SIZE],
            "radius_ndc": RADIUS, "points_per_pixel": K, "focal_ndc": focal[0].tolist(),
            "geometry": "smooth surface ray-cast from two cameras (yaw -6 deg, small shift), both in view 1's frame",
        },
        "machine": {
            "cpu": platform.processor() or platform.machine(), "nproc": os.cpu_count(),
            "torch": torch.__version__, "note": "shared 2-vCPU machine with other jobs running: timings noisy",
        },
        "pytorch3d_naive_cpu_reference": {
            "source": "../shared/golden/pytorch3d/timings_cpu_naive.json (PyTorch3D 0.7.9, 1 thread, same machine)",
            "rasterize_per_cloud_s": p3d_cloud["rasterize_points_naive_cpu"]["median_s"],
            "rasterize_pair_s": p3d_pair["rasterize_points_naive_cpu"]["median_s"],
            "composite_C384_pair_s": p3d_pair["alpha_composite_cpu_C384"]["median_s"],
            "render_total_C384_pair_s": p3d_pair["met3r_render_total_C384"]["median_s"],
        },
        "threads": {},
    }

    ndc = project_points(pts, focal, size)
    idx, _, dists = rasterize_points(ndc, size, RADIUS, K)
    cov = idx[..., 0] >= 0
    result["workload"]["coverage_per_cloud"] = cov.float().mean((1, 2)).tolist()
    result["workload"]["overlap_fraction"] = (cov[0] & cov[1]).float().mean().item()
    result["workload"]["hits_kept"] = int((idx >= 0).sum())
    result["workload"]["max_hits_per_pixel"] = int((idx >= 0).sum(-1).max())

    for threads in sorted({1, torch.get_num_threads()}):
        torch.set_num_threads(threads)
        t = {
            "project": _time(lambda: project_points(pts, focal, size), repeats),
            "rasterize": _time(lambda: rasterize_points(ndc, size, RADIUS, K), repeats),
            "composite_C384": _time(lambda: alpha_composite(idx, dists, feats, RADIUS), repeats),
            "composite_C3": _time(lambda: alpha_composite(idx, dists, feats[..., :3].contiguous(), RADIUS), repeats),
            "splat_C384": _time(lambda: splat(pts, feats, focal, size, RADIUS, K), repeats),
        }
        ras_cloud = t["rasterize"]["median_s"] / 2
        t["rasterize_per_cloud_s"] = ras_cloud
        t["speedup_rasterize_vs_pytorch3d"] = result["pytorch3d_naive_cpu_reference"]["rasterize_per_cloud_s"] / ras_cloud
        t["speedup_render_C384_vs_pytorch3d"] = (
            result["pytorch3d_naive_cpu_reference"]["render_total_C384_pair_s"] / t["splat_C384"]["median_s"]
        )
        t["peak_memory"] = {step: _memory(step, threads) for step in ("rasterize", "composite", "splat")}
        result["threads"][str(threads)] = t
    # The reference is timed single-threaded, like PyTorch3D's kernel.
    torch.set_num_threads(1)

    # All-pairs reference vs splatting on a smaller instance (same geometry, subsampled), same process.
    small, stride = 128, 2  # 16,384 points per cloud into 128 x 128
    sub_pts = pts.view(2, SIZE, SIZE, 3)[:, ::stride, ::stride].reshape(2, -1, 3).contiguous()
    sub_ndc = project_points(sub_pts, focal, (small, small))
    ref = naive_rasterize_points(sub_ndc, (small, small), RADIUS, K)
    fast = rasterize_points(sub_ndc, (small, small), RADIUS, K)
    equal = all(torch.equal(a, b) for a, b in zip(ref, fast))
    t_naive = _time(lambda: naive_rasterize_points(sub_ndc, (small, small), RADIUS, K), max(1, repeats // 2))
    t_fast = _time(lambda: rasterize_points(sub_ndc, (small, small), RADIUS, K), repeats)
    pairs = 2 * small * small * sub_pts.shape[1]
    ns_per_pair = t_naive["median_s"] / pairs * 1e9
    full_pairs_per_cloud = SIZE * SIZE * SIZE * SIZE
    result["all_pairs_reference"] = {
        "size": [small, small], "points_per_cloud": sub_pts.shape[1], "clouds": 2,
        "threads": torch.get_num_threads(), "outputs_bit_equal_to_splatting": equal,
        "naive_s": t_naive, "splatting_s": t_fast,
        "ns_per_pixel_point_pair": ns_per_pair,
        "extrapolated_full_size_per_cloud_s": ns_per_pair * full_pairs_per_cloud / 1e9,
        "extrapolation": "linear in pixels x points (the reference's cost is Theta(H*W*P) at fixed K)",
        "speedup_at_this_size": t_naive["median_s"] / t_fast["median_s"],
    }
    return result


def markdown(res: dict) -> str:
    p3d = res["pytorch3d_naive_cpu_reference"]
    w = res["workload"]
    lines = [
        "| threads | project (pair) | rasterize (pair) | rasterize / cloud | composite C=384 (pair) | composite C=3 (pair) "
        "| full splat C=384 (pair) | raster speedup vs PyTorch3D | render speedup vs PyTorch3D | peak extra RSS raster / composite / splat |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for threads, t in res["threads"].items():
        mem = t["peak_memory"]
        lines.append(
            f"| {threads} | {t['project']['median_s'] * 1e3:.1f} ms | {t['rasterize']['median_s'] * 1e3:.0f} ms "
            f"(min {t['rasterize']['min_s'] * 1e3:.0f}) "
            f"| {t['rasterize_per_cloud_s'] * 1e3:.0f} ms | {t['composite_C384']['median_s'] * 1e3:.0f} ms "
            f"| {t['composite_C3']['median_s'] * 1e3:.1f} ms | {t['splat_C384']['median_s'] * 1e3:.0f} ms "
            f"| {t['speedup_rasterize_vs_pytorch3d']:.0f}x | {t['speedup_render_C384_vs_pytorch3d']:.1f}x "
            f"| {mem['rasterize']['peak_growth_bytes'] / 2**20:.0f} / {mem['composite']['peak_growth_bytes'] / 2**20:.0f}"
            f" / {mem['splat']['peak_growth_bytes'] / 2**20:.0f} MiB |"
        )
    ref = res["all_pairs_reference"]
    lines += [
        "",
        f"Workload: 2 clouds x {w['points_per_cloud']:,} points, C = {w['features']}, {w['image'][0]}x{w['image'][1]}, "
        f"r = {w['radius_ndc']}, K = {w['points_per_pixel']}; coverage {w['coverage_per_cloud'][0]:.3f} / "
        f"{w['coverage_per_cloud'][1]:.3f}, overlap {w['overlap_fraction']:.3f}, {w['hits_kept']:,} kept hits, "
        f"max {w['max_hits_per_pixel']} per pixel. Medians of wall-clock runs (warm-up excluded). The machine has "
        "2 vCPUs shared with other jobs: with 2 torch threads it is oversubscribed whenever another job runs, and "
        "OpenMP threads then stall each other, so the 1-thread row is the meaningful one (it is also how the "
        "PyTorch3D CPU kernel runs: a plain single-threaded loop).",
        "",
        f"PyTorch3D 0.7.9 naive CPU (1 thread, same machine, from the golden timings): rasterize "
        f"{p3d['rasterize_per_cloud_s']:.2f} s per cloud ({p3d['rasterize_pair_s']:.1f} s per pair), composite C=384 "
        f"{p3d['composite_C384_pair_s']:.2f} s per pair, full MEt3R render C=384 {p3d['render_total_C384_pair_s']:.1f} s per pair.",
        "",
        f"All-pairs reference (`naive_rasterize_points`, {ref['threads']} threads) at {ref['size'][0]}x{ref['size'][1]} "
        f"with {ref['points_per_cloud']:,} points per cloud: {ref['naive_s']['median_s']:.2f} s vs "
        f"{ref['splatting_s']['median_s'] * 1e3:.1f} ms splatting ({ref['speedup_at_this_size']:.0f}x), outputs bit-equal: "
        f"{ref['outputs_bit_equal_to_splatting']}; {ref['ns_per_pixel_point_pair']:.2f} ns per (pixel, point) pair, "
        f"extrapolated linearly to {ref['extrapolated_full_size_per_cloud_s']:.1f} s per cloud at full size.",
        "",
        "Peak extra RSS = VmHWM after minus VmRSS before one cold run of the step in a fresh subprocess, with the "
        "high-water mark reset just before it (/proc/self/clear_refs); outputs included (the C=384 images alone "
        "are 192 MiB per pair, idx/zbuf/dists 30 MiB).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child, args.threads)
        return
    res = run(args.repeats)
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / "render_cpu.json").write_text(json.dumps(res, indent=1) + "\n")
    md = markdown(res)
    (HERE / "render_cpu.md").write_text("# Renderer on CPU\n\nGenerated by `python benchmarks/render_cpu.py`.\n\n" + md)
    print(md)


if __name__ == "__main__":
    main()
