"""The point rasterizer: PyTorch3D's naive ``rasterize_points`` (bin_size=0) by forward splatting.

Each pixel keeps the K hits with smallest z ascending; exactly equal z follow PyTorch3D's CUDA kernel
(what MEt3R runs; :mod:`met3r_metrics.raster_ties`), or its CPU kernel's (z, packed index) on request.
idx/zbuf/dists are -1 when empty. The hit test is :mod:`.hits`, the selection of the K nearest :mod:`.slots`.
"""

from __future__ import annotations

import torch

from ..raster_ties import check_tie_rule, cuda_queue_order, needs_cuda_order
from .camera import _check_size
from .hits import _cells, _check_k, _check_ndc, _make_raster
from .slots import _chunked_slots, _dense_slots, _gather_outputs

__all__ = ["DENSE_ON_ACCELERATORS", "rasterize_points"]


# Default work-chunk size (candidate point-pixel pairs per chunk, and pending hits before a merge).
# Measured peak extra memory on CPU: ~130 MiB for a MEt3R pair at 256^2 (outputs included), ~460 MiB
# at radius 0.05 where merges kick in; it stays flat as the radius grows further.
_DEFAULT_CHUNK = 1 << 21
# On accelerators: ~130 MiB of float32 distances per chunk, so 32 clouds of 65,536 points at radius 0.01
# (19M candidates) take one chunk (measured on an H100: 7.4 ms per pair with 2**21, which needed 9 chunks).
_ACCEL_CHUNK = 1 << 25
#: The sync-free dense pass (see :func:`rasterize_points`) on accelerators when it fits one chunk.
DENSE_ON_ACCELERATORS = True


