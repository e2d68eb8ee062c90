"""PyTorch3D's CUDA tie rule for the point rasterizer: which K points a pixel keeps, in which order,
when depths tie exactly.

MEt3R runs PyTorch3D's naive CUDA kernel (``bin_size=0``). Per pixel it visits the cloud's points in
ascending packed index and keeps at most K hits in an unsorted array: while the array has room a hit is
appended; once full, a hit with z strictly below the array's maximum overwrites the slot of that maximum,
after which the maximum is searched again (the first slot holding a z strictly above the new hit's
becomes the next victim). At the end the array is bubble-sorted by z alone, which is stable.

The CPU kernel orders by the pair (z, packed index) instead. The two agree unless a pixel has more than K
hits *and* two of its K + 1 nearest hits have exactly equal z: without such a tie both keep the K smallest
depths in depth order. With one, the CUDA kernel's set and order depend on the visiting history (the
golden ``ties_cpu_h8w8``: CPU [12, 13, 0..7], CUDA [12, 13, 2..9]). That happens where more than K points
reach a pixel (radius 0.01 at 384x384 and above: 2 px and more) and a smooth surface makes neighbouring
depths equal in float32; it moved renders by up to 0.045 on a few thousand of 1.8 million pixels at 512x512.

This module holds the rule itself (pure tensor code, no rasterization): :func:`needs_cuda_order` flags the
pixels where the rules differ, :func:`cuda_queue_order` replays the kernel's array for them.
"""

from __future__ import annotations

import torch

__all__ = ["TIE_RULES", "check_tie_rule", "needs_cuda_order", "cuda_queue_order"]

#: ``"cuda"``: PyTorch3D's CUDA naive kernel (what MEt3R runs); ``"cpu"``: its CPU kernel, (z, packed index).
TIE_RULES = ("cuda", "cpu")


def check_tie_rule(tie_rule: str) -> str:
    if tie_rule not in TIE_RULES:
        raise ValueError(f"tie_rule must be one of {TIE_RULES}, got tie_rule={tie_rule!r}")
    return tie_rule


def needs_cuda_order(zbuf: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H, W) bool: pixels whose CUDA-rule result differs from the CPU rule's, or may.

    Args:
        zbuf: (B, H, W, k + 1) depths of the CPU rule's k + 1 nearest hits (ascending), -1 or anything where
            a slot is empty (only filled slots are compared: empty slots trail the filled ones).
        k: points per pixel.

    A pixel qualifies when its slot k is filled (more than k hits) and two consecutive filled depths are equal.
    """
    full = zbuf[..., k] >= 0
    return full & (zbuf[..., 1:] == zbuf[..., :-1]).any(-1)


def cuda_queue_order(cand_row: torch.Tensor, cand_idx: torch.Tensor, cand_z: torch.Tensor, rows: int, k: int) -> torch.Tensor:
    """Replay the CUDA kernel's per-pixel array for ``rows`` pixels.

    Args:
        cand_row: (M,) int64 pixel row in [0, rows) of each hit.
        cand_idx: (M,) int64 packed point index of each hit.
        cand_z: (M,) float depth of each hit (z >= 0: the kernel skips z < 0 before this).
        rows: number of pixels.
        k: points per pixel.

    Returns:
        (rows, k) int64 packed indices in the kernel's output order, -1 in empty slots.

    Vectorised over pixels, one step per hit rank; the hits are visited per pixel in ascending packed index.
    """
    dev = cand_idx.device
    order = torch.argsort(cand_row * (int(cand_idx.max()) + 1 if cand_idx.numel() else 1) + cand_idx)
    row_s, idx_s, z_s = cand_row[order], cand_idx[order], cand_z[order]
    counts = torch.bincount(row_s, minlength=rows)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(row_s.numel(), device=dev) - starts[row_s]
    steps = int(counts.max()) if rows else 0  # host sync
    table_idx = torch.full((rows, max(steps, 1)), -1, dtype=torch.int64, device=dev)
    table_z = torch.zeros((rows, max(steps, 1)), dtype=cand_z.dtype, device=dev)
    table_idx[row_s, rank] = idx_s
    table_z[row_s, rank] = z_s

    q_z = torch.zeros((rows, k), dtype=cand_z.dtype, device=dev)
    q_idx = torch.full((rows, k), -1, dtype=torch.int64, device=dev)
    size = torch.zeros(rows, dtype=torch.int64, device=dev)
    max_z = torch.full((rows,), -1000.0, dtype=cand_z.dtype, device=dev)  # the kernel's initial q_max_z
    max_slot = torch.full((rows,), -1, dtype=torch.int64, device=dev)
    all_rows = torch.arange(rows, device=dev)
    for j in range(steps):
        present = table_idx[:, j] >= 0
        pz, pi = table_z[:, j], table_idx[:, j]
        # room left: append; the new hit becomes the maximum only if strictly above it
        room = present & (size < k)
        r, s = all_rows[room], size[room]
        q_z[r, s], q_idx[r, s] = pz[room], pi[room]
        grow = room & (pz > max_z)
        max_z, max_slot = torch.where(grow, pz, max_z), torch.where(grow, size, max_slot)
        size = size + room.long()
        # full: a hit strictly below the maximum overwrites the maximum's slot; the scan that follows starts
        # from the new hit and moves to the first slot strictly above it
        swap = present & ~room & (pz < max_z)
        r, s = all_rows[swap], max_slot[swap]
        q_z[r, s], q_idx[r, s] = pz[swap], pi[swap]
        top = q_z[r].max(1).values
        first_top = (q_z[r] == top[:, None]).to(torch.uint8).argmax(1)
        above = top > pz[swap]
        max_slot[r] = torch.where(above, first_top, s)
        max_z[r] = torch.where(above, top, pz[swap])
    # stable bubble sort by z over the filled slots (empty slots last)
    filled = torch.arange(k, device=dev)[None, :] < size[:, None]
    key = torch.where(filled, q_z + 0.0, torch.inf)  # + 0.0: -0.0 equals 0.0, as in the kernel's compare
    return q_idx.gather(1, torch.sort(key, dim=1, stable=True).indices)
