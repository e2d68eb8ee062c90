"""Scenes with exactly known geometry for the known-camera tests (no network, no data files)."""

from __future__ import annotations

import math

import torch

from met3r_metrics import KnownGeometry

# A fronto-parallel plane at depth Z seen by V cameras in a row along x: camera k sits at x = k * b, so a
# point's column moves by SHIFT = f b / Z pixels from one camera to the next (an exact whole number).
H = W = 64
FOCAL = 80.0  # != W: the official (1 + f/w) NDC zoom would render at the wrong scale
DEPTH = 5.0
SHIFT = 16  # pixels between neighbouring views: overlap (W - SHIFT) / W = 0.75
CX, CY = 27.0, 36.0  # off-centre principal point: a principal-point bug shifts the render


def plane_views(num_views: int = 2, seed: int = 0, shift: int = SHIFT) -> torch.Tensor:
    """(1, V, 3, H, W) in [-1, 1]: view k is the crop of one random texture starting at column k * shift."""
    gen = torch.Generator().manual_seed(seed)
    tex = torch.rand(3, H, W + shift * (num_views - 1), generator=gen) * 2 - 1
    return torch.stack([tex[:, :, k * shift : k * shift + W] for k in range(num_views)])[None]


def world_transform(angle: float = 0.7, tilt: float = 0.3, offset: tuple[float, float, float] = (100.0, -50.0, 20.0)) -> torch.Tensor:
    """A rigid world frame change (4, 4) float64: the scores must not depend on it."""
    c, s, ct, st = math.cos(angle), math.sin(angle), math.cos(tilt), math.sin(tilt)
    g = torch.eye(4, dtype=torch.float64)
    rz = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)
    rx = torch.tensor([[1, 0, 0], [0, ct, -st], [0, st, ct]], dtype=torch.float64)
    g[:3, :3] = rz @ rx
    g[:3, 3] = torch.tensor(offset, dtype=torch.float64)
    return g


