"""Fused Triton kernels vs the exact PyTorch paths on one GPU: max abs diff and CUDA-event timings.

Run on the GPU machine::

    PYTHONPATH=. python benchmarks/kernels_gpu.py --out results_dir

Cases (defaults = MEt3R at 256x256, 16 pairs = 32 frames / clouds, DINO dim 384):

* ``conv``: the last JBU step's adaptive convolution, hr (32, 384, 262, 262) x taps (32, 49, 256, 256).
* ``range_logits``: the last JBU step's range-kernel logits, proj (32, 32, 256, 256).
* ``bicubic_pad``: the last JBU step's x2 bicubic upsampling + reflect pad 3, source (32, 384, 128, 128) ->
  (32, 384, 262, 262): ``F.pad(F.interpolate(bicubic), reflect)`` vs the fused ``bicubic2x_reflect_pad``.
* ``jbu_step``: one ``JBULearnedRange`` forward 128x128 -> 256x256 (random init; float32 source, so the
  fused bicubic path runs when the kernels are on).
* ``composite``: ``alpha_composite`` of 32 clouds x 256x256 x K=10, C=384 (synthetic idx with the locality of
  a render: slot k of pixel p points near point p of its own cloud; ~10% empty pixels).
* ``jbu_stack`` / ``jbu_stack_bf16``: ``JBUStack(384)`` on (32, 384, 16, 16) + (32, 3, 256, 256) guidance,
  float32 and under bfloat16 autocast.

Each is timed with the kernels on and off (median of 5 CUDA-event timings after 2 warm-ups); ``--sweep`` also
times a few block configurations of the conv and composite kernels. Prints a table and writes
``kernels_gpu.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import met3r_metrics.kernels as kernels  # noqa: E402
from met3r_metrics.precision import set_tf32  # noqa: E402
from met3r_metrics.models.adaptive_conv import _forward, adaptive_conv_taps  # noqa: E402
from met3r_metrics.models.featup import JBULearnedRange, JBUStack, _use_triton_bicubic  # noqa: E402
from met3r_metrics.render import alpha_composite  # noqa: E402
from benchmarks.timing import event_ms  # noqa: E402


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return max_diff(a, b) / max(1e-30, b.float().abs().max().item())


def compare(name: str, fast, exact, results: dict, **extra) -> None:
    """fast/exact: zero-arg callables; records diffs and timings (exact timed with kernels disabled)."""
    with torch.no_grad():
        with kernels.enabled(True):
            a = fast()
        with kernels.enabled(False):
            b = exact()
        diff, rel = max_diff(a, b), rel_diff(a, b)
        del a, b
        torch.cuda.empty_cache()
        with kernels.enabled(True):
            t_fast = event_ms(fast)
        with kernels.enabled(False):
            t_exact = event_ms(exact)
    results[name] = {
        "triton_ms": t_fast,
        "exact_ms": t_exact,
        "speedup": t_exact / t_fast,
        "max_abs_diff": diff,
        "max_rel_diff": rel,
        **extra,
    }
    print(f"{name:<18} {t_exact:10.3f} {t_fast:10.3f} {t_exact / t_fast:8.1f}x  {diff:10.3e} {rel:10.3e}", flush=True)
    torch.cuda.empty_cache()


def synthetic_composite_inputs(b: int, h: int, w: int, k: int, c: int, dev: torch.device, seed: int = 0):
    g = torch.Generator(device=dev).manual_seed(seed)
    n = h * w
    m = torch.arange(n, device=dev)
    count = torch.randint(0, k + 1, (b, h, w), device=dev, generator=g)
    count = torch.where(torch.rand(b, h, w, device=dev, generator=g) < 0.1, 0, torch.clamp(count, min=1))
    offs = torch.randint(-2 * w - 2, 2 * w + 3, (b, h, w, k), device=dev, generator=g)
    idx = (m.view(1, h, w, 1) + offs).clamp(0, n - 1) + (torch.arange(b, device=dev) * n).view(b, 1, 1, 1)
    idx = torch.where(torch.arange(k, device=dev) < count[..., None], idx, -1)
    dists = torch.rand(b, h, w, k, device=dev, generator=g).sort(-1).values * 1e-4
    feats = torch.randn(b * n, c, device=dev, generator=g)
    return idx, dists, feats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--sweep", action="store_true", help="also time a few kernel block configurations")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("kernels_gpu.py needs a CUDA device")
    dev = torch.device("cuda")
    set_tf32(False)  # through the running torch's TF32 API (met3r_metrics.precision)
    assert kernels.triton_available(dev), "triton does not import"
    import triton

    B, S, C = args.frames, args.size, args.dim
    results: dict = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "frames": B,
        "size": S,
        "dim": C,
        "cases": {},
        "sweep": {},
    }
    cases = results["cases"]
    print(f"{results['device']}  torch {torch.__version__}  triton {triton.__version__}")
    print(f"{'case':<18} {'exact ms':>10} {'triton ms':>10} {'speedup':>9}  {'max|diff|':>10} {'rel':>10}")
    torch.manual_seed(0)

    # --- adaptive conv of the last JBU step
    hr = torch.randn(B, C, S + 6, S + 6, device=dev)
    taps = torch.softmax(torch.randn(B, 49, S, S, device=dev), 1)
    compare("conv", lambda: adaptive_conv_taps(hr, taps, 7), lambda: adaptive_conv_taps(hr, taps, 7), cases)
    if args.sweep:
        from met3r_metrics.kernels.adaptive_conv_triton import adaptive_conv_taps_triton

        ref = _forward(hr, taps, 7, 7)
        for bc, th, tw, nw in [(16, 4, 32, 4), (32, 4, 32, 4), (32, 8, 32, 8), (64, 4, 32, 8), (32, 2, 64, 4), (64, 8, 32, 8)]:
            fn = lambda: adaptive_conv_taps_triton(hr, taps, 7, 7, block_c=bc, tile_h=th, tile_w=tw, num_warps=nw)  # noqa: E731
            key = f"conv bc{bc} t{th}x{tw} w{nw}"
            results["sweep"][key] = {"ms": event_ms(fn), "max_abs_diff": max_diff(fn(), ref)}
            print(f"  sweep {key:<28} {results['sweep'][key]['ms']:8.3f} ms", flush=True)
        del ref
    hr_bf, taps_bf = hr.bfloat16(), taps.bfloat16()
    compare("conv_bf16", lambda: adaptive_conv_taps(hr_bf, taps_bf, 7), lambda: adaptive_conv_taps(hr_bf, taps_bf, 7), cases)
    del hr, taps, hr_bf, taps_bf
    torch.cuda.empty_cache()

    # --- range logits / whole JBU step
    step = JBULearnedRange().to(dev).eval().requires_grad_(False)
    guid = torch.rand(B, 3, S, S, device=dev)
    compare("range_kernel", lambda: step.range_kernel(guid), lambda: step.range_kernel(guid), cases)
    src = torch.randn(B, C, S // 2, S // 2, device=dev)

    def bicubic_pad():
        if kernels.should_use(src):
            from met3r_metrics.kernels.bicubic_triton import bicubic2x_reflect_pad

            return bicubic2x_reflect_pad(src, 3)
        return F.pad(F.interpolate(src, (S, S), mode="bicubic", align_corners=False), (3, 3, 3, 3), mode="reflect")

    hp = S + 6
    compare(
        "bicubic_pad", bicubic_pad, bicubic_pad, cases,
        bytes_min=src.numel() * 4 + B * C * hp * hp * 4,  # read source once + write padded output once
        bytes_exact=src.numel() * 4 + 2 * B * C * S * S * 4 + B * C * hp * hp * 4,  # + unpadded write & re-read
    )
    compare(
        "jbu_step", lambda: step(src, guid), lambda: step(src, guid), cases,
        fused_bicubic=_use_triton_bicubic(src, S, S, step.radius),
    )
    del src, step
    torch.cuda.empty_cache()

    # --- compositing
    idx, dists, feats = synthetic_composite_inputs(B, S, S, 10, C, dev)
    compare("composite", lambda: alpha_composite(idx, dists, feats, 0.01), lambda: alpha_composite(idx, dists, feats, 0.01), cases)
    if args.sweep:
        from met3r_metrics.kernels.composite_triton import alpha_composite_triton
        from met3r_metrics.render import composite_weights

        weights = composite_weights(idx.reshape(-1, idx.shape[-1]), dists, 0.01)  # the kernel's input
        with kernels.enabled(False):
            ref = alpha_composite(idx, dists, feats, 0.01)
        for bm, bc, nw in [(16, 128, 4), (32, 128, 4), (64, 64, 4), (64, 128, 8), (32, 256, 8), (128, 64, 8)]:
            fn = lambda: alpha_composite_triton(idx, weights, feats, block_m=bm, block_c=bc, num_warps=nw)  # noqa: E731
            key = f"composite bm{bm} bc{bc} w{nw}"
            results["sweep"][key] = {"ms": event_ms(fn), "max_abs_diff": max_diff(fn(), ref)}
            print(f"  sweep {key:<28} {results['sweep'][key]['ms']:8.3f} ms", flush=True)
        del ref, weights
    del idx, dists, feats
    torch.cuda.empty_cache()

    # --- whole JBU stack
    stack = JBUStack(C).to(dev)
    lr = torch.randn(B, C, S // 16, S // 16, device=dev)
    # float32 sources at every step: the fused bicubic path runs in all 4 steps when the kernels are on.
    fused = _use_triton_bicubic(lr, 2 * lr.shape[-2], 2 * lr.shape[-1], 3)
    compare("jbu_stack", lambda: stack(lr, guid), lambda: stack(lr, guid), cases, fused_bicubic=fused)

    def bf16_stack():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return stack(lr, guid)

    compare("jbu_stack_bf16", bf16_stack, bf16_stack, cases)

    pairs = B / 2
    print("\nper pair (ms):", ", ".join(f"{k} {v['exact_ms'] / pairs:.2f} -> {v['triton_ms'] / pairs:.2f}" for k, v in cases.items()))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels_gpu.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'kernels_gpu.json'}")


if __name__ == "__main__":
    main()
