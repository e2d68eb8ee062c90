"""Stage-by-stage parity of met3r-metrics against the official code, on real images, at several sizes.

Needs the official sources (MEt3R 3259e41, FeatUp 6b5a6c0, PyTorch3D 9381c40, dust3r's ``utils``) in a folder
given by ``--ref`` with ``build_ref.py`` beside them (it JIT-builds FeatUp's adaptive-conv op and PyTorch3D's
point rasterizer + compositor, unmodified). None of that code is part of met3r-metrics; it is imported here only
to compare against. Both implementations get the same seeded random full-size DINO + FeatUp weights (official
key names, strict loads), the same [-1, 1] images (scikit-image's astronaut, chelsea, coffee and
stereo_motorcycle, cropped into overlapping pairs) and the same smooth synthetic geometry (the
``benchmarks/synthetic.py`` surface, yaw 4 + 1.5 i degrees), so only features, focal, render and score are
compared. Exact float32 on both sides (TF32 off) unless ``--tf32``.

Stages (max |ours - official|):
  lr       DINO + ChannelNorm tokens (B, 384, h, w)
  up1..4   each JBU step, ours fed the official input of that step
  hr       the whole JBU stack + bilinear resize, ours fed the official lr
  frames   the scorer's production feature path (chunks, CUDA graphs, Triton) from the images
  focal    pixel focal (nan-median of the votes)
  render   the two composited renders (non-covered pixels 0), ours fed the official hr features
  score    per pair, end to end through ``met3r()``

    python benchmarks/official_parity.py --ref .ref --sizes 256 512 --out benchmarks/results/parity.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import types

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from met3r_metrics import met3r  # noqa: E402
from met3r_metrics.models.dino import DinoFeaturizer  # noqa: E402
from met3r_metrics.models.featup import UpsampledDino, build_upsampler, to_official_key  # noqa: E402
from met3r_metrics.precision import set_tf32  # noqa: E402
from met3r_metrics.scorer import MEt3RScorer  # noqa: E402
from met3r_metrics.settings import Settings  # noqa: E402
from met3r_metrics.weights import load_featup_dino  # noqa: E402


# ----------------------------------------------------------------------------------------------- inputs
def image_pairs(size: tuple[int, int]) -> tuple[list[str], torch.Tensor]:
    """(names, (P, 2, 3, H, W) in [-1, 1]): overlapping crops of real images, resized (antialiased) to ``size``."""
    import skimage.data as data

    def crop(img: np.ndarray, y: int, x: int, h: int, w: int, zoom: float = 1.0) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(img[..., :3])).permute(2, 0, 1).float() / 255.0
        hh, ww = int(round(h / zoom)), int(round(w / zoom))
        cy, cx = y + h // 2, x + w // 2
        t = t[:, cy - hh // 2 : cy - hh // 2 + hh, cx - ww // 2 : cx - ww // 2 + ww]
        t = F.interpolate(t[None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
        return (t.clamp(0, 1) * 255).round() / 255.0

    astro, cat, coffee = data.astronaut(), data.chelsea(), data.coffee()
    left, right, _ = data.stereo_motorcycle()
    pairs = {
        "astronaut": (crop(astro, 0, 0, 448, 448), crop(astro, 24, 40, 448, 448)),
        "chelsea": (crop(cat, 0, 0, 300, 300), crop(cat, 0, 50, 300, 300, zoom=1.03)),
        "coffee": (crop(coffee, 0, 60, 400, 400), crop(coffee, 0, 110, 400, 400, zoom=1.05)),
        "motorcycle": (crop(left, 0, 120, 500, 500), crop(right, 0, 120, 500, 500)),
    }
    views = torch.stack([torch.stack(p) for p in pairs.values()]) * 2 - 1
    return list(pairs), views


def surface(h: int, w: int, yaw_deg: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(pts (2, h, w, 3), conf (2, h, w)) of benchmarks/synthetic.py's surface with view 2 yawed by ``yaw_deg``."""
    from synthetic import smooth_surface_pair

    pts, conf = smooth_surface_pair(1, h, w, torch.device("cpu"), yaw_deg=yaw_deg)
    return pts[0], conf[0]


