"""Shared fixtures. Golden data lives in ../shared/golden relative to the repository root and never skips."""

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN_ROOT = (REPO_ROOT / ".." / "shared" / "golden").resolve()


def hydra_value(value) -> str:
    """``value`` as a hydra command-line override value (None -> null, bools lower-case, lists [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return str(value)


def golden_path(*parts: str) -> Path:
    """Path inside ../shared/golden; fails the test (never skips) when the data is missing."""
    path = GOLDEN_ROOT.joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"golden data missing: {path} (expected ../shared/golden beside the repository root)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def golden_root() -> Path:
    return golden_path()


@pytest.fixture(params=["torch_default", "TORCH_FORCE_WEIGHTS_ONLY_LOAD=1"])
def torch_load_policy(request, monkeypatch):
    """Run a checkpoint-reading test twice: with torch.load's defaults, and with TORCH_FORCE_WEIGHTS_ONLY_LOAD=1
    (what security-minded sites set), under which torch.load refuses every explicit pickle_module."""
    if request.param == "torch_default":
        monkeypatch.delenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", raising=False)
    else:
        monkeypatch.setenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "1")
    return request.param


# --- test data for io / CLI tests (met3r-eval): small generated sequences --------------------


def _moving_pattern(num_frames: int, height: int, width: int, seed: int = 0):
    """uint8 (V, H, W, 3) smooth pattern shifting a little per frame (compresses well)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=3)
    frames = []
    for t in range(num_frames):
        chans = [
            127.5 + 100 * np.sin((xx + 2 * t) / (6 + 3 * c) + (yy / (9 + c)) + phase[c]) for c in range(3)
        ]
        frames.append(np.stack(chans, -1).clip(0, 255).astype(np.uint8))
    return np.stack(frames)


def write_png_sequence(folder: Path, num_frames: int, height: int = 64, width: int = 64, seed: int = 0) -> Path:
    """Frames named f0.png, f1.png, ..., f10.png (natural order differs from lexicographic)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(_moving_pattern(num_frames, height, width, seed)):
        Image.fromarray(frame).save(folder / f"f{t}.png")
    return folder


def write_gif(path: Path, num_frames: int, height: int = 64, width: int = 64, seed: int = 1) -> Path:
    from PIL import Image

    frames = [Image.fromarray(f) for f in _moving_pattern(num_frames, height, width, seed)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_mp4(path: Path, num_frames: int, height: int = 64, width: int = 64, seed: int = 2) -> Path:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in _moving_pattern(num_frames, height, width, seed):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture
def sequence_folder(tmp_path: Path) -> Path:
    """A folder of 4 sequences: 3 frame folders (11, 3 and 2 frames) and a GIF (4 frames)."""
    root = tmp_path / "seqs"
    write_png_sequence(root / "seq_a", 11, seed=0)
    write_png_sequence(root / "seq_b", 3, seed=1)
    write_png_sequence(root / "seq_c", 2, seed=2)
    write_gif(root / "clip.gif", 4)
    return root


@contextlib.contextmanager
def torch_threads(n: int = 1) -> Iterator[None]:
    """Run with ``n`` intra-op threads, restored after: tiny networks on 2 shared cores run several times
    faster on one thread than on two."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Module-wide :func:`torch_threads` (1); opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    with torch_threads(1):
        yield
