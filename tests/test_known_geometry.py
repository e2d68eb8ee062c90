"""Known cameras (issue 16): KnownGeometry through the front door, the Metric, custom networks.

The scene is a fronto-parallel textured plane seen by cameras in a row with an exact whole-pixel
disparity (tests/known_geometry_scenes.py): view 2 is a shifted crop of view 1's texture, so with the
true geometry and a radius under half a pixel every covered pixel renders its own point and RGB
distances are 0 on the overlap. No network is needed (rmse, or a custom feature network).
"""

from __future__ import annotations

import pytest
import torch
from known_geometry_scenes import CX, CY, DEPTH, FOCAL, H, SHIFT, W, plane_cameras, plane_geometry, plane_views, world_transform
from torch import nn

from met3r_metrics import KnownGeometry, MEt3R, Settings, met3r
from met3r_metrics.functional import score_views
from met3r_metrics.geometry import focal_to_ndc, intrinsics_to_ndc, scale_intrinsics
from met3r_metrics.render import project_points, splat

RMSE = {"distance": "rmse", "radius": 0.01, "img_size": None}


def _score(views, geometry, **kw):
    return met3r(views, geometry=geometry, return_details=True, return_maps=True, **{**RMSE, **kw})


# -- the plane: exactly 0 with the true geometry ---------------------------------------------------------
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("img_size", [None, 64])
def test_plane_scores_zero_with_the_overlap_the_geometry_implies(symmetric, img_size):
    d = _score(plane_views(), plane_geometry(), symmetric=symmetric, img_size=img_size)
    assert d.pair_scores.item() == 0.0  # exactly: every covered pixel renders its own texel in both views
    assert d.overlap.item() == pytest.approx((W - SHIFT) / W, abs=1e-6)  # 0.75: columns SHIFT..W-1 of view 1
    mask = d.overlap_masks[0, 0]
    assert mask[:, SHIFT:].all() and not mask[:, :SHIFT].any()
    assert d.settings.geometry == "given" and d.settings.focal_source == "intrinsics"
    assert {"geometry", "focal_source"} <= set(d.settings.overrides)


def test_plane_score_does_not_depend_on_the_world_frame():
    d = _score(plane_views(3), plane_geometry(3, world=world_transform()), pairing="all", symmetric=True)
    assert d.pairs.tolist() == [[0, 1], [0, 2], [1, 2]]
    assert d.pair_scores.abs().max().item() == 0.0
    torch.testing.assert_close(d.overlap[0], torch.tensor([0.75, 0.5, 0.75]), atol=1e-6, rtol=0)


def test_plane_from_points_equals_from_depth():
    k, poses = plane_cameras(2, world=world_transform())
    by_depth = plane_geometry(2, world=world_transform())
    rows, cols = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    cam = torch.stack(((cols - CX) / FOCAL * DEPTH, (rows - CY) / FOCAL * DEPTH, torch.full_like(rows, DEPTH)), -1)
    world = torch.einsum("vij,hwj->vhwi", poses[0, :, :3, :3], cam) + poses[0, :, None, None, :3, 3]
    by_points = KnownGeometry.from_points(world[None].float(), k, poses)
    torch.testing.assert_close(by_points.points, by_depth.points, atol=2e-5, rtol=0)
    a, b = _score(plane_views(), by_points), _score(plane_views(), by_depth)
    # not exactly 0: float32 world points (|x| ~ 100) are 2e-5 from the depth ones, so the splat weights
    # differ in the last bits (measured 1.4e-10); the depth geometry scores exactly 0 (above)
    assert b.pair_scores.item() == 0.0 and a.pair_scores.item() <= 1e-8 and a.overlap.item() == b.overlap.item()


