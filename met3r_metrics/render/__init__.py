"""Point splatting + alpha compositing with PyTorch3D's semantics, as MEt3R uses them (no pytorch3d).

1. Camera (:mod:`.camera`): OpenCV points (x right, y down, z forward) -> NDC x = (fx * -X) / Z,
   y = (fy * -Y) / Z, z := Z.
2. Pixel (i, j) samples NDC ((W-1-2j)/S, (H-1-2i)/S), S = min(H, W), by PyTorch3D's float32 recipe.
3. A point hits a pixel iff z >= 0 and dx*dx + dy*dy < r*r in NDC (isotropic, float32, strict) (:mod:`.hits`).
4. Each pixel keeps the K hits with smallest z ascending (:mod:`.slots`, :mod:`.rasterize`); exactly equal z
   follow PyTorch3D's CUDA kernel (what MEt3R runs; :mod:`met3r_metrics.raster_ties`), or its CPU kernel's
   (z, packed index) on request. idx/zbuf/dists are -1 when empty.
5. Composite front to back (:mod:`.composite`): sum_k T_k a_k f_k, a_k = 1 - d_k / r^2, T_{k+1} = T_k (1 - a_k);
   background where no hit. :func:`splat` (:mod:`.splatting`) chains the three.

The rasterizer splats forward: every point visits only the pixel window its disc can reach, and the K nearest
per pixel are selected by one sort of (pixel, depth) keys, so the cost grows with points x footprint rather
than points x pixels. In float32 all outputs equal PyTorch3D's CPU kernels bit for bit with
``tie_rule="cpu"`` (``tests/test_render_golden.py``), and its CUDA kernel's slots with the default
(measured on an H100, ``benchmarks/official_parity.py``). Semantics: ``../shared/spec/pytorch3d_points.md``.

The switch of the sync-free dense pass lives in its module: set
``met3r_metrics.render.rasterize.DENSE_ON_ACCELERATORS`` (a name re-exported here would be a copy).
"""

from __future__ import annotations

from .camera import pixel_centers_ndc, project_points
from .composite import alpha_composite, composite_weights
from .rasterize import rasterize_points
from .splatting import splat

__all__ = [
    "project_points",
    "pixel_centers_ndc",
    "rasterize_points",
    "alpha_composite",
    "composite_weights",
    "splat",
]
