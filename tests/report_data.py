"""Real-image results folders for the report / compare / browser tests: three short pans over
scikit-image photographs (astronaut, chelsea, coffee), scored by met3r-eval with the tiny networks.

Method "clean" has the pans as they are; method "noisy" adds per-frame Gaussian noise (less
consistent features, so it should score worse); "partial" has only two of the three sequences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import hydra_value

IMAGES = ("astronaut", "chelsea", "coffee")


def write_pans(root: Path, noise: float = 0.0, names: tuple[str, ...] = IMAGES, frames: int = 4,
               short: bool = False) -> Path:
    """One folder of frames per photograph: 256x256 windows moving 12 px right per frame, resized to 64x64;
    ``short`` adds a one-frame sequence (an error record)."""
    from PIL import Image
    from skimage import data

    rng = np.random.default_rng(0)
    for name in names:
        img = getattr(data, name)()
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(frames):
            crop = Image.fromarray(img[40:296, 40 + 12 * k: 296 + 12 * k]).resize((64, 64), Image.BICUBIC)
            pixels = np.asarray(crop).astype(np.float64) + rng.normal(0.0, noise, (64, 64, 3)) * (noise > 0)
            Image.fromarray(np.clip(pixels, 0, 255).round().astype(np.uint8)).save(folder / f"{k}.png")
    if short:
        (root / "lonely").mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.astronaut()[:64, :64]).save(root / "lonely" / "0.png")
    return root


def tiny_overrides(golden_root: Path, workdir: Path) -> list[str]:
    """met3r-eval overrides for the tiny random-weight networks on CPU, one thread (shared CI cores)."""
    from met3r_metrics.testing import tiny_met3r_kwargs

    kw = tiny_met3r_kwargs(golden_root, workdir)
    return [f"metric.{k}={hydra_value(v)}" for k, v in kw.items()] + [
        "runtime.progress=false", "runtime.device=cpu", "runtime.num_threads=1"]


def evaluate(data: Path, out: Path, tiny: list[str], *extra: str) -> dict:
    """met3r-eval in-process (this checkout's code); returns the summary."""
    from met3r_metrics.cli.evaluate import compose_config, run

    return run(compose_config([f"data.path={data}", f"output.dir={out}", *tiny, *extra]))


def make_runs(golden_root: Path, root: Path) -> dict[str, Path]:
    """The results folders 'clean' (with an error record), 'noisy', 'partial' under ``root``."""
    tiny = tiny_overrides(golden_root, root / "weights")
    runs = {}
    for name, kwargs in (("clean", {"short": True}), ("noisy", {"noise": 40.0}),
                         ("partial", {"names": IMAGES[:2], "noise": 20.0})):
        data = write_pans(root / "data" / name, **kwargs)
        runs[name] = root / name
        evaluate(data, runs[name], tiny)
    return runs