def test_altered_patch_scores_higher_where_it_is():
    views = plane_views()
    views[0, 1, :, 20:40, 10:30] = -views[0, 1, :, 20:40, 10:30]  # in view 1 at columns 26..45 (+SHIFT)
    d = _score(views, plane_geometry())
    assert d.pair_scores.item() > 0.03  # 400 of the 3072 overlap pixels altered
    smap = d.score_maps[0, 0]
    assert smap[20:40, 26:46].min() > 0.05  # the altered region
    assert smap[:, SHIFT:][smap[:, SHIFT:] != 0].numel() == 20 * 20  # and only there (exactly 0 elsewhere)


def test_inverted_pose_does_not_score_zero():
    """A world-to-camera matrix passed by mistake moves the second camera the other way."""
    k, poses = plane_cameras(2)
    wrong = torch.linalg.inv(poses)
    d = _score(plane_views(), KnownGeometry.from_depth(torch.full((1, 2, H, W), DEPTH), k, wrong))
    assert d.pair_scores.item() > 0.1


def test_official_focal_would_fail_the_overlap_check():
    """The official NDC focal 1 + f/w (f != w here) zooms the render: the overlap is not 0.75 with it."""
    geo = plane_geometry()
    pts, intr = geo.pair_points([(0, 0)], [(0, 1)])
    pts = pts.reshape(2, H * W, 3)
    feats = torch.ones(2, H * W, 1)
    focal_off = focal_to_ndc(intr[:, :2], H, W, "official").repeat(2, 1)
    _, cov_official = splat(pts, feats, focal_off, (H, W), radius=0.01)
    focal, pp = intrinsics_to_ndc(intr, (H, W))
    _, cov_given = splat(pts, feats, focal.repeat(2, 1), (H, W), radius=0.01, principal_point=pp.repeat(2, 1))
    assert (cov_given[0] & cov_given[1]).float().mean().item() == pytest.approx(0.75)
    assert abs((cov_official[0] & cov_official[1]).float().mean().item() - 0.75) > 0.1


def test_principal_point_places_the_optical_axis_on_pixel_cx_cy():
    """A point on camera 1's optical axis lands on pixel (row cy, col cx), also after scaling to another grid."""
    intr = torch.tensor([[FOCAL, FOCAL, CX, CY]])
    axis_point = torch.tensor([[[0.0, 0.0, 3.0]]])
    for size, want in (((H, W), (CY, CX)), ((128, 96), ((CY + 0.5) * 2 - 0.5, (CX + 0.5) * 1.5 - 0.5))):
        focal, pp = intrinsics_to_ndc(scale_intrinsics(intr, (H, W), size), size)
        x, y, z = project_points(axis_point, focal, size, pp)[0, 0].tolist()
        s = min(size)
        # the renderer samples column j at x = (w - 1 - 2 j) / S, row i at y = (h - 1 - 2 i) / S
        assert ((size[0] - 1 - s * y) / 2, (size[1] - 1 - s * x) / 2) == pytest.approx(want, abs=1e-5)
        assert z == 3.0
    focal, pp = intrinsics_to_ndc(intr, (H, W))
    _, cov = splat(axis_point, torch.ones(1, 1, 1), focal, (H, W), radius=0.001, principal_point=pp)
    assert cov[0].nonzero().tolist() == [[int(CY), int(CX)]]
    # None is MEt3R's camera, bit for bit
    p = torch.randn(2, 50, 3)
    f = torch.rand(2, 2) + 1
    assert torch.equal(project_points(p, f, (8, 8)), project_points(p, f, (8, 8), None))


def test_invalid_pixels_are_not_splatted():
    valid = torch.ones(1, 2, H, W, dtype=torch.bool)
    valid[0, 1, :, 40:] = False  # the right 24 columns of view 2 (they land at 56..79 in view 1)
    depth = torch.full((1, 2, H, W), DEPTH)
    depth[0, 1, :, 40:] = float("nan")  # not checked where invalid
    k, poses = plane_cameras(2)
    d = _score(plane_views(), KnownGeometry.from_depth(depth, k, poses, valid=valid))
    assert d.overlap.item() == pytest.approx((56 - SHIFT) / W)  # columns 16..55 only
    assert d.pair_scores.item() == 0.0