def rasterize_points(
    ndc: torch.Tensor,
    image_size: tuple[int, int],
    radius: float = 0.01,
    points_per_pixel: int = 10,
    *,
    chunk_size: int | None = None,
    dense: bool | None = None,
    tie_rule: str = "cuda",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward-splatting rasterizer equal to PyTorch3D's naive ``rasterize_points`` (bin_size=0).

    Args:
        ndc: (B, N, 3) projected points (x_ndc, y_ndc, z) from :func:`project_points`; cloud b only
            renders into image b.
        image_size: (H, W).
        radius: disc radius in NDC units (the same for x and y, whatever the aspect ratio).
        points_per_pixel: K.
        chunk_size: candidate point-pixel pairs processed at once (bounds memory; results do not depend on it).
            Default: 2**21 on CPU (cache-sized), 2**25 on accelerators (a MEt3R batch in one chunk: each
            chunk costs host syncs and, past the first, a merge sort).
        dense: test every point's whole window in one pass without compaction (no host sync; same slots,
            bit for bit) when all points x window cells fit in ``chunk_size``. Default: on accelerators
            (:data:`DENSE_ON_ACCELERATORS`), off on CPU.
        tie_rule: which of PyTorch3D's kernels decides between exactly equal depths (see
            :mod:`met3r_metrics.raster_ties`): ``"cuda"`` (default: the naive CUDA kernel MEt3R runs) or
            ``"cpu"`` (the CPU kernel: ties go to the lower packed index). They differ only on pixels with
            more than K hits and an exact z tie among the K + 1 nearest.

    Returns:
        idx (B, H, W, K) int64 packed indices b * N + n, zbuf (B, H, W, K) depth, dists (B, H, W, K)
        squared NDC distance; slots sorted by ascending z (equal z: ``tie_rule``), -1 in all three where empty.
        zbuf and dists are differentiable with respect to ``ndc`` (like PyTorch3D); idx is not.

    Cost: O(points x window) hit tests, window = (floor(r*S + 0.02) + 1)^2 pixels (9 at S=256, r=0.01),
    plus a sort of the hits. Memory is bounded by ``chunk_size`` whatever the radius: pending hits are
    merged down to K per pixel whenever they exceed it.

    Host syncs: none on the dense path with ``tie_rule="cpu"``; the CUDA rule adds one (are there pixels with
    a tie?) and, where there are, a few more to replay them. Otherwise one to count the points whose disc
    can touch the image (sizes the chunk loop), one per chunk to compact its hits, and one per intermediate
    merge when the hits exceed ``chunk_size``.

    Example: two points on the axis at depths 2 and 1 (NDC (0, 0)); the 4 central pixels of a 4 x 4 image
    sample NDC (+-0.5, +-0.5), 0.125 away in squared distance, and keep the nearer point first:

    >>> import torch
    >>> ndc = torch.tensor([[[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]]])
    >>> idx, zbuf, dists = rasterize_points(ndc, (4, 4), radius=0.5, points_per_pixel=2)
    >>> idx[0, 1, 1].tolist(), zbuf[0, 1, 1].tolist(), dists[0, 1, 1].tolist(), idx[0, 0, 0].tolist()
    ([1, 0], [1.0, 2.0], [0.125, 0.125], [-1, -1])
    """
    H, W = _check_size(image_size)
    B, N, _ = _check_ndc(ndc)
    K = _check_k(points_per_pixel)
    if radius <= 0:
        raise ValueError(f"radius must be positive, got {radius}")
    check_tie_rule(tie_rule)
    device = ndc.device
    if chunk_size is None:
        chunk_size = _DEFAULT_CHUNK if device.type == "cpu" else _ACCEL_CHUNK
    if N == 0:
        empty = torch.full((B, H, W, K), -1, dtype=torch.int64, device=device)
        return empty, empty.to(ndc.dtype), empty.to(ndc.dtype)
    # the CUDA rule needs the K + 1 nearest (CPU rule) to see a tie at the K-th slot
    kk = K + 1 if tie_rule == "cuda" else K
    with torch.no_grad():
        g = _make_raster(ndc, H, W, float(radius), kk)
        if dense is None:
            dense = device.type != "cpu" and DENSE_ON_ACCELERATORS
        idx_flat = _dense_slots(g) if dense and B * N * g.nx * g.ny <= chunk_size else _chunked_slots(g, chunk_size)
        idx4 = idx_flat.view(B, H, W, kk)
        if tie_rule == "cuda":
            idx4 = _apply_cuda_tie_rule(ndc, idx4, (H, W), float(radius), K, chunk_size)[0]
    return _gather_outputs(ndc, idx4.reshape(-1), (B, H, W, K), g.y_of_row, g.x_of_col)


def _apply_cuda_tie_rule(
    ndc: torch.Tensor, idx: torch.Tensor, image_size: tuple[int, int], radius: float, K: int, chunk_size: int
) -> tuple[torch.Tensor, bool]:
    """(B, H, W, K + 1) CPU-rule slots -> ((B, H, W, K) CUDA-rule slots, whether any pixel changed).

    Only pixels flagged by :func:`~met3r_metrics.raster_ties.needs_cuda_order` are replayed: every hit of
    theirs is found again (the chunked pass's window test, restricted to them) and fed to the kernel's
    array in ascending packed index. Host syncs: one to ask whether any pixel is flagged, a few more if so.
    """
    B, H, W, _ = idx.shape
    z_all = ndc.detach().reshape(-1, 3)[:, 2]
    valid = idx >= 0
    zbuf = torch.where(valid, z_all.index_select(0, idx.clamp(min=0).reshape(-1)).view(idx.shape), -1.0)
    flag = needs_cuda_order(zbuf, K)
    out = idx[..., :K].contiguous()
    if not bool(flag.any()):  # host sync
        return out, False
    with torch.no_grad():
        pix_rows = flag.view(-1).nonzero().squeeze(1)  # ascending packed pixels
        lookup = torch.full((B * H * W,), -1, dtype=torch.int64, device=idx.device)
        lookup[pix_rows] = torch.arange(pix_rows.numel(), device=idx.device)
        g = _make_raster(ndc, H, W, radius, K)
        cand = g.touches.nonzero().squeeze(1)
        cells = g.nx * g.ny
        rows, ids = [], []
        for start in range(0, cand.numel(), max(1, chunk_size // cells)):
            p = cand[start : start + max(1, chunk_size // cells)]
            d2, pix = _cells(g, p, g.col_c.index_select(0, p), g.row_c.index_select(0, p))
            row = lookup.index_select(0, pix)
            sel = ((d2.view(-1) < g.r2) & (row >= 0)).nonzero().squeeze(1)
            rows.append(row.index_select(0, sel))
            ids.append(p.index_select(0, sel // cells))
        cand_idx = torch.cat(ids)
        replay = cuda_queue_order(torch.cat(rows), cand_idx, z_all.index_select(0, cand_idx), pix_rows.numel(), K)
        out.view(-1, K).index_copy_(0, pix_rows, replay)
    return out, True