# ----------------------------------------------------------------------------------------------- weights
def random_featup_state(seed: int = 20250106) -> dict[str, torch.Tensor]:
    """Full-size dino16 + JBU weights (official FeatUp key names) from the golden featup recipe (float16-exact)."""
    g = torch.Generator().manual_seed(seed)
    model = UpsampledDino(DinoFeaturizer(depth=12, use_norm=True), build_upsampler("featup", 384))
    out = {}
    for name, p in model.state_dict().items():
        n = lambda m, s: torch.randn(p.shape, generator=g) * s + m  # noqa: E731
        if name.endswith(("pos_embed", "cls_token")):
            v = n(0, 0.5)
        elif "patch_embed.proj.weight" in name:
            v = n(0, 0.02)
        elif "norm" in name and name.endswith("weight"):
            v = n(1, 0.2)
        elif "norm" in name and name.endswith("bias"):
            v = n(0, 0.1)
        elif "qkv.weight" in name:
            v = n(0, 0.06)
        elif name.startswith("featurizer") and name.endswith("weight"):
            v = n(0, 0.03)
        elif name.startswith("featurizer") and name.endswith("bias"):
            v = n(0, 0.05)
        elif name.endswith("range_temp"):
            v = n(1.5, 0.5)
        elif name.endswith("sigma_spatial"):
            v = torch.rand(p.shape, generator=g) * 0.8 + 0.6
        elif name.endswith("weight"):
            fan_in = p[0].numel()
            v = (torch.rand(p.shape, generator=g) * 2 - 1) / math.sqrt(fan_in)
        else:
            v = n(0, 0.1)
        out[to_official_key(name)] = v.half().float()
    return out


# ----------------------------------------------------------------------------------------------- official side
class _SyntheticGeometry(nn.Module):
    """Stands in for MASt3R in the official forward: returns the given geometry in DUSt3R's output dicts."""

    def __init__(self, pts: torch.Tensor, conf: torch.Tensor) -> None:
        super().__init__()
        self.pts, self.conf = pts, conf  # (B, 2, H, W, 3), (B, 2, H, W)

    def forward(self, view1, view2):
        return ({"pts3d": self.pts[:, 0], "conf": self.conf[:, 0]},
                {"pts3d_in_other_view": self.pts[:, 1], "conf": self.conf[:, 1]})


def official_model(ref: str, state: dict[str, torch.Tensor], size: tuple[int, int], device: torch.device):
    """The official ``MEt3R`` object with FeatUp's modules holding ``state``; its ``backbone_model`` is set per call."""
    sys.path.insert(0, ref)
    import build_ref

    build_ref.build()
    if device.type == "cpu":
        _cpu_adaptive_conv_standin()
    import featup.featurizers.DINO as dino_mod
    from featup.layers import ChannelNorm
    from featup.upsamplers import JBUStack

    hub_load = torch.hub.load
    torch.hub.load = lambda *a, **k: dino_mod.vit_small(patch_size=16, num_classes=0)  # no download: random init
    try:
        featurizer = dino_mod.DINOFeaturizer("dino_vits16", 16, "token")
    finally:
        torch.hub.load = hub_load
    holder = nn.Module()
    holder.model = nn.Sequential(featurizer, ChannelNorm(384))
    holder.upsampler = JBUStack(384)
    holder.load_state_dict(state, strict=True)
    holder.to(device).eval().requires_grad_(False)

    import met3r.met3r as official
    from featup.util import norm
    from pytorch3d.renderer import AlphaCompositor

    m = official.MEt3R.__new__(official.MEt3R)
    nn.Module.__init__(m)
    m.img_size, m.upsampler, m.backbone, m.distance = size, "featup", "mast3r", "cosine"
    m.norm, m.feature_model, m.upsampler_model = norm, holder.model, holder.upsampler
    m.set_rasterizer(image_size=size, points_per_pixel=10, bin_size=0)
    m.compositor = AlphaCompositor()
    return m