def test_no_overlap_is_nan_and_counted():
    k, poses = plane_cameras(2)
    poses[0, 1, 0, 3] = 100.0  # the second camera looks at another part of the plane
    geo = KnownGeometry.from_depth(torch.full((1, 2, H, W), DEPTH), k, poses)
    d = _score(plane_views(), geo)
    assert torch.isnan(d.pair_scores).all() and d.no_overlap.all()
    metric = MEt3R(geometry="given", **RMSE)
    metric.update(plane_views(), geometry=geo)
    assert metric.compute_details()["zero_overlap"].item() == 1 and torch.isnan(metric.compute())


# -- the Metric ----------------------------------------------------------------------------------
def test_metric_with_given_geometry_equals_functional_and_records_it():
    views = torch.cat([plane_views(3, seed=0), plane_views(3, seed=1)])
    geo = KnownGeometry.cat([plane_geometry(3), plane_geometry(3, world=world_transform())])
    views[1, 2, :, :10, :10] = 1.0  # one altered pair: a non-zero mean
    metric = MEt3R(geometry="given", return_per_pair=True, **RMSE)
    assert metric.settings.geometry == "given" and metric.settings.focal_source == "intrinsics"
    metric.update(views[:1], geometry=geo[0])
    metric.update(views[1:], geometry=geo[1:])
    ref = met3r(views, geometry=geo, **RMSE)
    assert metric.compute().item() == pytest.approx(ref.mean().item(), abs=1e-7)
    assert metric.compute().item() > 1e-3
    with pytest.raises(ValueError, match="geometry: expected a KnownGeometry"):
        metric.update(views)
    with pytest.raises(ValueError, match="geometry: expected None for a metric with geometry='network'"):
        MEt3R(**RMSE).update(views, geometry=geo)


def test_geometry_is_refused_when_it_does_not_fit_the_images():
    views = plane_views(3)
    with pytest.raises(ValueError, match=r"geometry: expected \(B, V, H, W\) = \(1, 3, 64, 64\) matching images, got \(1, 2, 64, 64\)"):
        met3r(views, geometry=plane_geometry(2), **RMSE)
    with pytest.raises(TypeError, match="geometry: expected None or a met3r_metrics.KnownGeometry"):
        met3r(views, geometry={"depth": 1}, **RMSE)
    with pytest.raises(ValueError, match="geometry: expected a KnownGeometry with settings geometry='given', got None"):
        score_views(views, Settings.official(geometry="given", focal_source="intrinsics", **RMSE))


