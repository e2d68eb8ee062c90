"""MEt3R's stages, one module each, each with one entry point a benchmark can time on its own.

Data flows down this list; no stage imports the scorer, the networks' builder or a later stage:

* :mod:`.geometry`: per directed pair, where view b's content lands in view a: point maps + confidences
  [+ intrinsics] (stereo network | given cameras | a user's network) or an optical flow (RAFT), behind one
  interface (:class:`~met3r_metrics.stages.geometry.GeometrySource`);
* :mod:`.features`: per-frame features (DINO + upsampler, or the RGB image), a few frames per call;
* :mod:`.splat`: camera (focal estimate / intrinsics) + rasterize + composite both views into view a;
* :mod:`.warp`: the flow's counterpart of splatting, view b's features warped onto view a;
* :mod:`.distance`: per-pixel distance maps -> masked per-pair scores.
"""