def plane_cameras(num_views: int = 2, shift: int = SHIFT, world: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """intrinsics (1, V, 3, 3) and cam_to_world (1, V, 4, 4) float64 of the row of cameras."""
    k = torch.tensor([[FOCAL, 0.0, CX], [0.0, FOCAL, CY], [0.0, 0.0, 1.0]], dtype=torch.float64)
    poses = torch.eye(4, dtype=torch.float64).repeat(num_views, 1, 1)
    poses[:, 0, 3] = torch.arange(num_views, dtype=torch.float64) * shift * DEPTH / FOCAL
    if world is not None:
        poses = world @ poses
    return k.expand(1, num_views, 3, 3).clone(), poses[None]


def plane_geometry(num_views: int = 2, shift: int = SHIFT, world: torch.Tensor | None = None, **kwargs) -> KnownGeometry:
    k, poses = plane_cameras(num_views, shift, world)
    depth = torch.full((1, num_views, H, W), DEPTH)
    return KnownGeometry.from_depth(depth, k, poses, **kwargs)


# -- Middlebury 2014 Motorcycle (skimage.data.stereo_motorcycle), real stereo with ground truth ------
#: Calibration of the shipped images (the scene's calib.txt, cam0 = [3979.911 0 1244.772; 0 3979.911
#: 1019.507; 0 0 1], doffs = 124.343, baseline = 193.001 mm, divided by 4 for skimage's 4x downsampling,
#: as skimage's docstring states them).
MOTO_FOCAL = 994.978
MOTO_CX, MOTO_CY = 311.193, 254.877
MOTO_DOFFS = 31.086  # cx of the right camera minus cx of the left one
MOTO_BASELINE = 193.001  # mm
#: Crop (rows, cols) of the half-resolution pair: 224 x 368 (H a multiple of 32 for DINO features).
MOTO_CROP = (slice(13, 237), slice(1, 369))


def _half(a, nan_aware: bool = False):
    import numpy as np

    h, w = a.shape[0] // 2 * 2, a.shape[1] // 2 * 2
    blocks = a[:h, :w].reshape(h // 2, 2, w // 2, 2, *a.shape[2:]).astype(np.float64)
    return blocks.mean(axis=(1, 3))  # NaN wherever one of the four is NaN: invalid stays invalid


def _scale_pp(c: float) -> float:
    """A coordinate of the shipped grid on the half-resolution grid (integer pixel centres)."""
    return (c + 0.5) / 2 - 0.5


def motorcycle(alter: tuple[slice, slice] | None = None):
    """The Motorcycle pair at half the shipped resolution, cropped to 224 x 368, with its true geometry.

    Left depth: Z = f B / (d + doffs) from the ground-truth disparity (non-finite = no ground truth: invalid).
    Right depth: the left points forward-warped into the right view (u_r = u_l - d, the nearest right pixel,
    the nearer surface winning); right pixels nothing lands on are invalid.

    Args:
        alter: (rows, cols) of the right image (after the crop) whose colours are inverted.

    Returns:
        images (1, 2, 3, 224, 368) in [-1, 1], KnownGeometry, left-image columns of the altered region's
        points (min, max) or None.
    """
    import numpy as np
    from skimage import data

    left, right, disp = data.stereo_motorcycle()
    left, right = _half(left), _half(right)
    disp = np.where(np.isfinite(disp), disp, np.nan)  # the file marks missing ground truth with inf
    d = _half(disp) / 2  # disparity in half-resolution pixels; NaN = no ground truth
    f, doffs = MOTO_FOCAL / 2, MOTO_DOFFS / 2
    h, w = d.shape
    z_left = f * MOTO_BASELINE / (d + doffs)
    # forward warp: right pixel (r, round(c - d)), larger disparity (nearer) wins
    rows, cols = np.nonzero(np.isfinite(d))
    dv = d[rows, cols]
    cr = np.rint(cols - dv).astype(int)
    keep = (cr >= 0) & (cr < w)
    rows, cr, dv = rows[keep], cr[keep], dv[keep]
    order = np.argsort(dv, kind="stable")
    d_right = np.full_like(d, np.nan)
    d_right[rows[order], cr[order]] = dv[order]
    z_right = f * MOTO_BASELINE / (d_right + doffs)

    r0, c0 = MOTO_CROP[0].start, MOTO_CROP[1].start
    crop = lambda a: a[MOTO_CROP]  # noqa: E731
    imgs = np.stack([crop(left), crop(right)]).astype(np.float32) / 127.5 - 1.0  # (2, h, w, 3)
    cols_hit = None
    if alter is not None:
        imgs[1][alter] = -imgs[1][alter]
        dr = crop(d_right)[alter]
        cc = np.arange(alter[1].start, alter[1].stop)[None, :] + dr  # where these points land in the left view
        cols_hit = (int(np.floor(np.nanmin(cc))), int(np.ceil(np.nanmax(cc))))
    depth = np.stack([crop(z_left), crop(z_right)])
    valid = np.isfinite(depth)
    depth = np.where(valid, depth, 0.0)
    cy, cx = _scale_pp(MOTO_CY) - r0, _scale_pp(MOTO_CX) - c0
    k = torch.tensor([[[f, 0, cx], [0, f, cy], [0, 0, 1]], [[f, 0, cx + doffs], [0, f, cy], [0, 0, 1]]], dtype=torch.float64)
    poses = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    poses[1, 0, 3] = MOTO_BASELINE  # the right camera sits B to the right (x) of the left one
    geo = KnownGeometry.from_depth(torch.from_numpy(depth)[None].float(), k[None], poses[None],
                                   valid=torch.from_numpy(valid)[None])
    images = torch.from_numpy(imgs).permute(0, 3, 1, 2)[None].contiguous()
    return images, geo, cols_hit