# -- validation: one line naming the argument ----------------------------------------------------
def _args():
    k, poses = plane_cameras(2)
    return torch.full((1, 2, H, W), DEPTH), k, poses


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d, k, t: (d.numpy(), k, t), "depth: expected a torch.Tensor (B, V, H, W), got ndarray"),
        (lambda d, k, t: (d[0], k, t), "depth: expected a tensor of shape (B, V, H, W), got shape (2, 64, 64)"),
        (lambda d, k, t: (d.long(), k, t), "depth: expected a floating point tensor (B, V, H, W), got dtype torch.int64"),
        (lambda d, k, t: (d.index_fill(3, torch.tensor([5]), 0.0), k, t), "depth: expected finite values > 0 at valid pixels"),
        (lambda d, k, t: (d.index_fill(3, torch.tensor([5]), float("inf")), k, t), "at b=0, v=0, row=0, col=5"),
        (lambda d, k, t: (d, k[:, :1], t), "intrinsics: expected leading dims (1, 2) matching depth, got shape (1, 1, 3, 3)"),
        (lambda d, k, t: (d, k.index_fill(3, torch.tensor([1]), 0.5), t), "intrinsics: expected [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]"),
        (lambda d, k, t: (d, -k, t), "intrinsics: expected [[fx, 0, cx]"),
        (lambda d, k, t: (d, k * torch.tensor([-1.0, 1, 1]).view(3, 1).double(), t), "intrinsics: expected focal lengths fx, fy > 0"),
        (lambda d, k, t: (d, k, t[..., :3, :]), "cam_to_world: expected a tensor of shape (B, V, 4, 4), got shape (1, 2, 3, 4)"),
        (lambda d, k, t: (d, k, t * 2), "cam_to_world: expected rigid camera-to-world matrices"),
        (lambda d, k, t: (d, k, t.index_fill(3, torch.tensor([3]), float("nan"))), "cam_to_world: expected finite values, got NaN or inf"),
    ],
)
def test_from_depth_refuses_bad_input_naming_the_argument(change, message):
    with pytest.raises(ValueError) as err:
        KnownGeometry.from_depth(*change(*_args()))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_valid_and_points_are_validated():
    d, k, t = _args()
    with pytest.raises(ValueError, match="valid: expected None or a bool tensor"):
        KnownGeometry.from_depth(d, k, t, valid=torch.ones(1, 2, H, W))
    with pytest.raises(ValueError, match=r"valid: expected shape \(B, V, H, W\) = \(1, 2, 64, 64\)"):
        KnownGeometry.from_depth(d, k, t, valid=torch.ones(1, 2, H, 8, dtype=torch.bool))
    pts = torch.zeros(1, 2, H, W, 3)
    pts[0, 1, 3, 4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"points: expected finite values at valid pixels .* at b=0, v=1, row=3, col=4"):
        KnownGeometry.from_points(pts, k, t)
    with pytest.raises(ValueError, match=r"points: expected a tensor of shape \(B, V, H, W, 3\)"):
        KnownGeometry.from_points(pts[..., :2], k, t)


# -- your own networks ---------------------------------------------------------------------------
class RGB(nn.Module):
    """A feature network: the [0, 1] image itself (as a user's DINOv2 would be passed)."""

    name = "rgb"

    def forward(self, images01):
        return images01


class PlaneNet(nn.Module):
    """A geometry network returning the plane's true geometry for (view 0, view 1) pairs."""

    def __init__(self, with_intrinsics: bool = True):
        super().__init__()
        self.with_intrinsics = with_intrinsics
        self.calls = 0

    def forward(self, images1, images2):
        self.calls += 1
        n = images1.shape[0]
        geo = plane_geometry(2)
        pts, intr = geo.pair_points([(0, 0)] * n, [(0, 1)] * n)
        conf = torch.full((n, 2, H, W), 2.0)
        if not self.with_intrinsics:
            return pts, conf
        k = torch.tensor([[FOCAL, 0, CX], [0, FOCAL, CY], [0, 0, 1.0]]).expand(n, 3, 3)
        return pts, conf, k


def test_custom_networks_equal_known_geometry():
    views = plane_views()
    views[0, 1, :, 30:50, 20:40] *= 0.3  # something to score
    kw = {"radius": 0.01, "img_size": None, "distance": "cosine"}
    known = met3r(views, geometry=plane_geometry(), feature_backbone=RGB(), return_details=True, **kw)
    net = PlaneNet()
    custom = met3r(views, backbone=net, feature_backbone=RGB(), focal_source="intrinsics", return_details=True, **kw)
    assert net.calls == 1
    assert known.pair_scores.item() > 1e-3
    assert custom.pair_scores.item() == known.pair_scores.item()
    assert custom.overlap.item() == known.overlap.item() == 0.75
    assert custom.settings.backbone == "custom:PlaneNet" and custom.settings.feature_backbone == "custom:rgb"
    assert known.settings.feature_backbone == "custom:rgb" and known.settings.geometry == "given"
    Settings.from_dict(custom.settings.to_dict())  # the record is plain JSON


