"""The rasterizer's CUDA tie rule (what MEt3R's PyTorch3D CUDA kernel keeps when depths tie exactly).

Inputs are built so that every pixel has more than K hits and depths are quantised (many exact ties): the
case where the CUDA and CPU kernels disagree. The reference is the kernel's loop written out in Python
(`render_reference.cuda_kernel_rasterize_points`); the golden `ties_cpu_h8w8` case is in
tests/test_render_golden.py.
"""

import torch

from met3r_metrics.cuda_graphs import GraphCache
from met3r_metrics.render import rasterize_points, splat
from met3r_metrics.render.splatting import _rasterize_for_splat
from met3r_metrics.render_reference import cuda_kernel_rasterize_points, naive_rasterize_points
from tests.test_cuda_graphs import RecordingBackend


def _tied_cloud(seed: int, n: int = 500, levels: int = 6) -> torch.Tensor:
    """(2, n, 3) NDC points in [-1, 1]^2 with depths on a few levels: exact ties everywhere."""
    g = torch.Generator().manual_seed(seed)
    ndc = torch.rand(2, n, 3, generator=g) * 2 - 1
    ndc[..., 2] = 1 + torch.randint(0, levels, (2, n), generator=g).float() / 4
    return ndc


def test_fast_paths_equal_the_cuda_kernel_loop_and_differ_from_cpu() -> None:
    size, r, k = (14, 18), 0.3, 6
    for seed in range(3):
        ndc = _tied_cloud(seed)
        ref = cuda_kernel_rasterize_points(ndc, size, r, k)[0]
        cpu_idx, _, _ = naive_rasterize_points(ndc, size, r, k)
        assert (ref != cpu_idx).any(-1).sum() > 20, "the input must exercise the tie rule"
        for dense in (False, True):
            idx, zbuf, dists = rasterize_points(ndc, size, r, k, dense=dense)
            assert torch.equal(idx, ref), (seed, dense)
            # zbuf and dists belong to the kept points (the CPU rule's arithmetic, gathered again)
            z = ndc.reshape(-1, 3)[:, 2][idx.clamp(min=0)]
            assert torch.equal(zbuf, torch.where(idx >= 0, z, -1.0))
            cpu_rule = rasterize_points(ndc, size, r, k, dense=dense, tie_rule="cpu")
            assert torch.equal(cpu_rule[0], cpu_idx)
            same = idx == cpu_rule[0]
            assert torch.equal(dists[same], cpu_rule[2][same])


def test_small_chunks_and_the_graph_path_keep_the_rule() -> None:
    size, r, k = (12, 12), 0.35, 5
    ndc = _tied_cloud(7, n=400)
    ref = cuda_kernel_rasterize_points(ndc, size, r, k)[0]
    assert torch.equal(rasterize_points(ndc, size, r, k, chunk_size=64)[0], ref)  # merges between chunks
    cache = GraphCache(RecordingBackend())
    for _ in range(2):  # capture, then replay: the replay of the ties runs after the graph
        idx, dists = _rasterize_for_splat(ndc, size, r, k, graphs=cache)
        assert torch.equal(idx, ref)
        assert torch.equal(dists, rasterize_points(ndc, size, r, k)[2])
    assert cache.replays == 1


def test_splat_defaults_to_the_cuda_rule() -> None:
    size, r, k = (12, 12), 0.35, 5
    ndc = _tied_cloud(3, n=400)
    # points whose projection is ndc with focal 1: x = -X / Z  ->  X = -x Z
    pts = torch.stack((-ndc[..., 0] * ndc[..., 2], -ndc[..., 1] * ndc[..., 2], ndc[..., 2]), -1)
    feats = torch.randn(2, 400, 3, generator=torch.Generator().manual_seed(0))
    focal = torch.ones(2, 2)
    cuda_img, _ = splat(pts, feats, focal, size, r, k)
    cpu_img, _ = splat(pts, feats, focal, size, r, k, tie_rule="cpu")
    assert not torch.equal(cuda_img, cpu_img)
    assert torch.equal(cuda_img, splat(pts, feats, focal, size, r, k, tie_rule="cuda")[0])


def test_unknown_tie_rule_is_refused() -> None:
    import pytest

    with pytest.raises(ValueError, match=r"tie_rule must be one of \('cuda', 'cpu'\), got tie_rule='gpu'"):
        rasterize_points(_tied_cloud(0), (8, 8), 0.1, 4, tie_rule="gpu")
