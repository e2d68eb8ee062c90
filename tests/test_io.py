"""met3r_metrics.io: readers, natural sort, discovery, pinned resize."""

import numpy as np
import pytest
import torch
from conftest import _moving_pattern, write_gif, write_mp4, write_png_sequence

from met3r_metrics import io


def test_natural_sort():
    names = ["f10.png", "f2.png", "F1.png", "f0.png"]
    assert sorted(names, key=io.natural_key) == ["f0.png", "F1.png", "f2.png", "f10.png"]


def test_frame_folder_natural_order_and_exact_pixels(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 12, 32, 48, seed=3)
    views = io.read_frame_folder(folder)
    assert views.dtype == torch.uint8 and views.shape == (12, 3, 32, 48)
    expected = torch.from_numpy(_moving_pattern(12, 32, 48, seed=3)).permute(0, 3, 1, 2)
    assert torch.equal(views, expected)  # f10/f11 come after f9, PNG is lossless


def test_gif_and_mp4(tmp_path):
    expected = torch.from_numpy(_moving_pattern(5, 64, 64, seed=1)).permute(0, 3, 1, 2).float()
    gif = io.read_video(write_gif(tmp_path / "a.gif", 5))
    assert gif.shape == (5, 3, 64, 64)
    assert (gif.float() - expected).abs().mean() < 20  # GIF palette quantisation
    mp4 = io.read_video(write_mp4(tmp_path / "a.mp4", 6))
    assert mp4.shape == (6, 3, 64, 64) and mp4.dtype == torch.uint8
    expected = torch.from_numpy(_moving_pattern(6, 64, 64, seed=2)).permute(0, 3, 1, 2).float()
    assert (mp4.float() - expected).abs().mean() < 20  # lossy codec, same content


def test_webm(tmp_path):
    """WebM (VP9 via PyAV) reads like mp4: every frame, in order, RGB uint8."""
    av = pytest.importorskip("av")
    path, frames = tmp_path / "a.webm", _moving_pattern(5, 64, 64, seed=4)
    try:
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libvpx-vp9", rate=10)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    except (av.error.FFmpegError, ValueError) as err:  # encoder missing from this FFmpeg build
        pytest.skip(f"no VP9 encoder: {err}")
    views = io.read_video(path)
    assert views.shape == (5, 3, 64, 64) and views.dtype == torch.uint8
    expected = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    assert (views.float() - expected).abs().mean() < 20  # lossy codec, same content
    assert [s.kind for s in io.discover_sequences(tmp_path)] == ["video"]


def test_tensor_files(tmp_path):
    x = torch.rand(3, 4, 3, 16, 32)
    torch.save(x, tmp_path / "x.pt")
    assert torch.equal(io.read_tensor_file(tmp_path / "x.pt"), x)
    np.savez(tmp_path / "x.npz", images=x.permute(0, 1, 3, 4, 2).numpy())  # channels-last
    assert torch.equal(io.read_tensor_file(tmp_path / "x.npz"), x)
    srcs = io.discover_sequences(tmp_path / "x.pt")
    assert [s.name for s in srcs] == ["00000", "00001", "00002"]
    assert torch.equal(srcs[2].load(), x[2])


def test_discover_folder_of_sequences(sequence_folder, tmp_path):
    (sequence_folder / "notes.txt").write_text("ignored")
    srcs = io.discover_sequences(sequence_folder)
    assert [s.name for s in srcs] == ["clip.gif", "seq_a", "seq_b", "seq_c"]
    assert [s.kind for s in srcs] == ["video", "frames", "frames", "frames"]
    single = io.discover_sequences(sequence_folder / "seq_b")
    assert len(single) == 1 and single[0].load().shape == (3, 3, 64, 64)
    with pytest.raises(FileNotFoundError):
        io.discover_sequences(tmp_path / "missing")


def test_size_check_and_pinned_resize():
    views = torch.rand(2, 3, 40, 60)
    with pytest.raises(io.FrameSizeError, match=r"data.resize=\[48,64\]"):
        io.check_or_resize(views, resize=None)
    # FeatUp's dino16 needs an even number of patch rows: height a multiple of 32
    with pytest.raises(io.FrameSizeError, match=r"height must be a multiple of 32.*data.resize=\[64,48\]"):
        io.check_or_resize(torch.rand(1, 3, 48, 48), resize=None, height_multiple=32)
    with pytest.raises(io.FrameSizeError, match="invalid"):
        io.check_or_resize(views, resize=[16, 64])  # below the 32-pixel minimum
    out = io.check_or_resize(views, resize=[32, 48], filter="bicubic")
    assert out.shape == (2, 3, 32, 48) and out.min() >= 0 and out.max() <= 1
    same = torch.rand(1, 3, 32, 32)
    assert io.check_or_resize(same, resize=None) is same
    # antialiased: shrinking a checkerboard gives grey, not aliasing
    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).float().expand(1, 3, 64, 64)
    small = io.resize_views(checker, 16, "bicubic")
    assert (small - 0.5).abs().max() < 0.05


def test_frame_selection():
    v = torch.arange(10)
    assert io.select_frames(v, stride=3).tolist() == [0, 3, 6, 9]
    assert io.select_frames(v, stride=2, max_frames=2).tolist() == [0, 2]