def test_custom_geometry_network_without_intrinsics_uses_the_focal_estimate():
    kw = {"radius": 0.01, "img_size": None, "distance": "rmse"}
    out = met3r(plane_views(), backbone=PlaneNet(with_intrinsics=False), return_details=True, **kw)
    assert out.settings.focal_source == "estimate" and torch.isfinite(out.pair_scores).all()
    with pytest.raises(ValueError, match="focal_source: expected 'estimate' for custom:PlaneNet"):
        met3r(plane_views(), backbone=PlaneNet(with_intrinsics=False), focal_source="intrinsics", **kw)
    with pytest.raises(ValueError, match="focal_source: expected 'intrinsics' for custom:PlaneNet"):
        met3r(plane_views(), backbone=PlaneNet(), **kw)
    with pytest.raises(ValueError, match=r"backbone: expected custom:bad to return points \(n, 2, H, W, 3\)"):
        def bad(a, b):
            return torch.zeros(1, 2, 8, 8, 3), torch.ones(1, 2, 8, 8) * 2

        met3r(plane_views(), backbone=bad, **kw)


def test_two_networks_of_one_name_are_not_confused():
    """The scorer of a user's network is never cached by name: two 'rgb' networks give their own scores."""

    class Dark(RGB):
        name = "rgb"

        def forward(self, images01):
            return images01[:, :1] + 0.1  # the red channel only

    views = plane_views()
    views[0, 1, 1:] = 0.0  # view 2 keeps only its red channel
    kw = {"radius": 0.01, "img_size": None, "distance": "cosine", "geometry": plane_geometry()}
    a = met3r(views, feature_backbone=RGB(), **kw)
    b = met3r(views, feature_backbone=Dark(), **kw)
    assert a.item() > 0.05 and b.item() < 1e-4
    m1, m2 = MEt3R(feature_backbone=RGB(), geometry="given", radius=0.01, img_size=None), MEt3R(
        feature_backbone=Dark(), geometry="given", radius=0.01, img_size=None)
    m1.update(views, geometry=kw["geometry"])
    m2.update(views, geometry=kw["geometry"])
    assert m1.compute().item() == pytest.approx(a.item()) and m2.compute().item() == pytest.approx(b.item())
    assert m1.settings == m2.settings  # the same record: the name is what the user gave
    assert "feature_backbone" not in {k for k, _ in m1.state_dict().items()}


def test_custom_network_errors_name_the_argument():
    with pytest.raises(TypeError, match="backbone: expected a registry name"):
        met3r(plane_views(), backbone=3, **RMSE)
    with pytest.raises(ValueError, match="feature_backbone: expected 'dino16' with distance='rmse'"):
        met3r(plane_views(), feature_backbone=RGB(), **RMSE)
    with pytest.raises(ValueError, match="backbone: 'custom:x' names a user's network"):
        met3r(plane_views(), backbone="custom:x", **RMSE)
    with pytest.raises(ValueError, match="focal_source: expected 'estimate' for backbone='dust3r_512_dpt'"):
        Settings.paper(focal_source="intrinsics")
    with pytest.raises(ValueError, match="focal_source: expected 'intrinsics' with geometry='given'"):
        Settings.official(geometry="given")
    # a user's network and a scorer (which holds its own networks) together: refused, in both front doors
    for call in (lambda: met3r(plane_views(), backbone=PlaneNet(), scorer=object(), **RMSE),
                 lambda: MEt3R(backbone=PlaneNet(), scorer=object(), **RMSE)):
        with pytest.raises(ValueError, match="scorer: expected None with a user's backbone / feature_backbone network"):
            call()


def test_the_runnable_docs_snippet_runs():
    """docs/metric.md's "Runnable as written" block, executed as it stands."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "metric.md").read_text()
    block = re.search(r"Runnable as written \(no weights.*?```python\n(.*?)```", text, flags=re.S).group(1)
    namespace: dict = {}
    exec(compile(block, "docs/metric.md", "exec"), namespace)
    assert namespace["known"].shape == (1,) and torch.isfinite(namespace["known"]).all()


def test_given_geometry_is_refused_with_the_flow_backbone():
    with pytest.raises(ValueError, match="geometry: expected 'network' with backbone='raft'"):
        MEt3R(backbone="raft", geometry="given", **RMSE)
