"""Known cameras: MEt3R on given depth (or points) and poses instead of a geometry network's guess.

Conventions (checked on construction, every error names the argument):

* Cameras are OpenCV cameras: x right, y down, z forward. ``cam_to_world`` (B, V, 4, 4) maps a view's
  camera coordinates to a shared world frame, ``[[R, t], [0, 0, 0, 1]]`` with R a rotation.
* ``intrinsics`` (B, V, 3, 3) are pixel intrinsics ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (no skew) of
  the images as they are passed (H, W). **Pixel centres are at integer coordinates**: pixel (row, col)
  is (u, v) = (col, row), so the top-left pixel's centre is (0, 0) and an ideal centred camera has
  ``cx = (W - 1) / 2``. Intrinsics with centres at +0.5 (COLMAP, NeRF) need ``cx - 0.5, cy - 0.5``.
  Intrinsics normalized by the image size (RealEstate10K / pixelSplat: ``fx = 1.25``, ``cx = 0.5``) are
  accepted with ``intrinsics_units="normalized"`` (``fx * W``, ``fy * H``, ``cx * W - 0.5``, ``cy * H - 0.5``:
  their centres are at +0.5 of a unit image); given as pixels (the default) they are refused, since
  ``fx, fy, |cx|, |cy| <= 2`` on an image of 16 pixels or more is not a pixel camera.
* ``depth`` is the z coordinate in the view's camera frame (not the distance along the ray), > 0.
* ``valid`` (B, V, H, W) bool marks the pixels with geometry; the others are not splatted (their
  values are not checked either: 0, NaN or inf are all fine there).

For a pair (i, j), both views' points are expressed in camera i's frame and rendered with camera i's
intrinsics, scaled to the render size: the render is pixel-aligned with view i (see
:func:`met3r_metrics.geometry.intrinsics_to_ndc`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["KnownGeometry"]

# Rotation check: R^T R = I and det R = 1 to this tolerance (float32 poses are orthonormal to ~1e-6).
_ROTATION_TOL = 1e-4
#: ``intrinsics_units`` of from_depth / from_points.
INTRINSICS_UNITS = ("pixels", "normalized")
# Pixel intrinsics whose focal lengths and principal point are all within this many pixels of 0, on an image of
# at least _NORMALIZED_MIN_SIDE pixels, are normalized ones passed as pixels (a 2-px focal length is a ~150 deg view).
_NORMALIZED_MAX = 2.0
_NORMALIZED_MIN_SIDE = 16
# Where invalid pixels go: behind the camera, so the rasterizer culls them (it draws z >= 0 only).
_BEHIND = (0.0, 0.0, -1.0)


def _fail(name: str, expected: str, got: str) -> ValueError:
    return ValueError(f"{name}: expected {expected}, got {got}")


def _where(index: Tensor, dims: Sequence[str]) -> str:
    return ", ".join(f"{d}={int(i)}" for d, i in zip(dims, index.tolist()))


def _check_tensor(name: str, x: object, shape_text: str, ndim: int, tail: tuple[int, ...] = ()) -> Tensor:
    if not isinstance(x, Tensor):
        raise _fail(name, f"a torch.Tensor {shape_text}", type(x).__name__)
    if x.ndim != ndim or (tail and tuple(x.shape[-len(tail):]) != tail):
        raise _fail(name, f"a tensor of shape {shape_text}", f"shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise _fail(name, f"a floating point tensor {shape_text}", f"dtype {x.dtype}")
    return x


def _check_same(name: str, x: Tensor, ref_name: str, ref: Tensor, dims: int) -> None:
    if tuple(x.shape[:dims]) != tuple(ref.shape[:dims]):
        raise _fail(name, f"leading dims {tuple(ref.shape[:dims])} matching {ref_name}", f"shape {tuple(x.shape)}")
    if x.device != ref.device:
        raise _fail(name, f"a tensor on {ref_name}'s device {ref.device}", f"a tensor on {x.device}")


def _per_view_matrices(name: str, x: object, n: int, ref_name: str, ref: Tensor) -> Tensor:
    """x checked as finite (B, V, n, n) float matrices beside ``ref``, as float64."""
    t = _check_tensor(name, x, f"(B, V, {n}, {n})", 4, (n, n))
    _check_same(name, t, ref_name, ref, 2)
    t = t.detach().double()
    if not bool(torch.isfinite(t).all()):
        raise _fail(name, "finite values", "NaN or inf")
    return t


def _check_intrinsics(intrinsics: Tensor, ref_name: str, ref: Tensor, units: str = "pixels") -> Tensor:
    """Checked (B, V, 3, 3) float64 pixel intrinsics; ``units="normalized"`` ones are converted to pixels first."""
    if units not in INTRINSICS_UNITS:
        raise _fail("intrinsics_units", f"one of {INTRINSICS_UNITS}", repr(units))
    k = _per_view_matrices("intrinsics", intrinsics, 3, ref_name, ref)
    h, w = ref.shape[2], ref.shape[3]
    zero = torch.stack((k[..., 0, 1], k[..., 1, 0], k[..., 2, 0], k[..., 2, 1], k[..., 2, 2] - 1), -1)
    bad = (zero != 0).any(-1)
    if bool(bad.any()):
        at = bad.nonzero()[0]
        raise _fail("intrinsics", "[[fx, 0, cx], [0, fy, cy], [0, 0, 1]] (pixels, no skew)",
                    f"{k[tuple(at)].tolist()} at {_where(at, 'bv')}")
    f = torch.stack((k[..., 0, 0], k[..., 1, 1]), -1)
    bad = (f <= 0).any(-1)
    if bool(bad.any()):
        at = bad.nonzero()[0]
        raise _fail("intrinsics", "focal lengths fx, fy > 0 (pixels)", f"(fx, fy) = {f[tuple(at)].tolist()} at {_where(at, 'bv')}")
    if units == "normalized":
        k = k.clone()
        k[..., 0, 0] *= w
        k[..., 1, 1] *= h
        k[..., 0, 2] = k[..., 0, 2] * w - 0.5  # normalized centres sit at +0.5 (u = (col + 0.5) / W)
        k[..., 1, 2] = k[..., 1, 2] * h - 0.5
        return k
    entries = torch.stack((k[..., 0, 0], k[..., 1, 1], k[..., 0, 2].abs(), k[..., 1, 2].abs()), -1)
    small = (entries <= _NORMALIZED_MAX).all(-1)
    if min(h, w) >= _NORMALIZED_MIN_SIDE and bool(small.any()):
        at = small.nonzero()[0]
        fx, fy, cx, cy = (round(float(x), 6) for x in entries[tuple(at)])
        raise _fail("intrinsics", f"pixel intrinsics for {h}x{w} images (fx, fy in pixels, an ideal centred camera "
                    f"has cx = (W - 1) / 2 = {(w - 1) / 2:g}, cy = {(h - 1) / 2:g})",
                    f"fx={fx:g}, fy={fy:g}, cx={k[tuple(at)][0, 2].item():g}, cy={k[tuple(at)][1, 2].item():g} at "
                    f"{_where(at, 'bv')}: these look normalized by the image size (the RealEstate10K / pixelSplat "
                    "convention): pass intrinsics_units='normalized' (met3r-eval: data.intrinsics=normalized)")
    return k


def _check_poses(cam_to_world: Tensor, ref_name: str, ref: Tensor) -> Tensor:
    t = _per_view_matrices("cam_to_world", cam_to_world, 4, ref_name, ref)
    last = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=t.dtype, device=t.device)
    r = t[..., :3, :3]
    eye = torch.eye(3, dtype=t.dtype, device=t.device)
    err = (r.transpose(-1, -2) @ r - eye).abs().amax((-2, -1))
    bad = (t[..., 3, :] != last).any(-1) | (err > _ROTATION_TOL) | ((torch.linalg.det(r) - 1).abs() > _ROTATION_TOL)
    if bool(bad.any()):
        at = bad.nonzero()[0]
        raise _fail("cam_to_world", "rigid camera-to-world matrices [[R, t], [0, 0, 0, 1]] with R a rotation "
                    f"(R^T R = I, det R = 1, to {_ROTATION_TOL:g})", f"{t[tuple(at)].tolist()} at {_where(at, 'bv')}")
    return t


def _check_valid(valid: Tensor | None, ref_name: str, ref: Tensor) -> Tensor:
    b, v, h, w = ref.shape[:4]
    if valid is None:
        return torch.ones((b, v, h, w), dtype=torch.bool, device=ref.device)
    if not isinstance(valid, Tensor) or valid.dtype != torch.bool:
        got = f"dtype {valid.dtype}" if isinstance(valid, Tensor) else type(valid).__name__
        raise _fail("valid", f"None or a bool tensor (B, V, H, W) = {(b, v, h, w)} (e.g. conf > threshold)", got)
    if tuple(valid.shape) != (b, v, h, w):
        raise _fail("valid", f"shape (B, V, H, W) = {(b, v, h, w)} matching {ref_name}", f"shape {tuple(valid.shape)}")
    if valid.device != ref.device:
        raise _fail("valid", f"a tensor on {ref_name}'s device {ref.device}", f"a tensor on {valid.device}")
    return valid


def _rigid_inverse(t: Tensor) -> Tensor:
    """Inverse of rigid (..., 4, 4) matrices (exact transpose of the rotation)."""
    r, p = t[..., :3, :3], t[..., :3, 3:]
    rt = r.transpose(-1, -2)
    out = torch.zeros_like(t)
    out[..., :3, :3] = rt
    out[..., :3, 3:] = -rt @ p
    out[..., 3, 3] = 1.0
    return out


def _transform(t: Tensor, points: Tensor) -> Tensor:
    """(n, 4, 4) float64 rigid transforms applied to (n, H, W, 3) points (float64 math)."""
    p = points.double()
    return torch.einsum("nij,nhwj->nhwi", t[:, :3, :3], p) + t[:, None, None, :3, 3]


class KnownGeometry:
    """Per-view geometry of a batch of sequences: camera-frame points, intrinsics, poses, validity.

    Build it with :meth:`from_depth` or :meth:`from_points` (both validate everything); pass it as
    ``geometry=`` to :func:`met3r_metrics.met3r`, :meth:`met3r_metrics.MEt3R.update` or
    :func:`met3r_metrics.functional.score_views`. Conventions: see :mod:`met3r_metrics.known_geometry`.

    Attributes:
        points: (B, V, H, W, 3) float32, each pixel's point in its own view's camera frame.
        intrinsics: (B, V, 3, 3) float64 pixel intrinsics.
        cam_to_world: (B, V, 4, 4) float64 camera-to-world poses.
        valid: (B, V, H, W) bool.
    """

    def __init__(self, points: Tensor, intrinsics: Tensor, cam_to_world: Tensor, valid: Tensor) -> None:
        # internal: use from_depth / from_points, which validate
        self.points, self.intrinsics, self.cam_to_world, self.valid = points, intrinsics, cam_to_world, valid

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_depth(
        cls, depth: Tensor, intrinsics: Tensor, cam_to_world: Tensor, valid: Tensor | None = None, *,
        intrinsics_units: str = "pixels",
    ) -> "KnownGeometry":
        """Geometry from per-view depth maps.

        Args:
            depth: (B, V, H, W) float, camera-frame z of each pixel's surface point, finite and > 0
                where ``valid``.
            intrinsics: (B, V, 3, 3) pixel intrinsics (integer pixel centres, see the module docstring).
            cam_to_world: (B, V, 4, 4) OpenCV camera-to-world poses.
            valid: optional (B, V, H, W) bool; default every pixel.
            intrinsics_units: ``"pixels"`` (default) or ``"normalized"`` (by the image size: RealEstate10K /
                pixelSplat); see the module docstring. Normalized ones passed as pixels are refused.

        The camera-frame point of pixel (row, col) is ``depth * ((col - cx) / fx, (row - cy) / fy, 1)``.
        """
        d = _check_tensor("depth", depth, "(B, V, H, W)", 4)
        k = _check_intrinsics(intrinsics, "depth", d, intrinsics_units)
        t = _check_poses(cam_to_world, "depth", d)
        ok = _check_valid(valid, "depth", d)
        d = d.detach().double()
        bad = ok & ~(torch.isfinite(d) & (d > 0))
        if bool(bad.any()):
            at = bad.nonzero()[0]
            raise _fail("depth", "finite values > 0 at valid pixels (mark the others invalid with valid=)",
                        f"{int(bad.sum())} pixel(s), the first {d[tuple(at)].item()!r} at {_where(at, ('b', 'v', 'row', 'col'))}")
        _, _, h, w = d.shape
        v_idx = torch.arange(h, dtype=d.dtype, device=d.device).view(1, 1, h, 1)
        u_idx = torch.arange(w, dtype=d.dtype, device=d.device).view(1, 1, 1, w)
        fx, fy = k[..., 0, 0, None, None], k[..., 1, 1, None, None]
        cx, cy = k[..., 0, 2, None, None], k[..., 1, 2, None, None]
        d0 = torch.where(ok, d, torch.ones_like(d))  # invalid pixels: any finite stand-in, replaced below
        pts = torch.stack(((u_idx - cx) / fx * d0, (v_idx - cy) / fy * d0, d0), dim=-1)
        return cls(_park_invalid(pts.float(), ok), k, t, ok)

    @classmethod
    def from_points(
        cls, points: Tensor, intrinsics: Tensor, cam_to_world: Tensor, valid: Tensor | None = None, *,
        intrinsics_units: str = "pixels",
    ) -> "KnownGeometry":
        """Geometry from per-pixel world points.

        Args:
            points: (B, V, H, W, 3) float world coordinates of each pixel's surface point, finite where
                ``valid`` (in front of the camera or not: points behind a camera are simply not drawn).
            intrinsics: (B, V, 3, 3) pixel intrinsics of each view (used when the view is rendered into).
            cam_to_world: (B, V, 4, 4) OpenCV camera-to-world poses.
            valid: optional (B, V, H, W) bool; default every pixel.
            intrinsics_units: ``"pixels"`` (default) or ``"normalized"``, as in :meth:`from_depth`.
        """
        p = _check_tensor("points", points, "(B, V, H, W, 3)", 5, (3,))
        k = _check_intrinsics(intrinsics, "points", p, intrinsics_units)
        t = _check_poses(cam_to_world, "points", p)
        ok = _check_valid(valid, "points", p)
        p = p.detach()
        bad = ok & ~torch.isfinite(p).all(-1)
        if bool(bad.any()):
            at = bad.nonzero()[0]
            raise _fail("points", "finite values at valid pixels (mark the others invalid with valid=)",
                        f"{int(bad.sum())} pixel(s), the first at {_where(at, ('b', 'v', 'row', 'col'))}")
        b, v, h, w, _ = p.shape
        p0 = torch.where(ok[..., None], p, torch.zeros_like(p))
        world_to_cam = _rigid_inverse(t).reshape(b * v, 4, 4)
        cam = _transform(world_to_cam, p0.reshape(b * v, h, w, 3)).reshape(b, v, h, w, 3)
        return cls(_park_invalid(cam.float(), ok), k, t, ok)

    # -- shape / device ----------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(B, V, H, W)."""
        b, v, h, w, _ = self.points.shape
        return b, v, h, w

    @property
    def device(self) -> torch.device:
        return self.points.device

    def to(self, device: torch.device | str) -> "KnownGeometry":
        """A copy on ``device`` (self if already there)."""
        dev = torch.device(device)
        if self.points.device == dev:
            return self
        return KnownGeometry(self.points.to(dev), self.intrinsics.to(dev), self.cam_to_world.to(dev), self.valid.to(dev))

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> "KnownGeometry":
        """The sequences ``index`` (along B), e.g. ``geometry[2:4]``."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return KnownGeometry(self.points[index], self.intrinsics[index], self.cam_to_world[index], self.valid[index])

    def index_views(self, views: Sequence[int]) -> "KnownGeometry":
        """The views ``views`` (along V) of every sequence, in that order."""
        idx = torch.as_tensor(list(views), dtype=torch.long, device=self.device)
        return KnownGeometry(self.points[:, idx], self.intrinsics[:, idx], self.cam_to_world[:, idx], self.valid[:, idx])

    @staticmethod
    def cat(parts: Sequence["KnownGeometry"]) -> "KnownGeometry":
        """Sequences of several geometries (equal V, H, W) in one, along B."""
        return KnownGeometry(*(torch.cat([getattr(p, n) for p in parts]) for n in ("points", "intrinsics", "cam_to_world", "valid")))

    def __repr__(self) -> str:
        b, v, h, w = self.shape
        return f"KnownGeometry(B={b}, V={v}, H={h}, W={w}, valid={float(self.valid.float().mean()):.3f}, device={self.device})"

    # -- what the scorer needs ---------------------------------------------------------------------
    def pair_points(
        self, first: Sequence[tuple[int, int]], second: Sequence[tuple[int, int]]
    ) -> tuple[Tensor, Tensor]:
        """Point maps of directed pairs in the first view's camera frame, and that camera's intrinsics.

        Args:
            first, second: n (sequence b, view) keys each: pair k renders ``second[k]`` into ``first[k]``.

        Returns:
            points (n, 2, H, W, 3) float32 (first view's own points, then the second's, both in the first
            camera's frame; invalid pixels behind the camera), intrinsics (n, 4) float32 (fx, fy, cx, cy)
            in pixels of the (H, W) images.
        """
        ia = torch.tensor(list(first), dtype=torch.long, device=self.device).view(-1, 2)
        ib = torch.tensor(list(second), dtype=torch.long, device=self.device).view(-1, 2)
        pa = self.points[ia[:, 0], ia[:, 1]]
        pb = self.points[ib[:, 0], ib[:, 1]]
        # b's camera -> world -> a's camera, in float64 (poses far from the origin lose nothing)
        rel = _rigid_inverse(self.cam_to_world[ia[:, 0], ia[:, 1]]) @ self.cam_to_world[ib[:, 0], ib[:, 1]]
        pb = _park_invalid(_transform(rel, pb).float(), self.valid[ib[:, 0], ib[:, 1]])
        k = self.intrinsics[ia[:, 0], ia[:, 1]]
        intr = torch.stack((k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]), dim=-1).float()
        return torch.stack((pa, pb), dim=1), intr


def _park_invalid(points: Tensor, valid: Tensor) -> Tensor:
    """Invalid pixels' points moved behind the camera (never splatted)."""
    behind = torch.tensor(_BEHIND, dtype=points.dtype, device=points.device)
    return torch.where(valid[..., None], points, behind)
