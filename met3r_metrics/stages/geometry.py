"""Stage: where view b's content lands in view a, for directed pairs (a, b), from one of four sources.

One interface (:class:`GeometrySource`), so the scorer has one sequence loop for all of them:

* :class:`StereoGeometry`: DUSt3R / MASt3R, encoder once per frame, decoder + heads per pair;
* :class:`GivenGeometry`: known cameras (:class:`~met3r_metrics.KnownGeometry`): no network;
* :class:`CustomGeometry`: a user's network ``(images1, images2) -> (points, conf[, intrinsics])``;
* :class:`FlowGeometry`: RAFT optical flow from view a to view b (``backbone="raft"``).

A source turns frames into per-frame state once (:meth:`GeometrySource.frame_states`: tokens, the frame, or
its key) and pairs of states into a :class:`PairGeometry` (:meth:`GeometrySource.pairs`: the entry point a
benchmark times). Geometry is detached: gradients reach the images through the features only, as officially.
Networks run under ``precision``'s autocast (:func:`met3r_metrics.precision.network_autocast`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from ..cuda_graphs import graphs_for
from ..geometry import CONF_OFFSET
from ..known_geometry import KnownGeometry
from ..precision import network_autocast

__all__ = ["PairGeometry", "GeometrySource", "StereoGeometry", "GivenGeometry", "CustomGeometry", "FlowGeometry"]

Key = tuple[int, int]  # (sequence index, view index)


@dataclass
class PairGeometry:
    """The geometry of n directed pairs: point maps (+ confidences, optional intrinsics) or a flow."""

    points: Tensor | None = None  # (n, 2, H, W, 3) view a's and view b's points in view a's frame, float32
    conf: Tensor | None = None  # (n, 2, H, W), for the focal estimate (None with intrinsics)
    intrinsics: Tensor | None = None  # (n, 4) pixel (fx, fy, cx, cy) of view a
    flow: Tensor | None = None  # (n, 2, H, W) pixel flow from view a to view b (then no points)


class GeometrySource(Protocol):
    """What the scorer's loop asks of every geometry source."""

    def frame_states(self, frames: Tensor, keys: Sequence[Key]) -> list[Any]:
        """Per-frame state of frames (N, 3, H, W) in [-1, 1] with their (sequence, view) keys."""

    def pairs(self, first: Sequence[Any], second: Sequence[Any]) -> PairGeometry:
        """The geometry of the pairs (first[k], second[k]) of frame states."""


class StereoGeometry:
    """DUSt3R / MASt3R: the encoder once per frame (tokens are the state), decoder + heads per pair."""

    def __init__(self, stereo: nn.Module, precision: str = "fp32") -> None:
        self.stereo, self.precision = stereo, precision

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

    def frame_states(self, frames: Tensor, keys: Sequence[Key]) -> list[Any]:
        with network_autocast(self.precision, frames.device):
            tok, pos, shape = self.encode(frames)
        return [(tok[k], pos[k], shape) for k in range(len(keys))]

    def pairs(self, first: Sequence[Any], second: Sequence[Any]) -> PairGeometry:
        t1, p1 = torch.stack([t for t, _, _ in first]), torch.stack([p for _, p, _ in first])
        t2, p2 = torch.stack([t for t, _, _ in second]), torch.stack([p for _, p, _ in second])
        with network_autocast(self.precision, t1.device):
            pts, conf = self.decode(t1, p1, t2, p2, first[0][2])
        return PairGeometry(points=pts, conf=conf)


class GivenGeometry:
    """Known cameras: pair (a, b) is view b's points moved into camera a, rendered with a's intrinsics."""

    def __init__(self, known: KnownGeometry) -> None:
        self.known = known

    def frame_states(self, frames: Tensor, keys: Sequence[Key]) -> list[Any]:
        return list(keys)  # the cameras are indexed by (sequence, view)

    def pairs(self, first: Sequence[Any], second: Sequence[Any]) -> PairGeometry:
        pts, intr = self.known.pair_points(first, second)
        return PairGeometry(points=pts, intrinsics=intr)


class CustomGeometry:
    """A user's geometry network on pairs (n, 3, H, W) x 2 in [-1, 1], its outputs checked.

    It returns points (n, 2, H, W, 3) in view 1's frame and conf (n, 2, H, W), plus intrinsics (n, 3, 3) of view
    1 in pixels exactly when ``focal_source="intrinsics"``. ``name`` (``"custom:<name>"``) is what errors call it.
    """

    def __init__(self, network: Any, name: str, focal_source: str, precision: str = "fp32") -> None:
        self.network, self.name, self.focal_source, self.precision = network, name, focal_source, precision

    def frame_states(self, frames: Tensor, keys: Sequence[Key]) -> list[Any]:
        return list(frames)  # the network sees the frames themselves

    def pairs(self, first: Sequence[Any], second: Sequence[Any]) -> PairGeometry:
        images1, images2 = torch.stack(list(first)), torch.stack(list(second))
        with torch.no_grad(), network_autocast(self.precision, images1.device):
            out = self.network(images1, images2)
        pts, conf, intr = self._checked(out, *images1.shape)
        return PairGeometry(points=pts, conf=conf, intrinsics=intr)

    def _checked(self, out: Any, n: int, _c: int, h: int, w: int) -> tuple[Tensor, Tensor, Tensor | None]:
        name = self.name
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
        if (intr is not None) != (self.focal_source == "intrinsics"):
            raise ValueError(
                f"focal_source: expected {'intrinsics' if intr is not None else 'estimate'!r} for {name}, which "
                f"{'returns' if intr is not None else 'does not return'} intrinsics, got {self.focal_source!r}"
            )
        return pts, conf, intr


class FlowGeometry:
    """RAFT (``backbone="raft"``): the flow from view a to view b, its last of 12 estimates, detached."""

    def __init__(self, raft: nn.Module, precision: str = "fp32") -> None:
        self.raft, self.precision = raft, precision

    def frame_states(self, frames: Tensor, keys: Sequence[Key]) -> list[Any]:
        return list(frames)

    def pairs(self, first: Sequence[Any], second: Sequence[Any]) -> PairGeometry:
        img_a, img_b = torch.stack(list(first)), torch.stack(list(second))
        # the official arithmetic: [-1, 1] inputs go to [0, 1] and back (2 x - 1) before RAFT
        signed = lambda x: 2 * ((x + 1) / 2) - 1  # noqa: E731
        with torch.no_grad(), network_autocast(self.precision, img_a.device):
            flow = self.raft(signed(img_a), signed(img_b))[-1].float()
        return PairGeometry(flow=flow)