def _cpu_adaptive_conv_standin() -> None:
    """FeatUp's CPU adaptive conv is a scalar loop (tens of minutes at 128x128): on CPU, for checking this
    script only, swap in the same sum out[b,c,y,x] = sum_ij f[b,y,x,i,j] in[b,c,y+i,x+j] in torch. GPU runs
    (the ones whose numbers count) use FeatUp's own CUDA kernel."""
    import featup.adaptive_conv_cuda.adaptive_conv as ac

    def forward(inp: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        b, h, w, k, _ = filters.shape
        out = torch.zeros(inp.shape[0], inp.shape[1], h, w, dtype=inp.dtype)
        for i in range(k):
            for j in range(k):
                out += filters[:, None, :, :, i, j] * inp[:, :, i : i + h, j : j + w]
        return out

    ac.cpp_impl = types.SimpleNamespace(forward=forward)


def _hook_steps(stack: nn.Module, store: dict[str, tuple]) -> list:
    hooks = []
    for k in ("up1", "up2", "up3", "up4"):
        def hook(mod, args, out, k=k):
            store[k] = (args[0].detach().clone(), args[1].detach().clone(), out.detach().clone())
        hooks.append(getattr(stack, k).register_forward_hook(hook))
    return hooks


def _maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


# ----------------------------------------------------------------------------------------------- run
def compare(ref: str, size: tuple[int, int], device: torch.device, ckpt: str, state: dict, tf32: bool) -> dict:
    names, views = image_pairs(size)
    h, w = size
    geo = [surface(h, w, 4 + 1.5 * i) for i in range(len(names))]
    pts = torch.stack([g[0] for g in geo]).to(device)
    conf = torch.stack([g[1] for g in geo]).to(device)
    views = views.to(device)
    m = official_model(ref, state, size, device)
    ours_feats = load_featup_dino(ckpt, device=device)
    precision = "tf32" if tf32 else "fp32"
    set_tf32(tf32)  # through the running torch's TF32 API (met3r_metrics.precision)
    rows = {}
    with torch.no_grad():
        # official end to end (its forward, unmodified), with its JBU steps recorded
        steps: dict[str, tuple] = {}
        hooks = _hook_steps(m.upsampler_model, steps)
        m.backbone_model = _SyntheticGeometry(pts, conf)
        images01 = (views.flatten(0, 1) + 1) / 2
        lr_off = m._get_features(images01)
        hr_off = m._interpolate(lr_off, images01)
        for hk in hooks:
            hk.remove()
        score_off, mask_off, _, proj_off = m(views, return_overlap_mask=True, return_score_map=True, return_projections=True)

        # ours, stage by stage
        lr = ours_feats.featurizer(images01)
        stage = {"lr": _maxabs(lr, lr_off)}
        for k, (src, guid, out) in steps.items():
            stage[k] = _maxabs(getattr(ours_feats.upsampler, k)(src, guid), out)
        stage["hr"] = _maxabs(ours_feats.upsampler(lr_off, images01), hr_off)
        settings = Settings.official(img_size=size, precision=precision, feature_weights=ckpt)
        scorer = MEt3RScorer(settings, None, ours_feats)
        frames = scorer.frame_features(views.flatten(0, 1))
        stage["frames"] = _maxabs(frames, hr_off)
        # render + score from the official features and the same geometry
        feats = hr_off.view(len(names), 2, *hr_off.shape[1:])
        out = scorer.render_pairs(pts, conf, feats, return_renders=True)
        focal_off = _official_focal(pts, conf, h, w)
        stage["focal_px"] = _maxabs(out["focal_px"], focal_off)
        stage["render"] = _maxabs(out["renders"], proj_off)
        stage["mask_diff_px"] = int((out["overlap_mask"] != mask_off.bool()).sum())
        stage["score_from_official_feats"] = _maxabs(out["score"], score_off)
        stage.update(_raster_diff(m, pts, out["focal_ndc"], size))

        # ours end to end through the public functional (production path)
        ours = []
        for i in range(len(names)):
            def net(i1, i2, i=i):
                n = i1.shape[0]
                return pts[i : i + 1].expand(n, -1, -1, -1, -1), conf[i : i + 1].expand(n, -1, -1, -1)
            net.__name__ = "synthetic_surface"
            ours.append(float(met3r(views[i : i + 1], backbone=net, feature_weights=ckpt, img_size=size,
                                    precision=precision)[0]))
    for i, name in enumerate(names):
        rows[name] = {"official": float(score_off[i]), "ours": ours[i], "diff": abs(ours[i] - float(score_off[i])),
                      "overlap": float(mask_off[i].float().mean())}
    return {"size": list(size), "precision": precision, "stages_max_abs": stage, "pairs": rows}


def _raster_diff(m, pts: torch.Tensor, focal_ndc: torch.Tensor, size: tuple[int, int]) -> dict:
    """PyTorch3D's projection + rasterizer (the official settings) against ours, same cameras and points."""
    from pytorch3d.renderer import PerspectiveCameras
    from pytorch3d.structures import Pointclouds

    from met3r_metrics.render import project_points
    from met3r_metrics.render.splatting import _rasterize_for_splat

    n = pts.shape[0]
    p = pts.reshape(2 * n, -1, 3)
    focal = focal_ndc.repeat_interleave(2, dim=0)
    R = torch.eye(3, device=p.device)
    R[0, 0] = R[1, 1] = -1
    cams = PerspectiveCameras(device=p.device, R=R.expand(2 * n, 3, 3), T=torch.zeros(2 * n, 3, device=p.device),
                              focal_length=focal)
    clouds = Pointclouds(points=p, features=torch.zeros_like(p))
    ndc_off = m.rasterizer.transform(clouds, cameras=cams).points_padded()
    frag = m.rasterizer(clouds, cameras=cams)
    ndc = project_points(p, focal, size)
    idx, dists = _rasterize_for_splat(ndc, size, 0.01, 10)
    idx2, dists2 = _rasterize_for_splat(ndc_off, size, 0.01, 10)
    same = idx == frag.idx.long()
    return {
        "raster_ndc": _maxabs(torch.nan_to_num(ndc, 0, 0, 0), torch.nan_to_num(ndc_off, 0, 0, 0)),
        "raster_idx_mismatch_px": int((~same).any(-1).sum()),
        "raster_idx_mismatch_px_same_ndc": int((idx2 != frag.idx.long()).any(-1).sum()),
        "raster_dists_same_idx": _maxabs(dists[same], frag.dists[same]),
        "raster_hit_px": int((frag.idx[..., 0] >= 0).sum()),
        "raster_full_k_px": int((frag.idx[..., -1] >= 0).sum()),
    }


def ties_check(ref: str, golden: str, device: torch.device) -> dict:
    """PyTorch3D's own naive rasterizer on inputs with exact depth ties against ours (default CUDA tie rule)
    on the same device: the golden ``ties_cpu_h8w8`` pixel, and random clouds with quantised depths."""
    sys.path.insert(0, ref)
    import build_ref

    build_ref.build()
    from pytorch3d.renderer.points.rasterize_points import rasterize_points as p3d_rasterize
    from pytorch3d.structures import Pointclouds
    from safetensors.torch import load_file

    from met3r_metrics.render import project_points, rasterize_points

    out = {}
    g = load_file(os.path.join(golden, "ties_cpu_h8w8.safetensors"))
    meta = json.load(open(os.path.join(golden, "ties_cpu_h8w8.json")))
    ndc = project_points(g["points_world"], g["focal_ndc"], (8, 8)).to(device)
    p3d = p3d_rasterize(Pointclouds(points=ndc), (8, 8), meta["radius_ndc"], 10, bin_size=0)[0]
    out["golden_ties_p3d"] = p3d[0, 3, 5].tolist()
    out["golden_ties_ours"] = rasterize_points(ndc, (8, 8), meta["radius_ndc"], 10)[0][0, 3, 5].tolist()
    out["golden_ties_simulated"] = meta["cuda_naive_kernel_simulated_idx_at_row3_col5"]
    gen = torch.Generator().manual_seed(0)
    cases = (((64, 64), 0.1, 4000), ((96, 160), 0.05, 20000), ((512, 512), 0.01, 262144))
    # on CPU PyTorch3D runs its CPU kernel (the CPU rule), all pairs: the small case only checks this script
    for size, r, n in cases if device.type == "cuda" else cases[:1]:
        ndc = torch.rand(2, n, 3, generator=gen) * 2 - 1
        ndc[..., 2] = 1 + torch.randint(0, 8, (2, n), generator=gen).float() / 8
        ndc = ndc.to(device)
        p3d = p3d_rasterize(Pointclouds(points=ndc), size, r, 10, bin_size=0)[0].long()
        p3d = torch.where(p3d >= 0, p3d, -1)
        ours = rasterize_points(ndc, size, r, 10)[0]
        cpu = rasterize_points(ndc, size, r, 10, tie_rule="cpu")[0]
        out[f"random_{size[0]}x{size[1]}"] = {
            "px": ours.shape[0] * size[0] * size[1],
            "mismatch_px_cuda_rule": int((ours != p3d).any(-1).sum()),
            "mismatch_px_cpu_rule": int((cpu != p3d).any(-1).sum()),
        }
    return out


def _official_focal(pts: torch.Tensor, conf: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The official focal, computed by the official forward's own code path (read back from its camera)."""
    from dust3r.utils.geometry import xy_grid

    confs11 = conf.unsqueeze(-1) - 0.999
    canon = (confs11 * pts).sum(1) / confs11.sum(1)
    pp = torch.tensor([w / 2, h / 2], device=canon.device)
    b = canon.shape[0]
    pixels = xy_grid(w, h, device=canon.device).view(1, -1, 2) - pp.view(-1, 1, 2)
    canon = canon.flatten(1, 2)
    u, v = pixels.unbind(dim=-1)
    x, y, z = canon.unbind(dim=-1)
    votes = torch.stack((((u * z) / x).view(b, -1), ((v * z) / y).view(b, -1)), dim=-1)
    return torch.nanmedian(votes, dim=-2)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ref", required=True, help="folder with the official sources and build_ref.py")
    ap.add_argument("--sizes", nargs="+", default=["256", "512"], help="HxW or S (square), e.g. 512 512x288")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tf32", action="store_true", help="TF32 on both sides instead of exact float32")
    ap.add_argument("--out", default=None, help="JSON file to write")
    ap.add_argument("--ties", default=None, metavar="GOLDEN_DIR",
                    help="also check the tie rule against PyTorch3D's rasterizer (folder with ties_cpu_h8w8.*)")
    args = ap.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    device = torch.device(args.device)
    state = random_featup_state()
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch": torch.__version__, "runs": []}
    if args.ties:
        results["ties"] = ties_check(args.ref, args.ties, device)
        print(json.dumps(results["ties"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = os.path.join(tmp, "featup_dino16_random.ckpt")
        torch.save({"state_dict": state}, ckpt)
        for s in args.sizes:
            hw = tuple(int(v) for v in s.split("x")) if "x" in s else (int(s), int(s))
            t0 = time.time()
            r = compare(args.ref, hw, device, ckpt, state, args.tf32)
            r["seconds"] = round(time.time() - t0, 1)
            results["runs"].append(r)
            print(json.dumps(r), flush=True)
    print(f"\n{'size':>9} {'pair':>11} {'official':>10} {'ours':>10} {'|diff|':>9}")
    for r in results["runs"]:
        for name, row in r["pairs"].items():
            print(f"{'x'.join(map(str, r['size'])):>9} {name:>11} {row['official']:10.6f} {row['ours']:10.6f} {row['diff']:9.2e}")
        print("  stages:", {k: (f"{v:.2e}" if isinstance(v, float) else v) for k, v in r["stages_max_abs"].items()})
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(markdown(results))


def markdown(results: dict) -> str:
    """The per-size table (worst pair, stage maxima) of a results dict, as markdown."""
    lines = [f"Official MEt3R (3259e41, PyTorch3D/FeatUp CUDA kernels) vs met3r-metrics on {results['device']}, "
             f"torch {results['torch']}, seeded random full-size DINO + JBU weights, 4 real-image pairs, synthetic "
             "geometry. Max |difference|.", "",
             "| size (HxW) | precision | worst pair score | lr feats | hr feats | production features | focal px "
             "| render | raster idx mismatch px (of hit px) | score from the official features |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results["runs"]:
        st = r["stages_max_abs"]
        worst = max(p["diff"] for p in r["pairs"].values())
        lines.append(f"| {r['size'][0]}x{r['size'][1]} | {r['precision']} | {worst:.1e} | {st['lr']:.1e} | {st['hr']:.1e} "
                     f"| {st['frames']:.1e} | {st['focal_px']:.1e} | {st['render']:.1e} "
                     f"| {st['raster_idx_mismatch_px']} ({st['raster_hit_px']}) | {st['score_from_official_feats']:.1e} |")
    if "ties" in results:
        lines += ["", "Tie rule against PyTorch3D's own rasterizer on the same device: " + json.dumps(results["ties"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
