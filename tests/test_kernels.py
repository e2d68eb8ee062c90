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
import warnings
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

import met3r_metrics.kernels as K
from met3r_metrics.models.adaptive_conv import adaptive_conv_taps


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
    from met3r_metrics.render import alpha_composite, composite_weights

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
        got = alpha_composite_triton(idx, composite_weights(idx.reshape(-1, k), d, 0.01), f)
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


@pytest.fixture
def fresh_triton_check():
    """triton_importable() is cached per process: forget the answer around the test."""
    K.triton_importable.cache_clear()
    yield
    K.triton_importable.cache_clear()


def test_broken_triton_install_warns_once_with_the_reason(monkeypatch, fresh_triton_check):
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "triton" or name.startswith("triton."):
            raise OSError("libcuda.so.1: cannot open shared object file\nsecond line")
        return real_import(name, *args, **kwargs)

    monkeypatch.delenv("MET3R_DISABLE_TRITON", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.warns(RuntimeWarning) as record:
        assert not K.should_use(_fake())  # CUDA tensors (faked): the first dispatch imports triton
        assert not K.should_use(_fake()) and not K.triton_importable()  # cached: no second warning
    assert len(record) == 1
    msg = str(record[0].message)
    assert "triton is installed but does not import (OSError: libcuda.so.1: cannot open shared object file)" in msg
    assert "fused CUDA kernels are off" in msg and "MET3R_DISABLE_TRITON=1" in msg and "second line" not in msg


def test_triton_not_installed_is_silent(monkeypatch, fresh_triton_check):
    monkeypatch.setitem(sys.modules, "triton", None)  # import triton -> ModuleNotFoundError(name='triton')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not K.triton_importable() and not K.should_use(_fake())


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


_BICUBIC_SCRIPT = textwrap.dedent(
    r"""
    import os
    assert os.environ.get("TRITON_INTERPRET") == "1"
    import torch
    import torch.nn.functional as F
    from met3r_metrics.kernels.bicubic_triton import COEFFS_T025, bicubic2x_reflect_pad

    # The kernel's constant coefficients are PyTorch's cubic convolution (A = -0.75) at t = 0.25, bit for bit.
    A, t = torch.tensor(-0.75), torch.tensor(0.25)
    cc1 = lambda x: ((A + 2) * x - (A + 3)) * x * x + 1
    cc2 = lambda x: ((A * x - 5 * A) * x + 8 * A) * x - 4 * A
    assert [cc2(t + 1.0).item(), cc1(t).item(), cc1(1.0 - t).item(), cc2(1.0 - t + 1.0).item()] == list(COEFFS_T025)

    def cuda_order(x, pad):
        # CUDA upsample_bicubic2d's arithmetic, unfused: 4 x-interpolations, then one along y; then reflect pad.
        def taps(n_in, pad):
            n = 2 * n_in
            u = torch.arange(n + 2 * pad) - pad
            u = torch.where(u < 0, -u, u)
            u = torch.where(u >= n, 2 * (n - 1) - u, u)
            real = (u.double() + 0.5) * 0.5 - 0.5
            base = torch.floor(real).long()
            odd = (real - base) == 0.25
            cs = torch.tensor(COEFFS_T025)
            w = torch.where(odd[:, None], cs, cs.flip(0))
            idx = [(base - 1 + k).clamp(0, n_in - 1) for k in range(4)]
            return idx, [w[:, k] for k in range(4)]

        (r, wy), (c, wx) = taps(x.shape[2], pad), taps(x.shape[3], pad)
        rows = []
        for k in range(4):
            xr = x[:, :, r[k]]
            acc = xr[..., c[0]] * wx[0]
            for j in range(1, 4):
                acc = acc + xr[..., c[j]] * wx[j]
            rows.append(acc)
        out = rows[0] * wy[0][:, None]
        for k in range(1, 4):
            out = out + rows[k] * wy[k][:, None]
        return out

    g = torch.Generator().manual_seed(0)
    failures = []
    # (B, C, h, w, pad, non-contiguous, tile config)
    cases = [
        (1, 3, 2, 2, 3, False, {}),
        (2, 5, 3, 7, 3, False, {}),
        (1, 4, 9, 2, 3, True, {}),
        (2, 7, 5, 4, 1, True, {"tile_h": 4, "tile_w": 8, "num_warps": 1}),
        (1, 2, 6, 11, 3, False, {"tile_h": 2, "tile_w": 16, "num_warps": 1}),
    ]
    for b, c, h, w, pad, noncontig, cfg in cases:
        if noncontig:  # channels-last-like permuted view
            x = torch.randn(b, h, w, c, generator=g).permute(0, 3, 1, 2)
        else:
            x = torch.randn(b, c, h, w, generator=g) * 3
        assert x.is_contiguous() is not noncontig
        got = bicubic2x_reflect_pad(x, pad, **cfg)
        ref = F.pad(F.interpolate(x, (2 * h, 2 * w), mode="bicubic", align_corners=False), (pad,) * 4, mode="reflect")
        emu = cuda_order(x, pad)
        name = f"bicubic b{b} c{c} {h}x{w} pad{pad} noncontig={noncontig} {cfg}"
        if got.shape != ref.shape or got.dtype != torch.float32 or not got.is_contiguous():
            failures.append(f"{name}: shape/dtype/layout {tuple(got.shape)} {got.dtype}")
            continue
        scale = x.abs().max().item()
        diff = (got.double() - ref.double()).abs().max().item()
        diff_emu = (got.double() - emu.double()).abs().max().item()
        tol = 1e-6 * max(1.0, scale) * 2  # a few float32 ulps of the input scale
        print(f"{name}: max|diff| vs F.interpolate+pad {diff:.3e} (scale {scale:.2f}, tol {tol:.1e}); vs CUDA order {diff_emu:.3e}")
        if not diff <= tol:
            failures.append(f"{name}: {diff} > {tol}")
        if diff_emu != 0.0:  # the interpreter does not fuse multiply-adds: the same op order gives the same bits
            failures.append(f"{name}: differs from the CUDA-order emulation by {diff_emu}")

    if failures:
        raise SystemExit("FAILED:\n" + "\n".join(failures))
    print("ALL OK")
    """
)


def test_bicubic2x_reflect_pad_matches_exact_path_interpreter():
    """Fused x2 bicubic + reflect pad vs F.pad(F.interpolate(bicubic), reflect): h or w = 2, non-square,
    batch > 1, non-contiguous input, several tile configurations (ragged tiles)."""
    _require_triton()
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("MET3R_DISABLE_TRITON", None)
    proc = subprocess.run(
        [sys.executable, "-c", _BICUBIC_SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    print(proc.stdout)
    assert proc.returncode == 0 and "ALL OK" in proc.stdout, proc.stdout + proc.stderr


def test_bicubic_dispatch(monkeypatch):
    """JBULearnedRange.forward: the fused bicubic path only for float32, exact x2, CUDA, no autograd."""
    _require_triton()
    from met3r_metrics.models.featup import JBULearnedRange, _use_triton_bicubic

    monkeypatch.delenv("MET3R_DISABLE_TRITON", raising=False)

    def fake(shape, dtype=torch.float32, device="cuda", requires_grad=False):
        return SimpleNamespace(
            shape=torch.Size(shape), dtype=dtype, device=torch.device(device), requires_grad=requires_grad,
            dim=lambda: len(shape),
        )

    assert _use_triton_bicubic(fake((2, 384, 8, 8)), 16, 16, 3)
    assert _use_triton_bicubic(fake((1, 5, 2, 3)), 4, 6, 3)
    assert not _use_triton_bicubic(fake((2, 384, 8, 8)), 16, 17, 3)  # not exactly x2
    assert not _use_triton_bicubic(fake((2, 384, 8, 8)), 24, 24, 3)
    assert not _use_triton_bicubic(fake((2, 384, 8, 8), torch.bfloat16), 16, 16, 3)
    assert not _use_triton_bicubic(fake((2, 384, 8, 8), device="cpu"), 16, 16, 3)
    assert not _use_triton_bicubic(fake((1, 5, 1, 4)), 2, 8, 3)  # reflect pad 3 >= 2
    with torch.enable_grad():
        assert not _use_triton_bicubic(fake((2, 4, 8, 8), requires_grad=True), 16, 16, 3)
    with K.enabled(False):
        assert not _use_triton_bicubic(fake((2, 4, 8, 8)), 16, 16, 3)
    monkeypatch.setenv("MET3R_DISABLE_TRITON", "1")
    assert not _use_triton_bicubic(fake((2, 4, 8, 8)), 16, 16, 3)
    monkeypatch.delenv("MET3R_DISABLE_TRITON")

    # CPU tensors: the exact F.interpolate + F.pad path, bit for bit.
    torch.manual_seed(0)
    step = JBULearnedRange(key_dim=8).eval()
    src, guid = torch.randn(2, 6, 2, 3), torch.rand(2, 3, 4, 6)
    with torch.no_grad():
        got = step(src, guid)
        hr = F.pad(F.interpolate(src, (4, 6), mode="bicubic", align_corners=False), (3,) * 4, mode="reflect")
        ref = adaptive_conv_taps(hr, step.kernel(guid), 7)
    assert torch.equal(got, ref)
