"""Fused Triton kernels (met3r_metrics.kernels) against the exact PyTorch paths, and the dispatch rules.

The kernels are checked on CPU tensors through Triton's interpreter. ``TRITON_INTERPRET=1`` must be set
before triton is imported, so the comparison runs in a subprocess. Triton is in the ``dev`` extra: a missing
triton FAILS these tests (it does not skip them).

Tolerances (max abs diff): float32 results within 1e-5 x the magnitude scale of the sum (the same sum with
absolute values: FMA contraction and summation order may change last bits only); bfloat16/float16 outputs
within one output ulp (2**-7 resp. 2**-10 relative to that scale) of a float32 computation of the same
low-precision values, rounded once (the kernels multiply and accumulate in float32).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

import met3r_metrics.kernels as K


def _require_triton() -> None:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # pragma: no cover - the failure message is the point
        pytest.fail(
            f"triton is not importable ({exc!r}); it is part of the dev extra: pip install -e '.[dev]'",
            pytrace=False,
        )


_SCRIPT = textwrap.dedent(
    r"""
    import os
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    import torch.nn.functional as F
    from met3r_metrics.kernels.adaptive_conv_triton import adaptive_conv_taps_triton, range_logits_triton
    from met3r_metrics.kernels.composite_triton import alpha_composite_triton
    from met3r_metrics.models.adaptive_conv import _forward
    from met3r_metrics.render import alpha_composite

    g = torch.Generator().manual_seed(0)
    ULP = {torch.float32: 1e-5, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}
    failures = []

    def check(name, got, ref, scale, dtype):
        assert got.shape == ref.shape and got.dtype == ref.dtype, (name, got.shape, ref.shape, got.dtype, ref.dtype)
        diff = (got.double() - ref.double()).abs().max().item()
        tol = ULP[dtype] * max(1.0, float(scale))
        print(f"{name}: max abs diff {diff:.3e} tol {tol:.3e}")
        if not diff <= tol:
            failures.append(f"{name}: {diff} > {tol}")

    # ---- adaptive convolution: (B, C, H, W, kernel, input dtype, taps dtype, permuted taps)
    conv_cases = [
        (1, 8, 5, 7, 3, torch.float32, torch.float32, False),
        (2, 40, 13, 37, 7, torch.float32, torch.float32, True),
        (1, 33, 9, 6, 7, torch.bfloat16, torch.bfloat16, False),
        (2, 20, 7, 11, 7, torch.bfloat16, torch.float32, True),
        (1, 17, 6, 5, 7, torch.float16, torch.float16, False),
    ]
    for b, c, h, w, k, dti, dtt, perm in conv_cases:
        x = torch.randn(b, c, h + k - 1, w + k - 1, generator=g).to(dti)
        if perm:  # the permuted (B, H, W, I*J) view adaptive_conv() passes
            taps = torch.randn(b, h, w, k * k, generator=g).to(dtt).permute(0, 3, 1, 2)
        else:
            taps = torch.randn(b, k * k, h, w, generator=g).to(dtt)
        ref = _forward(x, taps, k, k)
        got = adaptive_conv_taps_triton(x, taps, k, k)
        scale = _forward(x.abs().float(), taps.abs().float(), k, k).abs().max()
        check(f"conv b{b} c{c} {h}x{w} k{k} {dti}/{dtt} perm={perm}", got, ref, scale, ref.dtype)
    # small blocks: several channel blocks and tiles, ragged edges
    x = torch.randn(1, 21, 10 + 6, 9 + 6, generator=g)
    taps = torch.randn(1, 49, 10, 9, generator=g)
    got = adaptive_conv_taps_triton(x, taps, 7, 7, block_c=8, tile_h=2, tile_w=4, num_warps=1)
    scale = _forward(x.abs(), taps.abs(), 7, 7).max()
    check("conv small blocks", got, _forward(x, taps, 7, 7), scale, torch.float32)

    # ---- JBU range logits: (B, C, H, W, dtype)
    for b, c, h, w, dt in [(2, 32, 11, 19, torch.float32), (1, 20, 6, 9, torch.float32), (1, 32, 7, 5, torch.bfloat16)]:
        proj = torch.randn(b, c, h, w, generator=g).to(dt)
        pad = F.pad(proj, (3, 3, 3, 3), mode="reflect")
        pad32, proj32 = pad.float(), proj.float()  # the kernel multiplies in float32, rounds once
        ref = torch.stack([(pad32[:, :, i:i + h, j:j + w] * proj32).sum(1) for i in range(7) for j in range(7)], 1)
        ref = ref.to(dt)
        got = range_logits_triton(pad, proj, 7)
        pf = pad.abs().float(); qf = proj.abs().float()
        scale = max((pf[:, :, i:i + h, j:j + w] * qf).sum(1).max().item() for i in range(7) for j in range(7))
        check(f"range b{b} c{c} {h}x{w} {dt}", got, ref, scale, dt)

    # ---- alpha compositing: (B, H, W, K, N points per cloud, C, dtype, idx dtype)
    comp_cases = [
        (2, 9, 11, 5, 30, 70, torch.float32, torch.int64),
        (1, 7, 4, 10, 12, 384, torch.float32, torch.int32),
        (3, 5, 6, 1, 8, 3, torch.float32, torch.int64),
        (1, 6, 9, 4, 20, 130, torch.bfloat16, torch.int64),
    ]
    for b, h, w, k, n, c, dt, it in comp_cases:
        cnt = torch.randint(0, k + 1, (b, h, w), generator=g)
        cnt[0, 0, 0] = 0  # at least one empty pixel
        cnt[-1, -1, -1] = k  # and one full one
        idx = torch.randint(0, b * n, (b, h, w, k), generator=g)
        idx[torch.arange(k)[None, None, None] >= cnt[..., None]] = -1  # filled contiguously from slot 0
        idx = idx.to(it)
        d = torch.rand(b, h, w, k, generator=g) * 1e-4  # radius 0.01 -> r*r = 1e-4
        f = torch.randn(b * n, c, generator=g).to(dt)
        got = alpha_composite_triton(idx, d, f, 0.01)
        assert got.is_contiguous(memory_format=torch.channels_last), "composite output must be channels-last"
        if dt == torch.float32:
            ref = alpha_composite(idx, d, f, 0.01)
        else:  # the exact path accumulates in the features' dtype; compare to fp32 accumulation, rounded once
            ref = alpha_composite(idx, d, f.float(), 0.01).to(dt)
        scale = alpha_composite(idx, d, f.abs().float(), 0.01, 0.0).max()
        check(f"composite b{b} {h}x{w} K{k} C{c} {dt} {it}", got, ref, scale, dt)
        assert (got[:, :, 0, 0][0] == -10000.0).all(), "background on empty pixels"

    if failures:
        raise SystemExit("FAILED:\n" + "\n".join(failures))
    print("ALL OK")
    """
)


def test_triton_kernels_match_exact_paths_interpreter():
    _require_triton()
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("MET3R_DISABLE_TRITON", None)
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    print(proc.stdout)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout + proc.stderr


def _fake(device: str = "cuda", requires_grad: bool = False) -> SimpleNamespace:
    return SimpleNamespace(device=torch.device(device), requires_grad=requires_grad)


def test_dispatch_rules(monkeypatch):
    _require_triton()
    monkeypatch.delenv("MET3R_DISABLE_TRITON", raising=False)
    assert K.triton_importable()
    # CPU tensors: exact path, always
    assert not K.should_use(torch.zeros(1), torch.zeros(1))
    assert not K.triton_available("cpu")
    # CUDA tensors (faked: only .device and .requires_grad are read)
    assert K.should_use(_fake(), _fake())
    assert not K.should_use(_fake(), _fake("cpu"))
    with torch.enable_grad():
        assert not K.should_use(_fake(), _fake(requires_grad=True))
    with torch.no_grad():
        assert K.should_use(_fake(), _fake(requires_grad=True))
    with K.enabled(False):
        assert not K.should_use(_fake())
    assert K.should_use(_fake())
    monkeypatch.setenv("MET3R_DISABLE_TRITON", "1")
    assert not K.should_use(_fake())


def test_cpu_paths_never_import_triton_kernels():
    """On CPU (with and without grads) the hooks take the exact path and never load the kernel modules;
    the package also works with triton unimportable."""
    code = textwrap.dedent(
        """
        import sys
        block = sys.argv[1] == "block"
        if block:
            sys.modules["triton"] = None  # import triton -> ImportError
        import torch
        import met3r_metrics, met3r_metrics.kernels as K
        from met3r_metrics.models.adaptive_conv import adaptive_conv_taps, _forward
        from met3r_metrics.models.featup import JBUStack
        from met3r_metrics.render import alpha_composite
        assert K.triton_importable() is (not block)
        x = torch.randn(1, 4, 11, 12); t = torch.randn(1, 49, 5, 6)
        assert torch.equal(adaptive_conv_taps(x, t, 7), _forward(x, t, 7, 7))
        xg = x.clone().requires_grad_()
        adaptive_conv_taps(xg, t, 7).sum().backward()
        stack = JBUStack(8)
        with torch.no_grad():
            stack(torch.randn(1, 8, 2, 2), torch.rand(1, 3, 32, 32))
        idx = torch.tensor([[[[0, 1], [-1, -1]]]]); d = torch.rand(1, 1, 2, 2) * 1e-4
        alpha_composite(idx, d, torch.randn(2, 3), 0.01)
        loaded = [m for m in sys.modules if m.startswith("met3r_metrics.kernels.")]
        assert not loaded, loaded
        print("OK")
        """
    )
    for mode in ("block", "normal"):
        proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "OK" in proc.stdout, (mode, proc.stdout + proc.stderr)
