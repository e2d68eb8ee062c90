"""Point splatting + alpha compositing with PyTorch3D's semantics, as MEt3R uses them (no pytorch3d).

1. Camera: OpenCV points (x right, y down, z forward) -> NDC x = (fx * -X) / Z, y = (fy * -Y) / Z, z := Z.
2. Pixel (i, j) samples NDC ((W-1-2j)/S, (H-1-2i)/S), S = min(H, W), by PyTorch3D's float32 recipe.
3. A point hits a pixel iff z >= 0 and dx*dx + dy*dy < r*r in NDC (isotropic, float32, strict).
4. Each pixel keeps the K hits with smallest z ascending; exactly equal z follow PyTorch3D's CUDA kernel
   (what MEt3R runs; :mod:`met3r_metrics.raster_ties`), or its CPU kernel's (z, packed index) on request.
   idx/zbuf/dists are -1 when empty.
5. Composite front to back: sum_k T_k a_k f_k, a_k = 1 - d_k / r^2, T_{k+1} = T_k (1 - a_k); background where no hit.

The rasterizer splats forward: every point visits only the pixel window its disc can reach, and the K nearest
per pixel are selected by one sort of (pixel, depth) keys, so the cost grows with points x footprint rather
than points x pixels. In float32 all outputs equal PyTorch3D's CPU kernels bit for bit with
``tie_rule="cpu"`` (``tests/test_render_golden.py``), and its CUDA kernel's slots with the default
(measured on an H100, ``benchmarks/official_parity.py``). Semantics: ``../shared/spec/pytorch3d_points.md``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from .raster_ties import check_tie_rule, cuda_queue_order, needs_cuda_order

__all__ = [
    "project_points",
    "pixel_centers_ndc",
    "rasterize_points",
    "alpha_composite",
    "splat",
]

# Slack (in pixels) added on both sides of a point's candidate window. The window is only a superset
# filter computed in the working precision; the exact float hit test decides. The float32 error of the
# continuous pixel position is ~1e-5 px at S = 256, so 0.01 px is generous and still gives the minimal
# 3x3 window at MEt3R's size (r * S = 2.56).
_WINDOW_SLACK_PX = 0.01

# Default work-chunk size (candidate point-pixel pairs per chunk, and pending hits before a merge).
# Measured peak extra memory on CPU: ~130 MiB for a MEt3R pair at 256^2 (outputs included), ~460 MiB
# at radius 0.05 where merges kick in; it stays flat as the radius grows further.
_DEFAULT_CHUNK = 1 << 21
# On accelerators: ~130 MiB of float32 distances per chunk, so 32 clouds of 65,536 points at radius 0.01
# (19M candidates) take one chunk (measured on an H100: 7.4 ms per pair with 2**21, which needed 9 chunks).
_ACCEL_CHUNK = 1 << 25
#: The sync-free dense pass (see :func:`rasterize_points`) on accelerators when it fits one chunk.
DENSE_ON_ACCELERATORS = True


def project_points(
    points: torch.Tensor,
    focal_ndc: torch.Tensor,
    image_size: tuple[int, int],
    principal_point: torch.Tensor | None = None,
) -> torch.Tensor:
    """Project points with MEt3R's PyTorch3D camera into NDC.

    The camera is ``PerspectiveCameras(R=diag(-1,-1,1), T=0, focal_length=focal_ndc, principal_point=(0,0),
    in_ndc=True)``: view coords are (-X, -Y, Z), then x = fx * Xv / Zv, y = fy * Yv / Zv and the third
    coordinate is the view depth Z (not 1/Z). No eps clamp, no near plane (the rasterizer culls z < 0 only).

    Args:
        points: (B, N, 3) in view 1's OpenCV camera frame (x right, y down, z forward), as MEt3R passes
            DUSt3R point maps.
        focal_ndc: (B, 2) NDC focal (fx, fy) per cloud; MEt3R uses fx = 1 + f_px_x / w, fy = 1 + f_px_y / h.
        image_size: (H, W). With ``in_ndc=True`` nothing in the projection depends on it (PyTorch3D applies
            no aspect correction); it is accepted so the call mirrors the camera's inputs.
        principal_point: optional (B, 2) NDC principal point (px, py) per cloud, PyTorch3D's
            ``principal_point`` in the same +X-left / +Y-up NDC: x = fx * Xv / Zv + px. ``None`` (MEt3R's
            camera) is (0, 0) and leaves the arithmetic exactly as before (no extra addition).
            :func:`met3r_metrics.geometry.intrinsics_to_ndc` turns pixel intrinsics into (focal, principal point).

    Returns:
        (B, N, 3): x_ndc, y_ndc, z (view depth). z = 0 gives +-inf/NaN x, y, which never hit a pixel.
    """
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
    if focal_ndc.shape != (points.shape[0], 2):
        raise ValueError(f"focal_ndc must be (B, 2) = ({points.shape[0]}, 2), got {tuple(focal_ndc.shape)}")
    _check_size(image_size)
    if principal_point is not None and principal_point.shape != (points.shape[0], 2):
        raise ValueError(
            f"principal_point must be (B, 2) = ({points.shape[0]}, 2), got {tuple(principal_point.shape)}"
        )
    focal = focal_ndc.to(points.dtype)
    X, Y, Z = points.unbind(-1)
    # PyTorch3D goes through 4x4 matmuls whose zero terms turn -0.0 into +0.0 (the "+ 0.0" below, exact
    # otherwise). It decides the sign of the infinity for a point at z = -0.0 and of x, y on the axis.
    z_view = Z + 0.0
    x = (focal[:, None, 0] * -X + 0.0) / z_view
    y = (focal[:, None, 1] * -Y + 0.0) / z_view
    if principal_point is not None:  # given cameras: the offset of the pixel-aligned principal point
        pp = principal_point.to(points.dtype)
        x = x + pp[:, None, 0]
        y = y + pp[:, None, 1]
    return torch.stack((x, y, z_view), dim=-1)


def pixel_centers_ndc(
    image_size: tuple[int, int], dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """NDC coordinates sampled by each pixel row and column, PyTorch3D's recipe operation by operation.

    Row 0 is the top (most positive y), column 0 the left (most positive x, PyTorch3D's +X is left).

    Returns:
        (y_of_row (H,), x_of_col (W,)) in ``dtype``.
    """
    H, W = _check_size(image_size)

    def axis(s1: int, s2: int) -> torch.Tensor:
        # Built on the CPU so the rounding is the CPU kernel's; it is tiny and moved once.
        two = torch.tensor(2.0, dtype=dtype)
        rng = (torch.tensor(float(s1), dtype=dtype) * two) / torch.tensor(float(s2), dtype=dtype) if s1 > s2 else two
        offset = rng / 2.0
        i_rev = torch.arange(s1 - 1, -1, -1, dtype=dtype)  # the kernel flips the index first
        return (rng * i_rev + offset) / torch.tensor(float(s1), dtype=dtype) - offset

    return axis(H, W).to(device), axis(W, H).to(device)


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


def _make_raster(ndc: torch.Tensor, H: int, W: int, radius: float, K: int) -> _Raster:
    """The hit test's inputs for (B, N, 3) ``ndc`` (no autograd): window centres, culling, constants."""
    B, N, _ = ndc.shape
    device = ndc.device
    S = min(H, W)
    y_of_row, x_of_col, r2 = _grid_constants(H, W, radius, ndc.dtype, device)
    pts = ndc.detach().reshape(B * N, 3)
    x, y, z = pts.unbind(-1)
    # Continuous (col, row) of each point; used only to place its candidate window.
    half = radius * S / 2.0
    col_c = (W - 1 - S * x) * 0.5
    row_c = (H - 1 - S * y) * 0.5
    # Points whose disc cannot reach any pixel centre are dropped up front (also z < 0, NaN, inf:
    # comparisons with NaN are False).
    reach = half + 1.0
    touches = (z >= 0) & (col_c > -reach) & (col_c < W - 1 + reach) & (row_c > -reach) & (row_c < H - 1 + reach)
    nx, ny = _window(radius, H, W)
    return _Raster(
        x, y, z, touches, col_c, row_c, half, nx, ny, torch.arange(nx, device=device), torch.arange(ny, device=device),
        y_of_row, x_of_col, r2, B, N, H, W, K,
        torch.int32 if B * H * W < 1 << 31 else torch.int64,  # int32 sorts several times faster
    )


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


class _Raster(NamedTuple):
    """What both slot passes read: the points' NDC coordinates and window centres, the hit test's
    constants and the sizes."""

    x: torch.Tensor
    y: torch.Tensor
    z: torch.Tensor
    touches: torch.Tensor
    col_c: torch.Tensor
    row_c: torch.Tensor
    half: float
    nx: int
    ny: int
    ar_x: torch.Tensor
    ar_y: torch.Tensor
    y_of_row: torch.Tensor
    x_of_col: torch.Tensor
    r2: torch.Tensor
    B: int
    N: int
    H: int
    W: int
    K: int
    pix_dtype: torch.dtype


def _cells(g: _Raster, p: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared distances (m, ny, nx) of points ``p`` (window centres cx, cy) to their window's pixel centres,
    and the packed pixel (m * ny * nx,) int64 of each window cell."""
    m = p.numel()
    # Clamp the window inside the image: still covers every in-image candidate, never duplicates.
    lo_x = torch.floor(cx - g.half - _WINDOW_SLACK_PX) + 1
    lo_y = torch.floor(cy - g.half - _WINDOW_SLACK_PX) + 1
    cols = lo_x.clamp(0, g.W - g.nx).long()[:, None] + g.ar_x  # (m, nx)
    rows = lo_y.clamp(0, g.H - g.ny).long()[:, None] + g.ar_y  # (m, ny)
    dx = g.x.index_select(0, p)[:, None] - g.x_of_col.index_select(0, cols.view(-1)).view(m, g.nx)
    dy = g.y.index_select(0, p)[:, None] - g.y_of_row.index_select(0, rows.view(-1)).view(m, g.ny)
    # dx*dx + dy*dy, each square rounded then summed (addition commutes exactly): the kernel's op order.
    d2 = (dy * dy)[:, :, None] + (dx * dx)[:, None, :]
    pix = ((p // g.N)[:, None] * g.H + rows) * g.W  # (m, ny) row starts
    return d2, (pix[:, :, None] + cols[:, None, :]).view(-1)


def _scatter_slots(
    g: _Raster, pix_s: torch.Tensor, idx_s: torch.Tensor, rank: torch.Tensor, keep: torch.Tensor
) -> torch.Tensor:
    """idx_flat (B*H*W*K,) int64 from hits sorted by pixel (``rank``: position within the pixel); entries not
    kept go to a dump slot at the end instead of being compacted (no sync); -1 where empty."""
    num_slots = g.B * g.H * g.W * g.K
    slot = torch.where(keep, pix_s.long() * g.K + rank, num_slots)
    idx_flat = torch.full((num_slots + 1,), -1, dtype=torch.int64, device=pix_s.device)
    idx_flat.scatter_(0, slot, idx_s)
    return idx_flat[:num_slots]


def _window(radius: float, H: int, W: int) -> tuple[int, int]:
    """(nx, ny) candidate window of a point: the integers j with a < j < a + r*S, a = col_c - r*S/2
    (S = min(H, W)), widened by the slack on both sides."""
    span = radius * min(H, W) + 2 * _WINDOW_SLACK_PX
    return min(W, int(math.floor(span)) + 1), min(H, int(math.floor(span)) + 1)


def _chunked_slots(g: _Raster, chunk_size: int) -> torch.Tensor:
    """Slots of the touching points, chunk by chunk with compaction (bounded memory for any radius).
    Returns idx_flat (B*H*W*K,) int64, -1 where empty."""
    device = g.z.device
    cand = g.touches.nonzero().squeeze(1)  # host sync: sizes the chunk loop; ascending packed index
    # Visit points in ascending (z, packed index): every later hit of a pixel then ranks after every
    # earlier one, so a stable sort by pixel alone yields PyTorch3D's CPU order (ties -> lower index),
    # and merging chunks is a concatenation.
    cand = cand.index_select(0, _stable_depth_order(g.z.index_select(0, cand)))
    cells = g.nx * g.ny
    per_chunk = max(1, chunk_size // cells)

    kept_pix = torch.empty(0, dtype=g.pix_dtype, device=device)
    kept_idx = torch.empty(0, dtype=torch.int64, device=device)
    pending: list[tuple[torch.Tensor, torch.Tensor]] = []
    pending_n = 0
    for start in range(0, cand.numel(), per_chunk):
        p = cand[start : start + per_chunk]
        d2, pix = _cells(g, p, g.col_c.index_select(0, p), g.row_c.index_select(0, p))
        hit = (d2 < g.r2).view(p.numel(), cells).nonzero()  # host sync: hit count; (point, window cell)
        if hit.numel() == 0:
            continue
        pending.append((pix.to(g.pix_dtype).index_select(0, hit[:, 0] * cells + hit[:, 1]), p.index_select(0, hit[:, 0])))
        pending_n += hit.shape[0]
        if pending_n > chunk_size:  # merge so memory stays bounded
            pix_s, idx_s, rank = _sort_by_pixel(
                torch.cat([kept_pix] + [a for a, _ in pending]), torch.cat([kept_idx] + [b for _, b in pending])
            )
            keep = rank < g.K  # host sync (compaction)
            kept_pix, kept_idx = pix_s[keep], idx_s[keep]
            pending, pending_n = [], 0

    pix_s, idx_s, rank = _sort_by_pixel(
        torch.cat([kept_pix] + [a for a, _ in pending]), torch.cat([kept_idx] + [b for _, b in pending])
    )
    return _scatter_slots(g, pix_s, idx_s, rank, rank < g.K)


def _dense_slots(g: _Raster) -> torch.Tensor:
    """The chunked path's slots without a host sync: every point's whole window is tested at once.

    Instead of compacting the touching points and the hits (``nonzero``, which must read a count on the
    host), non-touching points keep their place with a finite dummy window and every miss gets the dump
    pixel ``B*H*W``, which sorts last. Points are visited in the same ascending (z, packed index) order
    (non-touching ones sort after every touching one), so each pixel's hits, and therefore the slots, are
    exactly the chunked path's. Returns idx_flat (B*H*W*K,) int64, -1 where empty.
    """
    dump = g.B * g.H * g.W
    p = _stable_depth_order(torch.where(g.touches, g.z, float("inf")))  # touching points first, ascending (z, index)
    tp = g.touches.index_select(0, p)
    # a finite window for every point; the misses are masked
    d2, pix = _cells(g, p, torch.where(tp, g.col_c.index_select(0, p), 0.0), torch.where(tp, g.row_c.index_select(0, p), 0.0))
    hit = (d2 < g.r2) & tp[:, None, None]
    pix = torch.where(hit.view(-1), pix, dump).to(g.pix_dtype)
    ids = p[:, None].expand(p.numel(), g.ny * g.nx).reshape(-1)
    pix_s, idx_s, rank = _sort_by_pixel(pix, ids)
    return _scatter_slots(g, pix_s, idx_s, rank, (rank < g.K) & (pix_s < dump))


def _gather_outputs(
    ndc: torch.Tensor, idx_flat: torch.Tensor, shape: tuple[int, int, int, int], y_of_row: torch.Tensor,
    x_of_col: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(idx, zbuf, dists) of the slots: gathered from ``ndc`` with the hit test's float ops (bit-identical),
    under the caller's autograd mode so zbuf and dists carry gradients to ndc like PyTorch3D's."""
    B, H, W, K = shape
    idx4 = idx_flat.view(shape)
    valid = idx4 >= 0
    safe = idx_flat.clamp(min=0)
    x_sel, y_sel, z_sel = (c.index_select(0, safe).view(shape) for c in ndc.reshape(-1, 3).unbind(-1))
    dx = x_sel - x_of_col.view(1, 1, W, 1)
    dy = y_sel - y_of_row.view(1, H, 1, 1)
    # Python -1.0, not a tensor built on the host: copying one to the device would wait for its queue
    dists = torch.where(valid, dx * dx + dy * dy, -1.0)
    zbuf = torch.where(valid, z_sel, -1.0)
    return idx4, zbuf, dists


def alpha_composite(
    idx: torch.Tensor,
    dists: torch.Tensor,
    features: torch.Tensor,
    radius: float,
    background: float = -10000.0,
    *,
    block_rows: int | None = None,
) -> torch.Tensor:
    """Front-to-back alpha compositing with MEt3R's weights (PyTorch3D ``AlphaCompositor`` semantics).

    out_c = sum_k T_k * a_k * f_c(idx_k), a_k = 1 - dists_k / (r * r), T_0 = 1, T_{k+1} = T_k * (1 - a_k),
    unnormalised; float order (T * a) * f, accumulated k = 0, 1, ... as PyTorch3D's CPU kernel does.
    Every channel of a pixel whose slot 0 is empty is set to ``background``; nowhere else.

    Args:
        idx: (B, H, W, K) packed indices, -1 for empty slots (filled contiguously from slot 0).
        dists: (B, H, W, K) squared NDC distances.
        features: (B, N, C) per point, or packed (B * N, C). Gradients flow to them (and to dists).
        radius: the rasterization radius (NDC).
        background: value of every channel where no point hit.
        block_rows: pixels composited per block (cache blocking); default: whole image on accelerators,
            ~2 MiB of features per block on CPU. Results do not depend on it.

    Returns:
        (B, C, H, W) in the features' dtype. It is a permuted view of a channels-last (B, H, W, C) buffer
        (``torch.channels_last`` memory format); call ``.contiguous()`` if NCHW storage is needed.

    Host sync: one, to read the number of filled pixels per slot (K integers).

    Path: when :func:`met3r_metrics.kernels.should_use` holds (CUDA tensors, triton importable, no autograd
    needed, ``MET3R_DISABLE_TRITON`` != "1", switch on) and the features are float32/float16/bfloat16, a fused
    Triton kernel (same weights, same k order, float32 accumulation, no host sync; ``block_rows`` ignored;
    equal up to float32 rounding). Otherwise the exact PyTorch code below (bit-exact to PyTorch3D on CPU).
    """
    if idx.dim() != 4 or dists.shape != idx.shape:
        raise ValueError(f"idx and dists must both be (B, H, W, K), got {tuple(idx.shape)} and {tuple(dists.shape)}")
    B, H, W, K = idx.shape
    C = features.shape[-1]
    M = B * H * W
    if features.is_cuda and features.dtype in (torch.float32, torch.float16, torch.bfloat16):
        from . import kernels

        if kernels.should_use(idx, dists, features):
            from .kernels.composite_triton import alpha_composite_triton

            weights = composite_weights(idx.reshape(M, K), dists, radius)
            return alpha_composite_triton(idx, weights, features, background)
    feats = features.reshape(-1, C)
    idx2 = idx.reshape(M, K).long()
    valid = idx2 >= 0
    w = composite_weights(idx2, dists, radius).to(feats.dtype)

    # Slots fill contiguously, so sorting pixels by hit count makes "slot k filled" a prefix of the order.
    count = valid.sum(1)
    order = torch.argsort(count, descending=True, stable=True)
    filled = (count[None, :] > torch.arange(K, device=count.device)[:, None]).sum(1).tolist()  # host sync
    idx_o = idx2.index_select(0, order)
    w_o = w.index_select(0, order)
    if block_rows is None:
        block_rows = max(256, (1 << 19) // max(1, C)) if feats.device.type == "cpu" else max(1, M)

    out = torch.empty((M, C), dtype=feats.dtype, device=feats.device)
    bg = torch.tensor(background, dtype=feats.dtype, device=feats.device)
    for s in range(0, M, block_rows):
        e = min(M, s + block_rows)
        acc = torch.zeros((e - s, C), dtype=feats.dtype, device=feats.device)
        for k in range(K):
            ek = min(e, filled[k])
            if ek <= s:
                break
            # (T * a) * f, then added to the running sum: the kernel's rounding order.
            term = feats.index_select(0, idx_o[s:ek, k]) * w_o[s:ek, k, None]
            acc[: ek - s] += term
        if filled[0] < e:  # pixels no point hit: every channel is the background
            acc[max(0, filled[0] - s) :] = bg
        out.index_copy_(0, order[s:e], acc)
    return out.view(B, H, W, C).permute(0, 3, 1, 2)


def composite_weights(idx2: torch.Tensor, dists: torch.Tensor, radius: float) -> torch.Tensor:
    """Front-to-back weights T_k * a_k (M, K) in the dists' dtype, 0 on empty slots.

    idx2: (M, K) packed indices (-1 empty); dists: (M, K) or (B, H, W, K) squared NDC distances.
    """
    M, K = idx2.shape
    valid = idx2 >= 0
    # MEt3R's expression: float32 division by the Python float r*r (do not rewrite as a multiplication).
    alpha = (1 - dists / (radius * radius)).reshape(M, K)
    # T updated only on filled slots, as the kernel's `continue` does.
    T = torch.ones(M, dtype=alpha.dtype, device=alpha.device)
    weights = []
    for k in range(K):
        a = alpha[:, k]
        weights.append(T * a)
        T = torch.where(valid[:, k], T * (1 - a), T)
    return torch.where(valid, torch.stack(weights, dim=1), 0.0)


def splat(
    points: torch.Tensor,
    features: torch.Tensor,
    focal_ndc: torch.Tensor,
    image_size: tuple[int, int],
    radius: float = 0.01,
    points_per_pixel: int = 10,
    background: float = -10000.0,
    *,
    principal_point: torch.Tensor | None = None,
    tie_rule: str = "cuda",
) -> tuple[torch.Tensor, torch.Tensor]:
    """MEt3R's render: project with view 1's camera, rasterize, alpha-composite.

    Args:
        points: (B, N, 3) OpenCV camera coordinates of view 1 (float32 for PyTorch3D-exact results).
        features: (B, N, C) per-point features (or packed (B * N, C)).
        focal_ndc: (B, 2) NDC focal (fx, fy), MEt3R: (1 + f_px_x / w, 1 + f_px_y / h).
        image_size: (H, W) of the render.
        radius, points_per_pixel, background: MEt3R's 0.01, 10, -10000.
        principal_point: optional (B, 2) NDC principal point (see :func:`project_points`); None: MEt3R's (0, 0).
        tie_rule: exact-depth ties as PyTorch3D's ``"cuda"`` (default, what MEt3R runs) or ``"cpu"`` kernel
            (see :func:`rasterize_points`).

    Returns:
        images (B, C, H, W) (channels-last storage, see :func:`alpha_composite`) and coverage (B, H, W)
        bool, True where at least one point hit (MEt3R's overlap mask is coverage of both clouds).
    """
    ndc = project_points(points, focal_ndc, image_size, principal_point)
    idx, dists = _rasterize_for_splat(ndc, image_size, radius, points_per_pixel, tie_rule=tie_rule)
    images = alpha_composite(idx, dists, features, radius, background)
    return images, idx[..., 0] >= 0


def _rasterize_for_splat(
    ndc: torch.Tensor, image_size: tuple[int, int], radius: float, points_per_pixel: int, graphs: Any = None,
    tie_rule: str = "cuda",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(idx, dists) of :func:`rasterize_points`, replayed from a CUDA graph when its dense pass applies
    (no host sync to capture; the same kernels, so the same slots; the CUDA tie rule's replay runs after
    the graph, outside it). ``graphs``: a :class:`~met3r_metrics.cuda_graphs.GraphCache` to use instead of
    this module's (tests)."""
    H, W = _check_size(image_size)
    B, N, _ = _check_ndc(ndc)
    K = _check_k(points_per_pixel)
    check_tie_rule(tie_rule)
    nx, ny = _window(radius, H, W)
    use = graphs is not None or (ndc.is_cuda and DENSE_ON_ACCELERATORS)
    if not (use and 0 < B * N * nx * ny <= _ACCEL_CHUNK):
        idx, _, dists = rasterize_points(ndc, image_size, radius, K, tie_rule=tie_rule)
        return idx, dists
    kk = K + 1 if tie_rule == "cuda" else K

    def run(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        idx, _, dists = rasterize_points(t, (H, W), radius, kk, dense=True, chunk_size=_ACCEL_CHUNK, tie_rule="cpu")
        return idx, dists

    cache = graphs if graphs is not None else _raster_graphs()
    idx, dists = cache.run("rasterize", run, ndc, static=(H, W, float(radius), kk))
    if tie_rule == "cuda":
        idx, changed = _apply_cuda_tie_rule(ndc, idx, (H, W), float(radius), K, _ACCEL_CHUNK)
        if changed:
            y_of_row, x_of_col, _ = _grid_constants(H, W, float(radius), ndc.dtype, ndc.device)
            return idx, _gather_outputs(ndc, idx.reshape(-1), (B, H, W, K), y_of_row, x_of_col)[2]
        dists = dists[..., :K].contiguous()
    return idx, dists


_RASTER_GRAPHS: Any = None


def _raster_graphs() -> Any:
    """The rasterizer's CUDA-graph cache, built on first use (a leaf utility: no data-flow module above)."""
    global _RASTER_GRAPHS
    if _RASTER_GRAPHS is None:
        from .cuda_graphs import GraphCache

        _RASTER_GRAPHS = GraphCache()
    return _RASTER_GRAPHS


# --------------------------------------------------------------------------------------------------
# helpers


def _sort_by_pixel(pix: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stable sort of hits by pixel, and each hit's rank within its pixel.

    The hits arrive in ascending (z, packed index) (earlier merges first), so stability keeps that order
    inside each pixel.
    """
    pix_s, perm = torch.sort(pix, stable=True)
    ids_s = ids.index_select(0, perm)
    pos = torch.arange(pix_s.numel(), device=pix_s.device)
    return pix_s, ids_s, pos - _group_starts(pix_s, pos)


def _group_starts(sorted_keys: torch.Tensor, pos: torch.Tensor, method: str | None = None) -> torch.Tensor:
    """Index of the first occurrence of each element's value in an ascending array (exact integers).

    CPU: a running max of the group-start positions (one linear pass). Accelerators: a binary search of
    every key in the array itself, since CUDA's cummax scan took 31 ms for 6M hits on an H100 (10% of a
    MEt3R batch) where searchsorted takes about a millisecond. Both give the same integers.
    """
    if method is None:
        method = "scan" if sorted_keys.device.type == "cpu" else "search"
    if method == "scan":
        first = torch.ones_like(sorted_keys, dtype=torch.bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        return torch.where(first, pos, 0).cummax(0).values
    return torch.searchsorted(sorted_keys, sorted_keys, right=False).to(pos.dtype)


def _stable_depth_order(z: torch.Tensor) -> torch.Tensor:
    """Permutation sorting depths z >= 0 ascending, ties kept in input order; -0.0 equals +0.0."""
    z = z + 0.0
    if z.dtype == torch.float32:
        # Non-negative IEEE floats order like their bit patterns, and int32 sorts much faster than float.
        return torch.sort(z.view(torch.int32), stable=True).indices
    return torch.sort(z, stable=True).indices


def _radius_sq(radius: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r = torch.tensor(radius, dtype=dtype)  # r*r in the working precision, like the kernel's float radius2
    return (r * r).to(device)


_GRID_CONSTANTS: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}


def _grid_constants(
    H: int, W: int, radius: float, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y_of_row, x_of_col, r*r) on ``device``, cached: each is built on the CPU, and a copy from host memory
    waits for the device's queue, i.e. it would be a host sync on every call."""
    key = (H, W, radius, dtype, str(device))
    got = _GRID_CONSTANTS.get(key)
    if got is None:
        if len(_GRID_CONSTANTS) > 256:  # many sizes/radii in one process: start over rather than grow
            _GRID_CONSTANTS.clear()
        got = _GRID_CONSTANTS[key] = (*pixel_centers_ndc((H, W), dtype, device), _radius_sq(radius, dtype, device))
    return got


def _check_size(image_size: tuple[int, int]) -> tuple[int, int]:
    if len(image_size) != 2 or min(int(image_size[0]), int(image_size[1])) <= 0:
        raise ValueError(f"image_size must be (H, W) with positive sides, got {image_size}")
    return int(image_size[0]), int(image_size[1])


def _check_ndc(ndc: torch.Tensor) -> torch.Size:
    if ndc.dim() != 3 or ndc.shape[-1] != 3 or not ndc.is_floating_point():
        raise ValueError(f"ndc must be a floating (B, N, 3) tensor, got {tuple(ndc.shape)} {ndc.dtype}")
    return ndc.shape


def _check_k(k: int) -> int:
    if int(k) < 1:
        raise ValueError(f"points_per_pixel must be >= 1, got {k}")
    return int(k)
