"""Renderer properties on random inputs: the forward splatter equals the all-pairs reference bit for bit
(boundaries, ties, K overflow, big radii, chunking, float64), the compositor equals a scalar float32 loop,
and gradients reach the features."""

import numpy as np
import pytest
import torch

from met3r_metrics.render import (
    alpha_composite,
    pixel_centers_ndc,
    project_points,
    rasterize_points,
    splat,
)
from met3r_metrics.render_reference import cuda_kernel_rasterize_points, naive_rasterize_points


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64)


def _assert_same(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> None:
    for name, x, y in zip(("idx", "zbuf", "dists"), a, b):
        assert x.shape == y.shape and x.dtype == y.dtype, name
        assert torch.equal(_bits(x), _bits(y)), f"{name}: {(_bits(x) != _bits(y)).sum().item()} entries differ"


def _hard_points(
    gen: torch.Generator, B: int, N: int, H: int, W: int, radius: float, dtype=torch.float32
) -> torch.Tensor:
    """NDC points mixing the cases that break splatters: exact boundary distances, pixel centres, heavy
    z ties, clusters that overflow K, points outside the image, behind the camera, z = 0 and NaN."""
    S = min(H, W)
    y_of_row, x_of_col = pixel_centers_ndc((H, W), dtype)
    r = torch.tensor(radius, dtype=dtype)
    ext = torch.tensor([W / S, H / S], dtype=dtype)
    xy = (torch.rand(B, N, 2, generator=gen, dtype=dtype) * 2.4 - 1.2) * ext
    kind = torch.randint(0, 6, (B, N), generator=gen)
    rows = torch.randint(0, H, (B, N), generator=gen)
    cols = torch.randint(0, W, (B, N), generator=gen)
    centre = torch.stack((x_of_col[cols], y_of_row[rows]), -1)
    sign = torch.randint(0, 2, (B, N, 2), generator=gen) * 2 - 1
    xy = torch.where((kind == 1)[..., None], centre, xy)  # exactly on a pixel centre
    on_rim = centre.clone()
    on_rim[..., 0] = on_rim[..., 0] + sign[..., 0] * r  # d = r (up to rounding) along x
    xy = torch.where((kind == 2)[..., None], on_rim, xy)
    jitter = (torch.rand(B, N, 2, generator=gen, dtype=dtype) - 0.5) * (0.6 * r)
    cluster = centre[:, :1] + jitter  # all near one pixel per cloud: K overflow
    xy = torch.where((kind == 3)[..., None], cluster, xy)
    # Depths on a coarse grid: many exact ties between points hitting the same pixel.
    z = torch.randint(0, 6, (B, N), generator=gen).to(dtype) * 0.5
    z = torch.where(kind == 4, -z - 0.25, z)  # behind the camera
    z = torch.where(torch.rand(B, N, generator=gen) < 0.02, torch.zeros((), dtype=dtype), z)
    pts = torch.cat((xy, z[..., None]), -1)
    if N > 3:
        pts[:, 0, :2] = float("nan")  # what z = 0 projects to
        pts[:, 1, 0] = float("inf")
        pts[:, 2, 2] = -0.0
    return pts


CONFIGS = [
    # (B, N, H, W, radius, K)
    (2, 300, 16, 16, 0.1, 10),
    (1, 400, 7, 13, 0.2, 3),
    (2, 400, 13, 7, 0.2, 10),
    (1, 200, 9, 9, 0.5, 4),  # footprint ~ the whole image
    (1, 50, 5, 6, 3.0, 10),  # disc larger than the image
    (2, 500, 24, 40, 0.08, 10),
    (1, 300, 32, 32, 0.0625, 1),  # r * S = 2: window bounds land on integers
    (1, 1, 1, 1, 0.5, 2),
]


@pytest.mark.parametrize("B,N,H,W,radius,K", CONFIGS)
def test_splatter_equals_all_pairs_reference(B: int, N: int, H: int, W: int, radius: float, K: int) -> None:
    gen = torch.Generator().manual_seed(B * 1000 + N + H * 7 + W)
    ndc = _hard_points(gen, B, N, H, W, radius)
    # CPU tie rule against the all-pairs reference
    ref = naive_rasterize_points(ndc, (H, W), radius, K)
    _assert_same(rasterize_points(ndc, (H, W), radius, K, tie_rule="cpu"), ref)
    # Tiny chunks exercise the chunk loop and the intermediate top-K merges.
    _assert_same(rasterize_points(ndc, (H, W), radius, K, chunk_size=37, tie_rule="cpu"), ref)
    _assert_same(naive_rasterize_points(ndc, (H, W), radius, K, chunk_size=100), ref)
    # The sync-free dense pass (the accelerator default) gives the same slots, bit for bit.
    _assert_same(rasterize_points(ndc, (H, W), radius, K, dense=True, tie_rule="cpu"), ref)
    # The default CUDA tie rule against the CUDA kernel's loop, on every path
    cuda_ref = cuda_kernel_rasterize_points(ndc, (H, W), radius, K)
    for kw in ({}, {"chunk_size": 37}, {"dense": True}):
        _assert_same(rasterize_points(ndc, (H, W), radius, K, **kw), cuda_ref)


def test_float64_path_equals_reference() -> None:
    gen = torch.Generator().manual_seed(3)
    ndc = _hard_points(gen, 2, 300, 12, 17, 0.15, dtype=torch.float64)
    ref = naive_rasterize_points(ndc, (12, 17), 0.15, 5)
    out = rasterize_points(ndc, (12, 17), 0.15, 5, chunk_size=64, tie_rule="cpu")
    for x, y in zip(out, ref):
        assert torch.equal(x, y)
    assert out[2].dtype == torch.float64
    for x, y in zip(rasterize_points(ndc, (12, 17), 0.15, 5, dense=True, tie_rule="cpu"), ref):
        assert torch.equal(x, y)
    for x, y in zip(rasterize_points(ndc, (12, 17), 0.15, 5), cuda_kernel_rasterize_points(ndc, (12, 17), 0.15, 5)):
        assert torch.equal(x, y)


def test_dense_pass_only_when_it_fits_and_keeps_gradients() -> None:
    """The dense pass falls back to the chunked one past chunk_size, and zbuf/dists still reach ndc."""
    gen = torch.Generator().manual_seed(11)
    ndc = _hard_points(gen, 2, 300, 16, 16, 0.1)
    ref = naive_rasterize_points(ndc, (16, 16), 0.1, 10)
    _assert_same(rasterize_points(ndc, (16, 16), 0.1, 10, dense=True, chunk_size=50, tie_rule="cpu"), ref)  # chunked
    leaf = ndc.clone().nan_to_num_(0.0, 0.0, 0.0).requires_grad_(True)
    _, zbuf, dists = rasterize_points(leaf, (16, 16), 0.1, 10, dense=True)
    (zbuf.clamp(min=0).sum() + dists.clamp(min=0).sum()).backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


def test_output_invariants() -> None:
    gen = torch.Generator().manual_seed(5)
    ndc = _hard_points(gen, 2, 600, 20, 20, 0.12)
    idx, zbuf, dists = rasterize_points(ndc, (20, 20), 0.12, 10)
    empty = idx < 0
    assert torch.equal(empty, zbuf == -1) and torch.equal(empty, dists == -1)
    # Contiguous fill and ascending depth.
    assert not (empty[..., :-1] & ~empty[..., 1:]).any()
    z = torch.where(empty, torch.inf, zbuf)
    assert (z[..., 1:] >= z[..., :-1]).all()
    # Packed indices stay within their own cloud; hits are strictly inside the disc.
    cloud = torch.arange(2)[:, None, None, None].expand_as(idx)
    assert torch.equal((idx // 600)[~empty], cloud[~empty])
    r2 = torch.tensor(0.12, dtype=torch.float32) ** 2
    assert (dists[~empty] < r2).all() and (zbuf[~empty] >= 0).all()


def test_empty_and_culled_clouds() -> None:
    for ndc in (torch.zeros(2, 0, 3), torch.tensor([[[0.0, 0.0, -1.0], [0.0, 0.0, -1e-9]]])):
        B = ndc.shape[0]
        idx, zbuf, dists = rasterize_points(ndc, (4, 5))
        assert idx.shape == (B, 4, 5, 10) and (idx == -1).all() and (zbuf == -1).all() and (dists == -1).all()
        feats = torch.randn(B, ndc.shape[1], 3)
        img = alpha_composite(idx, dists, feats, 0.01)
        assert img.shape == (B, 3, 4, 5) and (img == -10000).all()


def test_pixel_centres() -> None:
    y, x = pixel_centers_ndc((256, 256))
    j = torch.arange(256, dtype=torch.float32)
    assert torch.equal(x, (255 - 2 * j) / 256) and torch.equal(y, x)
    y, x = pixel_centers_ndc((24, 40))  # shorter side spans [-1, 1], pixels square in NDC
    assert y[0] == pytest.approx(23 / 24, abs=1e-7) and x[0] == pytest.approx(39 / 24, abs=1e-6)
    assert torch.allclose(x[:-1] - x[1:], torch.full((39,), 2 / 24), atol=1e-6)


def test_projection_orientation_and_depth() -> None:
    # A point right of and below the axis (OpenCV) lands right of and below the image centre.
    pts = torch.tensor([[[0.5, 0.25, 2.0], [0.0, 0.0, 1e-7], [1.0, 1.0, -1.0]]])
    ndc = project_points(pts, torch.tensor([[2.0, 3.0]]), (8, 8))
    assert ndc[0, 0].tolist() == [-0.5, -0.375, 2.0]
    assert ndc[0, 1].tolist() == [0.0, 0.0, pytest.approx(1e-7)]
    idx, _, _ = rasterize_points(ndc, (8, 8), radius=0.2)
    hit = (idx[0, ..., 0] == 0).nonzero()
    assert (hit[:, 0] > 3.5).all() and (hit[:, 1] > 3.5).all()
    assert not (idx == 2).any()  # behind the camera: culled


def _composite_loop(idx, dists, feats, radius, background):
    """PyTorch3D's CPU compositor as a scalar float32 loop (numpy float32 scalars round like the kernel)."""
    B, H, W, K = idx.shape
    C = feats.shape[-1]
    f = feats.reshape(-1, C).numpy()
    d = dists.numpy()
    r2 = np.float32(radius * radius)
    out = np.zeros((B, C, H, W), dtype=np.float32)
    for b in range(B):
        for i in range(H):
            for j in range(W):
                if idx[b, i, j, 0] < 0:
                    out[b, :, i, j] = np.float32(background)
                    continue
                for c in range(C):
                    acc, T = np.float32(0.0), np.float32(1.0)
                    for k in range(K):
                        n = int(idx[b, i, j, k])
                        if n < 0:
                            continue
                        a = np.float32(1.0) - d[b, i, j, k] / r2
                        acc = acc + (T * a) * f[n, c]
                        T = T * (np.float32(1.0) - a)
                    out[b, c, i, j] = acc
    return torch.from_numpy(out)


def test_compositor_equals_scalar_loop() -> None:
    gen = torch.Generator().manual_seed(11)
    radius = 0.3
    ndc = _hard_points(gen, 2, 120, 6, 7, radius)
    idx, _, dists = rasterize_points(ndc, (6, 7), radius, 4)
    feats = torch.randn(2, 120, 5, generator=gen)
    expected = _composite_loop(idx, dists, feats, radius, -10000.0)
    for block_rows in (None, 1, 5):
        got = alpha_composite(idx, dists, feats, radius, block_rows=block_rows)
        assert torch.equal(_bits(got), _bits(expected))
    packed = alpha_composite(idx, dists, feats.reshape(-1, 5), radius)
    assert torch.equal(_bits(packed), _bits(expected))
    # Background only where slot 0 is empty; weights < 1 are not normalised away.
    assert torch.equal((expected == -10000).all(1), idx[..., 0] < 0)


def test_gradcheck_features() -> None:
    gen = torch.Generator().manual_seed(2)
    radius = 0.25
    ndc = _hard_points(gen, 2, 40, 5, 6, radius)
    idx, _, dists = rasterize_points(ndc, (5, 6), radius, 3)
    assert (idx[..., 1] >= 0).any()  # multi-hit pixels make the transmittance matter
    feats = torch.randn(2, 40, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: alpha_composite(idx, dists, f, radius), (feats,))


def test_gradcheck_splat_features_and_dists() -> None:
    gen = torch.Generator().manual_seed(4)
    pts = torch.cat((torch.rand(1, 30, 2, generator=gen) - 0.5, 1 + torch.rand(1, 30, 1, generator=gen)), -1)
    pts = pts.double()
    focal = torch.tensor([[2.0, 2.0]], dtype=torch.float64)
    feats = torch.randn(1, 30, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f: splat(pts, f, focal, (6, 6), radius=0.3)[0], (feats,))
    # dists carry gradients to the NDC positions (as in PyTorch3D); idx is piecewise constant.
    ndc = project_points(pts, focal, (6, 6)).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: rasterize_points(p, (6, 6), 0.3, 4)[2], (ndc,), atol=1e-5)


def test_splat_api_shapes() -> None:
    gen = torch.Generator().manual_seed(8)
    pts = torch.cat((torch.randn(3, 100, 2, generator=gen) * 0.3, 1 + torch.rand(3, 100, 1, generator=gen)), -1)
    feats = torch.randn(3, 100, 4, generator=gen)
    images, coverage = splat(pts, feats, torch.full((3, 2), 1.5), (10, 14), radius=0.15, points_per_pixel=5)
    assert images.shape == (3, 4, 10, 14) and coverage.shape == (3, 10, 14) and coverage.dtype == torch.bool
    assert torch.equal((images == -10000).all(1), ~coverage)


def test_group_starts_search_equals_running_max():
    """The accelerator branch (binary search) gives the CPU branch's (running max) group starts."""
    from met3r_metrics.render import slots as render

    g = torch.Generator().manual_seed(3)
    for n, hi in ((1, 1), (50, 3), (4000, 500), (10000, 10)):
        keys = torch.sort(torch.randint(0, hi, (n,), generator=g, dtype=torch.int32)).values
        pos = torch.arange(n)
        cpu = render._group_starts(keys, pos)
        assert torch.equal(cpu, render._group_starts(keys, pos, method="scan"))
        search = render._group_starts(keys, pos, method="search")
        assert torch.equal(cpu, search)
        # each start points at the first element of its run
        assert torch.equal(keys[cpu], keys) and bool((cpu == 0).logical_or(keys[(cpu - 1).clamp(min=0)] < keys).all())
