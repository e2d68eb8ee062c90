"""Reference rasterizer for tests and benchmarks: every pixel tests every point (not used by the metric).

:func:`naive_rasterize_points` is PyTorch3D's ``bin_size=0`` algorithm written as plainly as possible, cost
Theta(B * H * W * N), with the CPU kernel's tie rule; :func:`cuda_kernel_rasterize_points` is its CUDA
kernel's per-pixel loop, statement by statement in Python (slow: small images only). The metric's rasterizer (:func:`met3r_metrics.render.rasterize_points`) is tested
against it on random inputs and against PyTorch3D's own outputs on the goldens; the benchmarks use it as
the all-pairs baseline.
"""

from __future__ import annotations

import torch

from .render.camera import _check_size, pixel_centers_ndc
from .render.hits import _check_k, _check_ndc, _radius_sq

__all__ = ["naive_rasterize_points", "cuda_kernel_rasterize_points"]


def naive_rasterize_points(
    ndc: torch.Tensor,
    image_size: tuple[int, int],
    radius: float = 0.01,
    points_per_pixel: int = 10,
    *,
    chunk_size: int = 1 << 22,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference rasterizer: every pixel tests every point of its cloud (PyTorch3D's bin_size=0 algorithm).

    Same arguments and outputs as :func:`~met3r_metrics.render.rasterize_points`; cost Theta(B * H * W * N), chunked over pixels
    so that at most ``chunk_size`` (pixel, point) pairs are alive at once. Used by the tests on random
    inputs and as the baseline in benchmarks. Ties in z go to the lower packed index (CPU rule).
    """
    H, W = _check_size(image_size)
    B, N, _ = _check_ndc(ndc)
    K = _check_k(points_per_pixel)
    device = ndc.device
    y_of_row, x_of_col = pixel_centers_ndc((H, W), ndc.dtype, device)
    r2 = _radius_sq(radius, ndc.dtype, device)
    x, y, z = ndc.unbind(-1)  # (B, N)
    # Depth rank per cloud, ties by index (stable sort); a pixel keeps its K smallest ranks.
    order = torch.sort(z.detach(), dim=1, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(N, device=device).expand(B, N))
    not_culled = ~(z < 0)  # the kernel skips z < 0 only

    kk = min(K, N)
    idx_out = torch.full((B, H * W, K), -1, dtype=torch.int64, device=device)
    zbuf_out = torch.full((B, H * W, K), -1.0, dtype=ndc.dtype, device=device)
    dist_out = torch.full((B, H * W, K), -1.0, dtype=ndc.dtype, device=device)
    if N == 0:
        return idx_out.view(B, H, W, K), zbuf_out.view(B, H, W, K), dist_out.view(B, H, W, K)
    per_chunk = max(1, chunk_size // max(1, B * N))
    for start in range(0, H * W, per_chunk):
        pix = torch.arange(start, min(start + per_chunk, H * W), device=device)
        dx = x[:, None, :] - x_of_col[pix % W][None, :, None]  # (B, m, N)
        dy = y[:, None, :] - y_of_row[pix // W][None, :, None]
        d2 = dx * dx + dy * dy
        hit = not_culled[:, None, :] & (d2 < r2)
        key = torch.where(hit, rank[:, None, :], N)
        best = torch.topk(key, kk, dim=2, largest=False, sorted=True).values  # (B, m, kk) ranks
        ok = best < N
        n_local = order.gather(1, best.clamp(max=N - 1).flatten(1)).view_as(best)
        sel_d2 = d2.gather(2, n_local)
        sel_z = z[:, None, :].expand_as(d2).gather(2, n_local)
        packed = n_local + (torch.arange(B, device=device) * N)[:, None, None]
        idx_out[:, pix, :kk] = torch.where(ok, packed, -1)
        zbuf_out[:, pix, :kk] = torch.where(ok, sel_z, -1.0)
        dist_out[:, pix, :kk] = torch.where(ok, sel_d2, -1.0)
    shape = (B, H, W, K)
    return idx_out.view(shape), zbuf_out.view(shape), dist_out.view(shape)


def cuda_kernel_rasterize_points(
    ndc: torch.Tensor, image_size: tuple[int, int], radius: float = 0.01, points_per_pixel: int = 10
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch3D's naive CUDA kernel (``RasterizePointsNaiveCudaKernel`` + ``CheckPixelInsidePoint`` +
    ``BubbleSort``), one pixel at a time in plain Python: the reference for the CUDA tie rule.

    Same arguments and outputs as :func:`naive_rasterize_points` (idx, zbuf, dists; -1 where empty); the
    hit test's arithmetic is the same, only the selection and order of exactly equal depths differ. Cost
    Theta(B * H * W * N) tensor work plus a Python step per hit: small images only.
    """
    H, W = _check_size(image_size)
    B, N, _ = _check_ndc(ndc)
    K = _check_k(points_per_pixel)
    y_of_row, x_of_col = pixel_centers_ndc((H, W), ndc.dtype, ndc.device)
    r2 = _radius_sq(radius, ndc.dtype, ndc.device)
    idx_out = torch.full((B, H, W, K), -1, dtype=torch.int64)
    zbuf_out = torch.full((B, H, W, K), -1.0, dtype=ndc.dtype)
    dist_out = torch.full((B, H, W, K), -1.0, dtype=ndc.dtype)
    for b in range(B):
        x, y, z = ndc[b].detach().cpu().unbind(-1)
        for row in range(H):
            for col in range(W):
                dx, dy = x - x_of_col[col].cpu(), y - y_of_row[row].cpu()
                d2 = dx * dx + dy * dy
                hits = ((~(z < 0)) & (d2 < r2.cpu())).nonzero().squeeze(1).tolist()  # ascending index
                q: list[int] = []  # point indices: the kernel's unsorted array
                q_max_z, q_max_idx = -1000.0, -1
                for p in hits:
                    pz = float(z[p])
                    if len(q) < K:
                        q.append(p)
                        if pz > q_max_z:
                            q_max_z, q_max_idx = pz, len(q) - 1
                    elif pz < q_max_z:
                        q[q_max_idx] = p
                        q_max_z = pz
                        for i in range(K):
                            if float(z[q[i]]) > q_max_z:
                                q_max_z, q_max_idx = float(z[q[i]]), i
                for i in range(len(q) - 1):  # bubble sort on z alone
                    for j in range(len(q) - i - 1):
                        if float(z[q[j + 1]]) < float(z[q[j]]):
                            q[j], q[j + 1] = q[j + 1], q[j]
                for k, p in enumerate(q):
                    idx_out[b, row, col, k] = b * N + p
                    zbuf_out[b, row, col, k] = z[p]
                    dist_out[b, row, col, k] = d2[p]
    dev = ndc.device
    return idx_out.to(dev), zbuf_out.to(dev), dist_out.to(dev)
