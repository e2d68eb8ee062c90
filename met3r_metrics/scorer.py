"""The scorer: MEt3R's method over batches of sequences, as a short orchestrator of the stages.

For every directed pair (a, b) of a sequence (one direction, or both when ``symmetric``), as the official
code (HEAD 3259e41) computes it:

1. features of every frame: DINO ViT-S/16 + FeatUp JBU at input resolution, or the RGB image itself for the
   RGB distances (:mod:`.stages.features`);
2. geometry of the pair (:mod:`.stages.geometry`): DUSt3R/MASt3R point maps of both views in view a's frame +
   confidences (or given cameras, or a user's network), detached; for ``backbone="raft"`` an optical flow;
3. both views brought onto view a (:mod:`.stages.splat`): the focal from the confidence-weighted canonical
   point map (nan-median of the votes) as MEt3R's NDC focal ``(1 + f/w, 1 + f/h)``, both clouds splatted
   into view a's camera (radius 0.01 NDC, 10 points per pixel, render size ``img_size``); with a flow, view
   b's features warped onto view a (:mod:`.stages.warp`);
4. overlap mask = both views have content; per-pixel distance, masked mean (:mod:`.stages.distance`);
5. per pair: the forward score, or the mean of both directions; NaN where a pair has no overlap.

Each frame is encoded and featurized once however many pairs it takes part in. The networks come from
:mod:`met3r_metrics.networks` (built once per process); :func:`get_scorer` caches scorers per settings and device.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .directed_pairs import assemble, directed_items, record
from .known_geometry import KnownGeometry
from .networks import build_networks, cached_scorer, canonical_device, check_custom_networks
from .networks import check_backbone_identity, clear_scorer_cache, stereo_identity  # re-exported: their old home
from .precision import network_autocast, precision_context, scoring_precision
from .settings import Settings
from .stages.distance import score_pairs
from .stages.features import frame_features
from .stages.geometry import CustomGeometry, FlowGeometry, GeometrySource, GivenGeometry, PairGeometry, StereoGeometry
from .stages.splat import points_layout, render_size, splat_pairs
from .stages.warp import warp_pairs

__all__ = ["MEt3RScorer", "get_scorer", "scorer_for", "clear_scorer_cache", "render_size", "canonical_device",
           "precision_context", "stereo_identity", "check_backbone_identity"]


class MEt3RScorer(nn.Module):
    """Frozen networks + the MEt3R scoring pipeline for one :class:`~met3r_metrics.Settings`.

    Build with :meth:`from_settings` (or :func:`get_scorer` for the process-level cache). The networks are
    frozen (``requires_grad=False``, eval mode); gradients still flow from the score to the input images
    through the feature path.

    Args:
        settings: what to compute.
        stereo: DUSt3R/MASt3R with ``encode`` / ``decode_heads``.
        features: ``forward(images01 (N, 3, H, W)) -> (N, C, H, W)`` (DINO + upsampler), or None for the RGB
            distances.
        lpips: the LPIPS network for ``distance="lpips"``, else None.
        geometry_net: a user's geometry network (``backbone="custom:<name>"``):
            ``(images1, images2) (n, 3, H, W) in [-1, 1] -> (points (n, 2, H, W, 3) in view 1's frame,
            conf (n, 2, H, W))`` [+ ``intrinsics (n, 3, 3)`` of view 1 in pixels with ``focal_source="intrinsics"``].
            Then ``stereo`` is None; so it is with ``geometry="given"`` (no geometry network at all).
        flow: RAFT for ``backbone="raft"`` (then ``stereo`` is None).
        device: where the scorer runs when no network of its own has parameters (given geometry, user
            callables); default: the networks' device, else CPU.

    Example (the tiny random-weight networks of the golden data; real weights give real scores):

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> import met3r_metrics
    >>> from met3r_metrics.testing import tiny_met3r_kwargs
    >>> golden = Path(met3r_metrics.__file__).resolve().parents[2] / "shared" / "golden"
    >>> scorer = get_scorer(Settings.official(**tiny_met3r_kwargs(golden, Path(tempfile.mkdtemp()))))
    >>> images = torch.rand(1, 3, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    >>> out = scorer.score_sequences(images)
    >>> out["pairs"].tolist(), tuple(out["pair_scores"].shape)
    ([[0, 1], [1, 2]], (1, 2))
    >>> bool(((out["pair_scores"] > 0) & (out["pair_scores"] < 2)).all())
    True
    """

    #: The stereo network's stage class (a subclass may swap it, e.g. the benchmarks' synthetic geometry).
    stereo_stage: type[StereoGeometry] = StereoGeometry

    def __init__(
        self, settings: Settings, stereo: nn.Module | None, features: nn.Module | Any | None,
        lpips: nn.Module | None = None, *, geometry_net: Any | None = None, device: torch.device | str | None = None,
        flow: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(settings, Settings):
            raise TypeError(f"settings: expected a met3r_metrics.Settings, got {type(settings).__name__}")
        self.settings, self.stereo, self.features, self.lpips, self.flow = settings, stereo, features, lpips, flow
        # a user's callable is kept as a plain attribute (an nn.Module would otherwise be registered)
        object.__setattr__(self, "geometry_net", geometry_net)
        self._device = canonical_device(device) if device is not None else None
        # the stereo stage is kept (not rebuilt per call), so a test can count what runs through it
        self._stereo_geometry = self.stereo_stage(stereo, settings.precision) if stereo is not None else None
        if settings.uses_flow and flow is None:
            raise ValueError("flow: expected the RAFT network for backbone='raft', got None")
        if geometry_net is not None:  # the one check of a user's networks (met3r_metrics.networks)
            check_custom_networks(settings, geometry_net, features if settings.custom_features else None)
        if settings.uses_features and features is None:
            raise ValueError(f"features: expected a feature network for distance={settings.distance!r}, got None")
        if settings.distance == "lpips" and lpips is None:
            raise ValueError("lpips: expected the LPIPS network for distance='lpips', got None")
        self.train(False)  # frozen for good, the container included

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
        dev = canonical_device(device)
        n = build_networks(settings, dev, geometry_net=geometry_net, feature_net=feature_net)
        return cls(settings, n.stereo, n.features, n.lpips, geometry_net=n.geometry_net, device=dev, flow=n.flow)

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

    # -- the stages, one call each (for tests and benchmarks) --------------------------------------------
    def frame_features(self, images: Tensor) -> Tensor:
        """(N, 3, H, W) in [-1, 1] -> (N, C, H, W) float32, channels-last; see :func:`.stages.features.frame_features`."""
        network = self.features if self.settings.uses_features else None
        return frame_features(images, network, graphed=not self.settings.custom_features)

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        """Stereo encoder on frames (N, 3, H, W) in [-1, 1] -> (tokens, pos, (H, W))."""
        return self._stereo_geometry.encode(images)

    def decode(self, tok1: Tensor, pos1: Tensor, tok2: Tensor, pos2: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Decoder + heads on encoded pairs -> point maps (n, 2, H, W, 3) in view 1's frame, conf (n, 2, H, W)."""
        return self._stereo_geometry.decode(tok1, pos1, tok2, pos2, shape)

    def pair_geometry(self, images1: Tensor, images2: Tensor) -> tuple[Tensor, Tensor]:
        """Point maps and confidences of pairs (n, 3, H, W) x 2 in [-1, 1]; see :meth:`decode`."""
        t, p, shape = self.encode(torch.cat((images1, images2)))
        n = images1.shape[0]
        return self.decode(t[:n], p[:n], t[n:], p[n:], shape)

    def render_pairs(
        self, pts3d: Tensor, conf: Tensor | None, features: Tensor, *, return_renders: bool = False,
        intrinsics: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """Splat + distance of directed pairs (arguments: :func:`.stages.splat.splat_pairs`).

        Returns:
            dict with ``score`` (n,) (official formula; 0 on an empty mask), ``overlap`` (n,) fraction of
            render pixels in the mask, ``overlap_mask`` (n, h, w) bool, ``coverage`` (n, 2, h, w) bool,
            ``score_map`` (n, h, w), ``focal_px`` (n, 2), ``focal_ndc`` (n, 2) [, ``renders`` (n, 2, C, h, w)].
        """
        sp = splat_pairs(pts3d, conf, features, self.settings, intrinsics=intrinsics)
        out = score_pairs(sp["renders"][:, 0], sp["renders"][:, 1], sp["mask"], self.settings, self.lpips)
        out.update(coverage=sp["coverage"], focal_px=sp["focal_px"], focal_ndc=sp["focal_ndc"])
        if return_renders:
            out["renders"] = sp["renders"]
        return out

    def _net_precision(self, device: torch.device) -> Any:
        """The networks' autocast of ``settings.precision`` (:func:`met3r_metrics.precision.network_autocast`)."""
        return network_autocast(self.settings.precision, device)

    def geometry_source(self, geometry: KnownGeometry | None = None) -> GeometrySource:
        """Where the pairs' geometry comes from: RAFT, given cameras, a user's network or the stereo network."""
        s = self.settings
        if (geometry is not None) != (s.geometry == "given"):
            raise ValueError(f"geometry: expected {'a KnownGeometry' if s.geometry == 'given' else 'None'} with "
                             f"geometry={s.geometry!r}, got {type(geometry).__name__}")
        if s.uses_flow:
            return FlowGeometry(self.flow, s.precision)
        if geometry is not None:
            return GivenGeometry(geometry)
        if self.geometry_net is not None:
            return CustomGeometry(self.geometry_net, s.backbone, s.focal_source, s.precision)
        if self.stereo is None:
            raise ValueError(f"backbone: expected a geometry network for {s.backbone!r}, got a scorer without one")
        return self._stereo_geometry

    # -- sequences ---------------------------------------------------------------------------------
    def score_sequences(
        self, images: Tensor, pairs: Sequence[tuple[int, int]] | Tensor | None = None, *, return_maps: bool = False,
        return_renders: bool = False, geometry: KnownGeometry | None = None,
    ) -> dict[str, Tensor]:
        """Score the pairs of every sequence.

        Args:
            images: (B, V, 3, H, W) float in [-1, 1] (already validated, see
                :func:`met3r_metrics.inputs.validate_images`), on the scorer's device.
            pairs: (P, 2) index pairs (i, j); default :meth:`Settings.pairs` (pairing, pair_gap).
            return_maps: also return score maps and overlap masks (B, P, h, w).
            return_renders: also return the renders (B, P, 2, C, h, w) of the forward direction (with RAFT:
                view a and view b warped onto it, at the input size).
            geometry: a :class:`~met3r_metrics.known_geometry.KnownGeometry` (B, V, H, W) on the images'
                device, exactly when ``settings.geometry == "given"``: no geometry network runs; pair (i, j)
                is rendered with camera i's intrinsics.

        Numerics: autocast off and the TF32 mode of ``settings.precision`` (a caller's autocast or global TF32
        switch does not leak in); with ``precision="bf16"`` the networks run under bfloat16 autocast, geometry
        glue, splatting and distances stay in float32 (:mod:`met3r_metrics.precision`).

        Returns:
            dict with ``pair_scores`` (B, P) (NaN where a pair has no overlap and ``nan_on_no_overlap``),
            ``overlap`` (B, P), ``no_overlap`` (B, P) bool, ``pairs`` (P, 2) long, and when ``symmetric``:
            ``forward_scores`` / ``reverse_scores`` (B, P). With ``return_maps``: ``score_maps``,
            ``overlap_masks`` (forward direction, in view i) and, when symmetric, ``score_maps_reverse``,
            ``overlap_masks_reverse``.
        """
        s = self.settings
        b, v, _, h, w = images.shape
        if h != w and isinstance(s.img_size, int) and not s.uses_flow:
            warnings.warn(
                f"MEt3R: non-square input {h}x{w} is rendered on a square {s.img_size}x{s.img_size} grid "
                "(the official behaviour, which distorts the render); pass img_size=None (met3r-eval: "
                "metric.img_size=input) to render at the input size",
                stacklevel=3,
            )
        pair_list, items, uses = directed_items(s, b, v, pairs)
        source = self.geometry_source(geometry)
        keep = {"score", "overlap"} | ({"score_map", "overlap_mask"} if return_maps else set())
        keep |= {"renders"} if return_renders else set()
        cache: dict[tuple[int, int], tuple[Tensor, Any]] = {}  # (sequence, view) -> (features, geometry state)
        results: dict[tuple[int, int, int], dict[str, Tensor]] = {}
        with scoring_precision(s.precision, images.device):
            for start in range(0, len(items), s.batch_size):
                chunk = items[start : start + s.batch_size]
                need = sorted({(bi, fv) for bi, _, _, fa, fb in chunk for fv in (fa, fb)} - set(cache))
                if need:
                    frames = torch.stack([images[bi, fv] for bi, fv in need])
                    states = source.frame_states(frames, need)
                    with network_autocast(s.precision, images.device):
                        feats = self.frame_features(frames).float()
                    cache.update({key: (feats[k], states[k]) for k, key in enumerate(need)})
                ka, kb = [(bi, fa) for bi, _, _, fa, _ in chunk], [(bi, fb) for bi, _, _, _, fb in chunk]
                pair_geometry = source.pairs([cache[k][1] for k in ka], [cache[k][1] for k in kb])
                out = self._compare(pair_geometry, [cache[k][0] for k in ka], [cache[k][0] for k in kb], return_renders)
                record(results, chunk, out, keep, uses, cache)
        return assemble(results, s, b, pair_list, return_maps=return_maps, return_renders=return_renders)

    def _compare(self, geo: PairGeometry, first: list[Tensor], second: list[Tensor], return_renders: bool) -> dict[str, Tensor]:
        """Both views of each pair brought onto view a (splatted, or warped along a flow), then scored."""
        if geo.flow is not None:
            warped = warp_pairs(geo.flow, first, second, self.settings)
            out = score_pairs(warped["first"], warped["second"], warped["mask"], self.settings, self.lpips)
            if return_renders:
                out["renders"] = torch.stack((warped["first"], warped["second"]), dim=1)
            return out
        return self.render_pairs(geo.points, geo.conf, points_layout(first, second), return_renders=return_renders,
                                 intrinsics=geo.intrinsics)

    def forward(self, images: Tensor, pairs: Sequence[tuple[int, int]] | Tensor | None = None) -> Tensor:
        """(B, V, 3, H, W) in [-1, 1] -> pair scores (B, P)."""
        return self.score_sequences(images, pairs)["pair_scores"]

    def extra_repr(self) -> str:
        s = self.settings
        return f"variant={s.variant!r}, backbone={s.backbone!r}, distance={s.distance!r}, img_size={s.img_size!r}"


def get_scorer(settings: Settings, device: torch.device | str | None = None) -> MEt3RScorer:
    """Process-level cache of scorers keyed by (settings, device); networks are shared between scorers.

    ``device`` is canonicalised (``"cuda"`` is ``cuda:<current>``), so one GPU holds one copy of the weights.
    """
    if not isinstance(settings, Settings):
        raise TypeError(f"settings: expected a met3r_metrics.Settings, got {type(settings).__name__}")
    dev = canonical_device(device)
    return cached_scorer((settings, str(dev)), lambda: MEt3RScorer.from_settings(settings, dev))


def scorer_for(settings: Settings, device: torch.device | str | None, networks: dict[str, Any] | None = None) -> MEt3RScorer:
    """The scorer of ``settings`` on ``device``: a user's networks get a scorer of their own (never cached:
    two networks of one name stay apart), every other settings the process cache (:func:`get_scorer`)."""
    if networks or settings.custom_backbone or settings.custom_features:
        return MEt3RScorer.from_settings(settings, device, **(networks or {}))
    return get_scorer(settings, device)
