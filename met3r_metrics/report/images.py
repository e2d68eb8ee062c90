"""Pictures for the HTML pages without matplotlib: PNG encoding (zlib), a colour map, feature renders as RGB.

Everything a page shows is embedded as a ``data:`` URI, so ``report.html`` is one file that opens
offline and can be mailed or archived on its own.
"""

from __future__ import annotations

import base64
import struct
import zlib

import numpy as np
import torch

__all__ = ["png_bytes", "data_uri", "rgb_image", "colormap", "mask_image", "renders_rgb"]

# magma-like ramp (dark = 0 = consistent, bright = high distance), linearly interpolated
_RAMP = np.array([[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66], [245, 125, 21],
                  [250, 193, 39], [252, 253, 191]], dtype=np.float64)
_GREY = np.array([153, 153, 153], dtype=np.uint8)  # pixels outside the overlap: never read as "consistent"


def png_bytes(rgb: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> an 8-bit RGB PNG file's bytes."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb: expected an (H, W, 3) uint8 array, got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")


def data_uri(rgb: np.ndarray) -> str:
    """(H, W, 3) uint8 -> ``data:image/png;base64,...``."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def rgb_image(view: torch.Tensor) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    x = view.detach().float().cpu().clamp(0, 1).permute(1, 2, 0).numpy()
    return np.round(x * 255).astype(np.uint8)


def colormap(values: np.ndarray, valid: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """(h, w) values -> (h, w, 3) uint8 on the ramp over [vmin, vmax]; invalid or non-finite pixels grey."""
    v = np.asarray(values, dtype=np.float64)
    span = max(vmax - vmin, 1e-12)
    t = np.clip((np.nan_to_num(v, nan=vmin) - vmin) / span, 0, 1) * (len(_RAMP) - 1)
    lo = np.floor(t).astype(int).clip(0, len(_RAMP) - 2)
    frac = (t - lo)[..., None]
    out = np.round(_RAMP[lo] * (1 - frac) + _RAMP[lo + 1] * frac).astype(np.uint8)
    out[~(np.asarray(valid, bool) & np.isfinite(v))] = _GREY
    return out


def mask_image(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> white where both renders have content, black elsewhere."""
    m = np.asarray(mask, bool)
    return np.repeat((m * 255).astype(np.uint8)[..., None], 3, axis=2)


def renders_rgb(renders: torch.Tensor) -> list[np.ndarray]:
    """(2, C, h, w) renders of one pair -> two (h, w, 3) uint8 pictures.

    Three channels are shown as they are (RGB distances render RGB); more (features) are projected on
    their 3 principal components, fitted on the covered pixels of both renders together so that equal
    colours mean equal features across the two; uncovered pixels (all zero) stay black.
    """
    r = renders.detach().float().cpu()
    c, h, w = r.shape[1:]
    flat = r.permute(0, 2, 3, 1).reshape(-1, c)
    covered = flat.abs().sum(1) > 0
    if c == 3:
        rgb = flat.clamp(0, 1)
    else:
        pts = flat[covered] if covered.any() else flat
        centre = pts.mean(0)
        _, _, v = torch.linalg.svd(pts - centre, full_matrices=False) if pts.shape[0] > 1 else (None, None, torch.eye(c))
        proj = (flat - centre) @ v[: min(3, c)].T
        if proj.shape[1] < 3:
            proj = torch.cat([proj, proj.new_zeros(proj.shape[0], 3 - proj.shape[1])], 1)
        sel = proj[covered] if covered.any() else proj
        lo, hi = sel.quantile(0.01, dim=0), sel.quantile(0.99, dim=0)
        rgb = ((proj - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
    rgb = torch.where(covered[:, None], rgb, torch.zeros_like(rgb))
    pics = (rgb.reshape(2, h, w, 3).numpy() * 255).round().astype(np.uint8)
    return [pics[0], pics[1]]
