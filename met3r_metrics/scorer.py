"""The scorer: owns MEt3R's frozen networks and scores batches of image pairs / sequences.

Data flow for one directed pair (i, j), exactly as the official code (HEAD 3259e41):

1. features of every frame (DINO ViT-S/16 + FeatUp JBU, at input resolution) - or the RGB image
   itself for the RGB distances;
2. DUSt3R/MASt3R on (I_i, I_j): point maps of both views in view i's frame + confidences
   (detached: gradients reach the images through the features only);
3. focal from the confidence-weighted canonical point map (nan-median of the votes), converted to
   MEt3R's NDC focal ``(1 + f/w, 1 + f/h)``;
4. both clouds, each with its frame's features, splatted into view i's camera (radius 0.01 NDC,
   10 points per pixel, render size ``img_size``);
5. overlap mask = both renders hit; per-pixel distance (for lpips: the LPIPS network on the renders);
   masked mean.

Each frame is encoded (ViT encoder) and featurized once however many pairs it takes part in.
Networks are cached per process (:func:`get_scorer`), so metrics and functional calls share them.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cuda_graphs import graphs_for
from .distances import pair_scores as _pair_scores
from .geometry import canonical_pointmap, estimate_focal, focal_to_ndc, intrinsics_to_ndc, scale_intrinsics
from .precision import pinned_tf32
from .settings import Settings

__all__ = ["MEt3RScorer", "get_scorer", "clear_scorer_cache", "render_size", "canonical_device", "precision_context"]

_BACKGROUND = -10000.0
#: Frames per feature-network call. The upsampler's full-resolution intermediates (0.28 GiB per frame at
#: 256x256, measured on an H200) are held for this many frames only. 8: a chunk of 8 pairs (16 frames) peaks
#: lower than in one call, at 2-3 % of the speed (4: 6-7 %); benchmarks/README.md has the rows.
FEATURE_FRAMES = 8


def render_size(img_size: int | Sequence[int] | None, height: int, width: int) -> tuple[int, int]:
    """Render (h, w): int -> square, (h, w) -> as given, None -> the input size (H, W)."""
    if img_size is None:
        return height, width
    if isinstance(img_size, int):
        return img_size, img_size
    return int(img_size[0]), int(img_size[1])


# --------------------------------------------------------------------------------------------------
# network loading (process-level caches; the networks are frozen and shared)
# --------------------------------------------------------------------------------------------------

_LOCK = threading.RLock()
_NETWORKS: dict[tuple[Any, ...], nn.Module] = {}
_SCORERS: dict[tuple[Settings, str], "MEt3RScorer"] = {}


def canonical_device(device: torch.device | str | None) -> torch.device:
    """``None`` -> CPU; ``"cuda"`` -> ``cuda:<current index>``, so one GPU is one cache key.

    Raises:
        ValueError: a CUDA device without an available GPU.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: expected an available device, got {str(dev)!r} (torch.cuda.is_available() is False)")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """The float32 matmul/convolution mode of ``precision`` for one scoring call, restored on exit.

    fp32 switches TF32 off (a caller's global TF32 must not change the recorded numbers); tf32 and
    bf16 switch it on (bf16's bfloat16 autocast of the networks is applied by the scorer itself). Read and
    set through the TF32 API the running torch has (:mod:`met3r_metrics.precision`), never a mix of two.
    """
    if device.type != "cuda":  # TF32 is a CUDA notion: nothing to pin
        yield
        return
    # through the running torch's API only (met3r_metrics.precision): reading the legacy allow_tf32 flags
    # raises on torch >= 2.9 once a caller has used the new fp32_precision API
    with pinned_tf32(precision != "fp32"):
        yield


def _load_stereo(backbone: str, weights: str | None, device: torch.device) -> nn.Module:
    from .weights import load_stereo_model  # lazy: no import-time cost, no downloads

    # backbone_weights (a local dir / file / repo id) wins over the registry name of `backbone`; errors name
    # the argument the source came from. The network is frozen and owns its memory.
    source, argument = (weights, "backbone_weights") if weights else (backbone, "backbone")
    return load_stereo_model(source, device=device, dtype=torch.float32, argument=argument)


def _load_features(upsampler: str, weights: str | None, device: torch.device) -> nn.Module:
    from .models.featup import UpsampledDino, build_upsampler
    from .models.frozen import freeze
    from .weights import load_featup_dino

    # depth=None: read the ViT depth from the checkpoint (local files may hold a cut-down ViT, e.g.
    # the tiny test networks); the registry default is the full 12-block dino16.
    model = load_featup_dino(weights, use_norm=True, depth=None, device=device, dtype=torch.float32,
                             argument="feature_weights")
    if upsampler != "featup":
        # the official non-FeatUp upsamplers keep FeatUp's DINO (+ ChannelNorm) and interpolate
        model = freeze(UpsampledDino(model.featurizer, build_upsampler(upsampler)).to(device))
    return model


def _load_lpips(weights: str | None, device: torch.device) -> nn.Module:
    from .weights import load_lpips

    return load_lpips(weights, device=device, dtype=torch.float32, argument="lpips_weights")


def _cached_network(key: tuple[str, ...], build: Any) -> nn.Module:
    with _LOCK:
        net = _NETWORKS.get(key)
        if net is None:
            net = build()
            _NETWORKS[key] = net
        return net


def _signature(family: str, head: str, img: Sequence[int], enc: tuple[int, int], dec: tuple[int, int]) -> tuple:
    return (family, head, tuple(int(v) for v in img), enc, dec)


def _config_family(config: Any) -> str:
    """``mast3r`` for a MASt3R (catmlp+dpt head) constructor config, else ``dust3r``."""
    return "mast3r" if str(config["head_type"]).startswith("catmlp") else "dust3r"


def _model_signature(stereo: nn.Module) -> tuple:
    family = "mast3r" if type(stereo).__name__ == "AsymmetricMASt3R" else "dust3r"
    enc = (len(stereo.enc_blocks), int(stereo.enc_norm.weight.shape[0]))
    dec = (len(stereo.dec_blocks), int(stereo.dec_norm.weight.shape[0]))
    return _signature(family, stereo.head_type, stereo.img_size, enc, dec)


def stereo_identity(stereo: nn.Module) -> tuple[str | None, str]:
    """(registry name or None, family ``mast3r`` / ``dust3r``) of a loaded DUSt3R/MASt3R network."""
    from .weights import CHECKPOINTS

    sig = _model_signature(stereo)
    for name, info in CHECKPOINTS.items():
        cfg = info.config
        if info.kind != "stereo" or cfg is None:
            continue
        ref = _signature(_config_family(cfg), cfg["head_type"], cfg["img_size"], (cfg["enc_depth"], cfg["enc_embed_dim"]),
                         (cfg["dec_depth"], cfg["dec_embed_dim"]))
        if ref == sig:
            return name, sig[0]
    return None, sig[0]


def check_backbone_identity(settings: Settings, stereo: nn.Module) -> None:
    """Refuse settings whose ``backbone`` is not the network ``backbone_weights`` hold.

    A registry architecture must be named exactly (``backbone="dust3r_224_linear"`` for those weights);
    a custom architecture (e.g. the tiny test networks) must at least be of the named family.

    Raises:
        ValueError: naming ``backbone``, what the weights hold and what was requested.
    """
    from .weights import CHECKPOINTS

    name, family = stereo_identity(stereo)
    requested = CHECKPOINTS.get(settings.backbone)
    requested_family = _config_family(requested.config) if requested is not None and requested.config is not None else None
    ok = settings.backbone == name if name is not None else requested_family in (None, family)
    if not ok:
        held = name or f"a custom {family} network"
        raise ValueError(
            f"backbone: expected the network backbone_weights={settings.backbone_weights!r} holds ({held}), "
            f"got {settings.backbone!r} (variant={settings.variant!r}); pass backbone={name or family!r} so that "
            "the recorded settings name what runs"
        )


# --------------------------------------------------------------------------------------------------
# the scorer
# --------------------------------------------------------------------------------------------------


class MEt3RScorer(nn.Module):
    """Frozen networks + the MEt3R scoring pipeline for one :class:`~met3r_metrics.Settings`.

    Build with :meth:`from_settings` (or :func:`get_scorer` for the process-level cache). The
    networks are frozen (``requires_grad=False``, eval mode); gradients still flow from the score
    to the input images through the feature path.

    Args:
        settings: what to compute (:class:`~met3r_metrics.Settings`).
        stereo: DUSt3R/MASt3R with ``encode`` / ``decode_heads``.
        features: ``forward(images01 (N, 3, H, W)) -> (N, C, H, W)`` (DINO + upsampler), or None
            for the RGB distances.
        lpips: the LPIPS network (:class:`~met3r_metrics.models.lpips.LPIPS`) for ``distance="lpips"``,
            else None.
        geometry_net: a user's geometry network (``backbone="custom:<name>"``):
            ``(images1, images2) (n, 3, H, W) in [-1, 1] -> (points (n, 2, H, W, 3) in view 1's frame,
            conf (n, 2, H, W))`` [+ ``intrinsics (n, 3, 3)`` of view 1 in pixels with ``focal_source="intrinsics"``].
            Then ``stereo`` is None; so it is with ``geometry="given"`` (no geometry network at all).
        flow: RAFT (:class:`~met3r_metrics.models.raft.RAFT`) for ``backbone="raft"`` (then ``stereo`` is None).
        device: where the scorer runs when no network of its own has parameters (given geometry, user
            callables); default: the networks' device, else CPU.
    """

    def __init__(
        self, settings: Settings, stereo: nn.Module | None, features: nn.Module | Any | None,
        lpips: nn.Module | None = None, *, geometry_net: Any | None = None, device: torch.device | str | None = None,
        flow: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(settings, Settings):
            raise TypeError(f"settings: expected a met3r_metrics.Settings, got {type(settings).__name__}")
        self.settings = settings
        self.stereo = stereo
        self.features = features
        self.lpips = lpips
        self.flow = flow  # backbone="raft": RAFT (then stereo is None)
        if settings.uses_flow and flow is None:
            raise ValueError("flow: expected the RAFT network for backbone='raft', got None")
        # a user's callable is kept as a plain attribute (an nn.Module would otherwise be registered)
        object.__setattr__(self, "geometry_net", geometry_net)
        self._device = canonical_device(device) if device is not None else None
        if geometry_net is not None and not callable(geometry_net):
            raise TypeError(f"backbone: expected a callable geometry network, got {type(geometry_net).__name__}")
        if settings.uses_features and features is None:
            raise ValueError(f"features: expected a feature network for distance={settings.distance!r}, got None")
        if settings.distance == "lpips" and lpips is None:
            raise ValueError("lpips: expected the LPIPS network for distance='lpips', got None")
        self.train(False)  # frozen for good, the container included

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_settings(
        cls, settings: Settings, device: torch.device | str | None = None, *,
        geometry_net: Any | None = None, feature_net: Any | None = None,
    ) -> "MEt3RScorer":
        """Build (or reuse, per process) the networks of ``settings`` on ``device`` (default CPU).

        ``geometry_net`` / ``feature_net``: the user's networks behind ``backbone`` / ``feature_backbone``
        ``"custom:<name>"`` (required exactly then); they are used as given, never cached or moved.
        With ``geometry="given"`` no geometry network is built.
        """
        s = settings
        dev = canonical_device(device)
        custom_geo, custom_feat = s.custom_backbone, s.custom_features
        for arg, net, custom, field_name in (("geometry_net", geometry_net, custom_geo, "backbone"),
                                             ("feature_net", feature_net, custom_feat, "feature_backbone")):
            used = s.uses_features if field_name == "feature_backbone" else s.geometry == "network"
            if custom and used and net is None:
                raise ValueError(
                    f"{field_name}: {getattr(s, field_name)!r} names a user's network; pass the network itself "
                    f"({field_name}=<callable or nn.Module>) to met3r / MEt3R, got only its name"
                )
            if net is not None and not custom:
                raise ValueError(f"{arg}: expected None for {field_name}={getattr(s, field_name)!r}, got {type(net).__name__}")
        flow = None
        if s.uses_flow:  # backbone="raft": RAFT optical flow + a backward warp replace the geometry network
            from .weights import load_raft

            flow = _cached_network(("raft", s.backbone_weights, str(dev)), lambda: load_raft(
                s.backbone_weights, device=dev, dtype=torch.float32, argument="backbone_weights"))
        stereo = None
        if s.geometry == "network" and not custom_geo and flow is None:
            stereo = _cached_network(
                ("stereo", s.backbone, s.backbone_weights, str(dev)),
                lambda: _load_stereo(s.backbone, s.backbone_weights, dev),
            )
            if s.backbone_weights is not None:
                check_backbone_identity(s, stereo)
        features = None
        if s.uses_features and custom_feat:
            features = feature_net
        elif s.uses_features:
            features = _cached_network(
                ("features", s.feature_backbone, s.upsampler, s.feature_weights, str(dev)),
                lambda: _load_features(s.upsampler, s.feature_weights, dev),
            )
        lpips = None
        if s.distance == "lpips":
            lpips = _cached_network(("lpips", s.lpips_weights, str(dev)), lambda: _load_lpips(s.lpips_weights, dev))
        return cls(s, stereo, features, lpips, geometry_net=geometry_net if s.geometry == "network" else None,
                   device=dev, flow=flow)

    def with_settings(self, settings: Settings) -> "MEt3RScorer":
        """This scorer's networks under other scoring knobs (render size, radius, symmetry, ...).

        Raises:
            ValueError: ``settings`` choose other networks; the message names the differing fields.
        """
        if settings == self.settings:
            return self
        if settings.network_key != self.settings.network_key:
            fields = ("backbone", "backbone_weights", "feature_backbone", "feature_weights", "upsampler", "distance",
                      "lpips_weights")
            diff = [f for f in fields if getattr(settings, f) != getattr(self.settings, f)]
            raise ValueError(
                "scorer: expected a scorer built for the requested networks, got one with "
                + ", ".join(f"{f}={getattr(self.settings, f)!r} (requested {getattr(settings, f)!r})" for f in diff)
            )
        if settings.geometry == "network" and self.stereo is None and self.geometry_net is None and self.flow is None:
            raise ValueError(
                f"scorer: expected a scorer with the geometry network backbone={settings.backbone!r}, got one built "
                "for geometry='given' (no geometry network)"
            )
        return MEt3RScorer(settings, self.stereo, self.features, self.lpips, geometry_net=self.geometry_net,
                           device=self.device, flow=self.flow)

    def train(self, mode: bool = True) -> "MEt3RScorer":
        # Frozen for good: FeatUp's Dropout2d must never become active (the official freeze=False bug).
        return super().train(False)

    @property
    def device(self) -> torch.device:
        for net in (self.stereo, self.flow, self.features):
            if isinstance(net, nn.Module):
                param = next(net.parameters(), None)
                if param is not None:
                    return param.device
        return self._device if self._device is not None else torch.device("cpu")

    # -- building blocks ---------------------------------------------------------------------------
    def frame_features(self, images: Tensor) -> Tensor:
        """Per-pixel features of frames: (N, 3, H, W) in [-1, 1] -> (N, C, H, W) float32.

        cosine: DINO + upsampler on ``(images + 1) / 2`` (ImageNet normalisation inside), resized
        bilinearly to (H, W) as the official code does; RGB distances: ``(images + 1) / 2``.
        The features are stored channels-last (``permute(0, 2, 3, 1)`` is contiguous: the points layout
        splatting reads, without a copy) and computed :data:`FEATURE_FRAMES` frames at a time, so the
        upsampler's full-resolution intermediates are held for a few frames only (the peak-memory term).
        """
        images01 = (images + 1) / 2
        if not self.settings.uses_features:
            return images01
        ours = not self.settings.custom_features
        n, (h, w) = images01.shape[0], images01.shape[-2:]
        out: Tensor | None = None
        for i in range(0, n, FEATURE_FRAMES):
            part = images01[i : i + FEATURE_FRAMES]
            if ours:
                # replayed from a CUDA graph when no gradient is needed (same kernels; met3r_metrics.cuda_graphs);
                # a user's network runs as it is (it may do what a graph cannot replay)
                (feats,) = graphs_for(self.features).run("features", lambda x: (self.features(x),), part)
            else:
                feats = self.features(part)
            if feats.shape[-2:] != (h, w):
                feats = F.interpolate(feats, size=(h, w), mode="bilinear")
            if out is None:
                out = feats.new_empty((n, h, w, feats.shape[1]), dtype=torch.float32)
            out[i : i + FEATURE_FRAMES].copy_(feats.permute(0, 2, 3, 1))
        assert out is not None
        return out.permute(0, 3, 1, 2)

    @torch.no_grad()
    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Stereo encoder on frames (N, 3, H, W) in [-1, 1] -> (tokens, pos, (H, W))."""
        self.stereo.check_images(images, "images")  # outside the graph: a refusal is raised, not captured
        tok, pos = graphs_for(self.stereo).run("encode", lambda x: self.stereo.encode(x)[:2], images)
        return tok, pos, (int(images.shape[-2]), int(images.shape[-1]))

    @torch.no_grad()
    def decode(
        self, tok1: Tensor, pos1: Tensor, tok2: Tensor, pos2: Tensor, shape: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """Decoder + heads on encoded pairs -> point maps (n, 2, H, W, 3) in view 1's frame, conf (n, 2, H, W)."""
        def run(t1: Tensor, p1: Tensor, t2: Tensor, p2: Tensor) -> tuple[Tensor, Tensor]:
            # MEt3R needs pts3d and conf only: MASt3R's descriptor MLP is skipped (same pts3d/conf)
            res1, res2 = self.stereo.decode_heads(t1, p1, shape, t2, p2, shape, descriptors=False)
            pts = torch.stack((res1["pts3d"], res2["pts3d_in_other_view"]), dim=1).float()
            return pts, torch.stack((res1["conf"], res2["conf"]), dim=1).float()

        self.stereo._true_shape(shape, tok1, "shape")  # outside the graph: a refusal is raised, not captured
        pts, conf = graphs_for(self.stereo).run("decode", run, tok1, pos1, tok2, pos2, static=tuple(shape))
        return pts, conf

    @torch.no_grad()
    def pair_geometry(self, images1: Tensor, images2: Tensor) -> tuple[Tensor, Tensor]:
        """Point maps and confidences of pairs (n, 3, H, W) x 2 in [-1, 1]; see :meth:`decode`."""
        t, p, shape = self.encode(torch.cat((images1, images2)))
        n = images1.shape[0]
        return self.decode(t[:n], p[:n], t[n:], p[n:], shape)

    def render_pairs(
        self, pts3d: Tensor, conf: Tensor | None, features: Tensor, *, return_renders: bool = False,
        intrinsics: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Score directed pairs from their geometry and per-frame features.

        Args:
            pts3d: (n, 2, H, W, 3) point maps of view 1 and view 2, both in view 1's frame.
            conf: (n, 2, H, W) confidences (for the focal estimate; unused with ``intrinsics``).
            features: (n, 2, C, H, W) features of view 1 and view 2 (pixel-aligned with pts3d), or the
                same in points layout (n, 2, H*W, C) (what :meth:`score_sequences` passes: no copy).
            return_renders: also return the renders (n, 2, C, h, w) (non-covered pixels 0).
            intrinsics: optional (n, 4) pixel (fx, fy, cx, cy) of view 1 at (H, W) (integer pixel centres):
                rendered with that camera, scaled to the render size, principal point included (pixel-aligned
                with view 1), instead of MEt3R's focal estimate and ``focal_convention``.

        Returns:
            dict with ``score`` (n,) (official formula; 0 on an empty mask), ``overlap`` (n,)
            fraction of render pixels in the mask, ``overlap_mask`` (n, h, w) bool,
            ``coverage`` (n, 2, h, w) bool, ``score_map`` (n, h, w), ``focal_px`` (n, 2),
            ``focal_ndc`` (n, 2) [, ``renders``].
        """
        s = self.settings
        n, _, h, w, _ = pts3d.shape
        rh, rw = render_size(s.img_size, h, w)
        pts3d = pts3d.detach().float()
        principal = None
        if intrinsics is None:
            focal_px = estimate_focal(canonical_pointmap(pts3d, conf.detach().float()))
            focal_ndc = focal_to_ndc(focal_px, h, w, s.focal_convention)
        else:
            intr = scale_intrinsics(intrinsics.detach().float(), (h, w), (rh, rw))
            focal_px = intrinsics[:, :2].detach().float()
            focal_ndc, principal = intrinsics_to_ndc(intr, (rh, rw))
            principal = principal.repeat_interleave(2, dim=0)
        from .render import splat  # lazy import keeps `import met3r_metrics` light

        if features.dim() == 4:  # points layout (n, 2, H*W, C)
            c = features.shape[3]
            feats = features.float().reshape(2 * n, h * w, c)
        else:
            c = features.shape[2]
            feats = features.float().permute(0, 1, 3, 4, 2).reshape(2 * n, h * w, c)
        renders, coverage = splat(
            pts3d.reshape(2 * n, h * w, 3),
            feats,
            focal_ndc.repeat_interleave(2, dim=0),
            (rh, rw),
            radius=s.radius,
            points_per_pixel=s.points_per_pixel,
            background=_BACKGROUND,
            **({} if principal is None else {"principal_point": principal}),
        )
        coverage = coverage.view(n, 2, rh, rw)
        # background pixels become 0 in their own view only (official `rendering[non_overlap] = 0`);
        # in place: the render is a fresh buffer, and a copy would be another 100 MB per view at 256x256
        renders = renders.masked_fill_(~coverage.view(2 * n, 1, rh, rw), 0.0).view(n, 2, c, rh, rw)
        mask = coverage[:, 0] & coverage[:, 1]
        score, score_map = _pair_scores(
            renders[:, 0], renders[:, 1], mask, s.distance, cosine_eps=s.cosine_eps, mask_eps=s.mask_eps,
            rgb_formulas=s.rgb_formulas, lpips=self.lpips,
        )
        out = {
            "score": score,
            "overlap": mask.float().mean((-2, -1)),
            "overlap_mask": mask,
            "coverage": coverage,
            "score_map": score_map,
            "focal_px": focal_px,
            "focal_ndc": focal_ndc,
        }
        if return_renders:
            out["renders"] = renders
        return out

    @torch.no_grad()
    def _custom_geometry(self, images1: Tensor, images2: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The user's geometry network on pairs (n, 3, H, W) x 2 in [-1, 1], its outputs checked.

        Returns:
            points (n, 2, H, W, 3), conf (n, 2, H, W) float32, and intrinsics (n, 4) pixel (fx, fy, cx, cy)
            of view 1 when the network returns a third output (required by ``focal_source="intrinsics"``).
        """
        from .geometry import CONF_OFFSET

        s = self.settings
        n, _, h, w = images1.shape
        out = self.geometry_net(images1, images2)
        name = s.backbone
        if not isinstance(out, (tuple, list)) or len(out) not in (2, 3) or not all(isinstance(t, Tensor) for t in out):
            raise ValueError(f"backbone: expected {name} to return (points, conf) or (points, conf, intrinsics) "
                             f"tensors, got {type(out).__name__}")
        pts, conf = out[0], out[1]
        if tuple(pts.shape) != (n, 2, h, w, 3) or tuple(conf.shape) != (n, 2, h, w):
            raise ValueError(f"backbone: expected {name} to return points (n, 2, H, W, 3) = {(n, 2, h, w, 3)} and "
                             f"conf (n, 2, H, W) = {(n, 2, h, w)}, got {tuple(pts.shape)} and {tuple(conf.shape)}")
        pts, conf = pts.detach().float(), conf.detach().float()
        if not bool(torch.isfinite(pts).all()) or not bool((conf > CONF_OFFSET).all()):
            raise ValueError(f"backbone: expected {name} to return finite points and conf > {CONF_OFFSET} "
                             "(DUSt3R's 1 + exp(x); MEt3R weighs by conf - 0.999), got NaN/inf points or lower conf")
        intr = None
        if len(out) == 3:
            k = out[2]
            if tuple(k.shape) != (n, 3, 3):
                raise ValueError(f"backbone: expected {name}'s intrinsics (n, 3, 3) = {(n, 3, 3)}, got {tuple(k.shape)}")
            k = k.detach().float()
            intr = torch.stack((k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]), dim=-1)
        if (intr is not None) != (s.focal_source == "intrinsics"):
            raise ValueError(
                f"focal_source: expected {'intrinsics' if intr is not None else 'estimate'!r} for {name}, which "
                f"{'returns' if intr is not None else 'does not return'} intrinsics, got {s.focal_source!r}"
            )
        return pts, conf, intr

    def _net_precision(self, device: torch.device) -> Any:
        """bfloat16 autocast for the networks when ``precision="bf16"``; float32 otherwise."""
        bf16 = self.settings.precision == "bf16"
        # no cast cache: a captured graph must cast the weights itself, not read a cached copy freed later
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)

    # -- sequences ---------------------------------------------------------------------------------
    def score_sequences(
        self,
        images: Tensor,
        pairs: Sequence[tuple[int, int]] | Tensor | None = None,
        *,
        return_maps: bool = False,
        return_renders: bool = False,
        geometry: Any | None = None,
    ) -> dict[str, Tensor]:
        """Score the pairs of every sequence.

        Args:
            images: (B, V, 3, H, W) float in [-1, 1] (already validated, see
                :func:`met3r_metrics.inputs.validate_images`), on the scorer's device.
            pairs: (P, 2) index pairs (i, j); default :meth:`Settings.pairs` (pairing, pair_gap).
            return_maps: also return score maps and overlap masks (B, P, h, w).
            return_renders: also return the renders (B, P, 2, C, h, w) of the forward direction.
            geometry: a :class:`~met3r_metrics.known_geometry.KnownGeometry` (B, V, H, W) on the images'
                device, exactly when ``settings.geometry == "given"`` (validated by the front door): no
                geometry network runs; pair (i, j) is rendered with camera i's intrinsics.

        Numerics: everything runs with autocast disabled and the TF32 mode of ``settings.precision``
        (a caller's autocast or global TF32 switch does not leak in); with ``precision="bf16"`` the
        networks (encoder, decoder, DINO, JBU) run under bfloat16 autocast, and geometry glue,
        splatting and distances stay in float32.

        Returns:
            dict with ``pair_scores`` (B, P) (NaN where a pair has no overlap and
            ``nan_on_no_overlap``), ``overlap`` (B, P), ``no_overlap`` (B, P) bool, ``pairs``
            (P, 2) long, and when ``symmetric``: ``forward_scores`` / ``reverse_scores`` (B, P).
            With ``return_maps``: ``score_maps``, ``overlap_masks`` (forward direction, rendered
            in view i) and, when symmetric, ``score_maps_reverse``, ``overlap_masks_reverse``.
        """
        if self.settings.uses_flow:  # backbone="raft": flow + warp, no geometry (met3r_metrics.flow)
            return self._score_sequences_flow(images, pairs, return_maps=return_maps, return_renders=return_renders)
        s = self.settings
        b, v, _, h, w = images.shape
        if h != w and isinstance(s.img_size, int):
            warnings.warn(
                f"MEt3R: non-square input {h}x{w} is rendered on a square {s.img_size}x{s.img_size} grid "
                "(the official behaviour, which distorts the render); pass img_size=None (met3r-eval: "
                "metric.img_size=input) to render at the input size",
                stacklevel=3,
            )
        pair_list, items, uses = _directed_items(s, b, v, pairs)
        # where the point maps come from: the stereo network, a user's geometry network, or given cameras
        source = "given" if s.geometry == "given" else "custom" if self.geometry_net is not None else "network"
        if (geometry is not None) != (source == "given"):
            raise ValueError(
                f"geometry: expected {'a KnownGeometry' if source == 'given' else 'None'} with "
                f"geometry={s.geometry!r}, got {type(geometry).__name__}"
            )
        if source == "network" and self.stereo is None:
            raise ValueError(f"backbone: expected a geometry network for {s.backbone!r}, got a scorer without one")
        cache: dict[tuple[int, int], tuple[Tensor, Tensor, Tensor]] = {}
        results: dict[tuple[int, int, int], dict[str, Tensor]] = {}
        shape = (h, w)
        keep = {"score", "overlap"}
        if return_maps:
            keep |= {"score_map", "overlap_mask"}
        if return_renders:
            keep.add("renders")

        with torch.autocast(device_type=images.device.type, enabled=False), precision_context(s.precision, images.device):
            for start in range(0, len(items), s.batch_size):
                chunk = items[start : start + s.batch_size]
                need = sorted({(bi, fv) for bi, _, _, fa, fb in chunk for fv in (fa, fb)} - set(cache))
                if need:
                    frames = torch.stack([images[bi, fv] for bi, fv in need])
                    with self._net_precision(images.device):
                        if source == "network":
                            tok, pos, shape = self.encode(frames)
                        f = self.frame_features(frames).float()
                    # stored per frame as (H*W, C), the points layout splatting wants: pairs are gathered
                    # with one copy and no per-pair permute
                    f = f.permute(0, 2, 3, 1).reshape(f.shape[0], h * w, f.shape[1])
                    for k, key in enumerate(need):
                        # the encoder tokens (network) or the frame itself (a user's geometry network)
                        cache[key] = (f[k], tok[k], pos[k]) if source == "network" else (f[k], frames[k], None)
                ka = [(bi, fa) for bi, _, _, fa, _ in chunk]
                kb = [(bi, fb) for bi, _, _, _, fb in chunk]
                conf, intr = None, None
                if source == "given":
                    pts, intr = geometry.pair_points(ka, kb)
                elif source == "custom":
                    with self._net_precision(images.device):
                        pts, conf, intr = self._custom_geometry(
                            torch.stack([cache[k][1] for k in ka]), torch.stack([cache[k][1] for k in kb])
                        )
                else:
                    with self._net_precision(images.device):
                        pts, conf = self.decode(
                            torch.stack([cache[k][1] for k in ka]), torch.stack([cache[k][2] for k in ka]),
                            torch.stack([cache[k][1] for k in kb]), torch.stack([cache[k][2] for k in kb]), shape,
                        )
                feats2 = torch.stack(
                    [torch.stack((cache[a][0], cache[bk][0])) for a, bk in zip(ka, kb)]
                )
                out = self.render_pairs(pts, conf, feats2, return_renders=return_renders, intrinsics=intr)
                _record(results, chunk, out, keep, uses, cache)

        return _assemble(results, s, b, pair_list, return_maps=return_maps, return_renders=return_renders,
                         mask_key="overlap_mask")

    def forward(self, images: Tensor, pairs: Sequence[tuple[int, int]] | Tensor | None = None) -> Tensor:
        """(B, V, 3, H, W) in [-1, 1] -> pair scores (B, P)."""
        return self.score_sequences(images, pairs)["pair_scores"]

    def extra_repr(self) -> str:
        s = self.settings
        return f"variant={s.variant!r}, backbone={s.backbone!r}, distance={s.distance!r}, img_size={s.img_size!r}"

    # -- backbone="raft": optical flow + backward warp instead of point maps + splatting ---------------
    def _score_sequences_flow(
        self,
        images: Tensor,
        pairs: Sequence[tuple[int, int]] | Tensor | None = None,
        *,
        return_maps: bool = False,
        return_renders: bool = False,
    ) -> dict[str, Tensor]:
        """:meth:`score_sequences` for ``backbone="raft"`` (same inputs and outputs; see :mod:`met3r_metrics.flow`).

        Directed pair (a, b): RAFT's flow from frame a to frame b (its last of 12 estimates, detached) warps b's
        features (cosine; DINO + upsampler at the input size) or RGB (``flow_rgb_range``) onto a, validity mask
        ``flow_mask``; each pair is scored alone (the official batch mean is not reproduced). Maps, masks and
        renders are at the input size (``img_size`` does not apply, as in the official code); renders are
        (view a, warped view b).
        """
        from .flow import flow_pair_scores  # lazy, like render

        s = self.settings
        b, v, _, h, w = images.shape
        pair_list, items, uses = _directed_items(s, b, v, pairs)
        cache: dict[tuple[int, int], Tensor] = {}
        results: dict[tuple[int, int, int], dict[str, Tensor]] = {}
        keep = {"score", "overlap"} | ({"score_map", "mask"} if return_maps else set())
        # the official arithmetic: [-1, 1] inputs go to [0, 1] and back (2 x - 1) before RAFT and the RGB distances
        signed = lambda x01: 2 * x01 - 1  # noqa: E731

        with torch.autocast(device_type=images.device.type, enabled=False), precision_context(s.precision, images.device):
            for start in range(0, len(items), s.batch_size):
                chunk = items[start : start + s.batch_size]
                need = sorted({(bi, fv) for bi, _, _, fa, fb in chunk for fv in (fa, fb)} - set(cache))
                if need:
                    frames = torch.stack([images[bi, fv] for bi, fv in need])
                    with self._net_precision(images.device):
                        f = self.frame_features(frames).float()
                    if not s.uses_features and s.flow_rgb_range == "signed":
                        f = signed(f)
                    for k, key in enumerate(need):
                        cache[key] = f[k]
                img_a = torch.stack([images[bi, fa] for bi, _, _, fa, _ in chunk])
                img_b = torch.stack([images[bi, fb] for bi, _, _, _, fb in chunk])
                with torch.no_grad(), self._net_precision(images.device):
                    flow = self.flow(signed((img_a + 1) / 2), signed((img_b + 1) / 2))[-1].float()
                out = flow_pair_scores(
                    torch.stack([cache[(bi, fa)] for bi, _, _, fa, _ in chunk]),
                    torch.stack([cache[(bi, fb)] for bi, _, _, _, fb in chunk]),
                    flow, s.distance, mask=s.flow_mask, cosine_eps=s.cosine_eps, mask_eps=s.mask_eps,
                    rgb_formulas=s.rgb_formulas, lpips=self.lpips,
                )
                if return_renders:
                    out["renders"] = torch.stack(
                        (torch.stack([cache[(bi, fa)] for bi, _, _, fa, _ in chunk]), out["warped"]), dim=1)
                    keep.add("renders")
                _record(results, chunk, out, keep, uses, cache)

        return _assemble(results, s, b, pair_list, return_maps=return_maps, return_renders=return_renders,
                         mask_key="mask")


def _directed_items(
    s: Settings, b: int, v: int, pairs: Sequence[tuple[int, int]] | Tensor | None
) -> tuple[list[tuple[int, int]], list[tuple[int, int, int, int, int]], Counter]:
    """Validated pairs, the directed work items (sequence, pair index, direction, view a rendered into,
    view b; both directions when symmetric) and how many items use each (sequence, frame)."""
    if pairs is None:
        pairs = s.pairs(v)
    pair_list = [(int(i), int(j)) for i, j in (pairs.tolist() if isinstance(pairs, Tensor) else pairs)]
    for i, j in pair_list:
        if not (0 <= i < v and 0 <= j < v) or i == j:
            raise ValueError(f"pairs: expected index pairs (i, j), i != j, in [0, {v}), got ({i}, {j})")
    dirs = [0, 1] if s.symmetric else [0]
    items = [
        (bi, pi, d, *(pair_list[pi] if d == 0 else pair_list[pi][::-1]))
        for bi in range(b) for pi in range(len(pair_list)) for d in dirs
    ]
    return pair_list, items, Counter((bi, fv) for bi, _, _, fa, fb in items for fv in (fa, fb))


def _record(
    results: dict[tuple[int, int, int], dict[str, Tensor]], chunk: Sequence[tuple[int, int, int, int, int]],
    out: dict[str, Tensor], keep: set[str], uses: Counter, cache: dict,
) -> None:
    """Store a chunk's per-item outputs (only what is returned: maps of long sequences would otherwise pile
    up) and free the cached frames that no later item needs."""
    kept = {k: t for k, t in out.items() if k in keep}
    for k, (bi, pi, d, fa, fb) in enumerate(chunk):
        results[(bi, pi, d)] = {name: t[k] for name, t in kept.items()}
        for key in ((bi, fa), (bi, fb)):
            uses[key] -= 1
            if uses[key] == 0:
                cache.pop(key, None)


def _assemble(
    results: dict[tuple[int, int, int], dict[str, Tensor]], s: Settings, b: int, pair_list: list[tuple[int, int]],
    *, return_maps: bool, return_renders: bool, mask_key: str,
) -> dict[str, Tensor]:
    """Per directed item results -> :meth:`MEt3RScorer.score_sequences`' dict (symmetric mean, NaN on no
    overlap, maps of both directions). ``mask_key``: the name of the item's overlap/validity mask."""
    num_p = len(pair_list)

    def gather(name: str, d: int) -> Tensor:
        return torch.stack([torch.stack([results[(bi, pi, d)][name] for pi in range(num_p)]) for bi in range(b)])

    fwd, overlap = gather("score", 0), gather("overlap", 0)
    empty = overlap == 0
    out: dict[str, Tensor] = {"pairs": torch.tensor(pair_list, dtype=torch.long).view(num_p, 2)}
    scores = fwd
    if s.symmetric:
        rev, overlap_r = gather("score", 1), gather("overlap", 1)
        empty = empty | (overlap_r == 0)
        scores, overlap = 0.5 * (fwd + rev), 0.5 * (overlap + overlap_r)
        out["forward_scores"], out["reverse_scores"] = fwd, rev
    if s.nan_on_no_overlap:
        scores = torch.where(empty, torch.full_like(scores, float("nan")), scores)
    out.update(pair_scores=scores, overlap=overlap, no_overlap=empty)
    if return_maps:
        out["score_maps"], out["overlap_masks"] = gather("score_map", 0), gather(mask_key, 0)
        if s.symmetric:
            out["score_maps_reverse"], out["overlap_masks_reverse"] = gather("score_map", 1), gather(mask_key, 1)
    if return_renders:
        out["renders"] = gather("renders", 0)
    return out


def get_scorer(settings: Settings, device: torch.device | str | None = None) -> MEt3RScorer:
    """Process-level cache of scorers keyed by (settings, device); networks are shared between scorers.

    ``device`` is canonicalised (``"cuda"`` is ``cuda:<current>``), so one GPU holds one copy of the weights.
    """
    if not isinstance(settings, Settings):
        raise TypeError(f"settings: expected a met3r_metrics.Settings, got {type(settings).__name__}")
    dev = canonical_device(device)
    key = (settings, str(dev))
    with _LOCK:
        scorer = _SCORERS.get(key)
        if scorer is None:
            scorer = MEt3RScorer.from_settings(settings, dev)
            _SCORERS[key] = scorer
        return scorer


def clear_scorer_cache() -> None:
    """Drop every cached scorer and network (frees their memory once no metric refers to them)."""
    with _LOCK:
        _SCORERS.clear()
        _NETWORKS.clear()
