"""met3r_metrics.io, reading frames (issue #13/#14): what is read, what is refused, and the fingerprints.

Every input is a real file written by the test: 16-bit PNG/TIFF, float TIFF, Matroska/mp4/GIF
cut to a fraction of their bytes, symbolic links, mixed folder layouts, pickled .pt files.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _moving_pattern, write_gif, write_mp4, write_png_sequence
from worker_probe import RecordWorkers, assert_ran_in_workers

from met3r_metrics import io

REPO = Path(__file__).resolve().parents[1]


def _gray16_pan(num_frames: int, height: int = 64, width: int = 64) -> np.ndarray:
    """uint16 (V, H, W): a horizontal ramp over the full 16-bit range, shifting 3 px per frame."""
    xx = np.arange(width + 3 * num_frames, dtype=np.float64)
    ramp = (0.5 + 0.5 * np.sin(xx / 7.0)) * 65535
    return np.stack([np.tile(ramp[3 * t:3 * t + width], (height, 1)) for t in range(num_frames)]).astype(np.uint16)


def _write_gray16(folder: Path, frames: np.ndarray, suffix: str = ".png") -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"f{t}{suffix}")
    return folder


def _cut(path: Path, fraction: float, dest: Path) -> Path:
    data = path.read_bytes()
    dest.write_bytes(data[: int(len(data) * fraction)])
    return dest


# --- 16-bit and float images (issue #13 item 4) -----------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_grayscale_frames_are_scaled_by_their_bit_depth(tmp_path, suffix):
    """Before: convert("RGB") clipped I;16 at 255, so every frame read as solid white."""
    frames = _gray16_pan(4)
    folder = _write_gray16(tmp_path / "s", frames, suffix)
    from PIL import Image

    assert Image.open(folder / f"f0{suffix}").mode == "I;16"  # the case under test
    one = io.read_image(folder / f"f0{suffix}")
    assert one.dtype == torch.float32 and one.shape == (3, 64, 64)
    expected = torch.from_numpy(frames.astype(np.float32) / 65535.0)[:, None].expand(4, 3, 64, 64)
    assert torch.equal(one, expected[0])
    assert torch.equal(io.read_frame_folder(folder), expected)
    prepared = io.prepare_views(io.discover_sequences(folder)[0])
    assert torch.equal(prepared.views, expected) and prepared.value_range == "uint16"
    # a panning sequence: consecutive frames differ (solid white frames would be equal)
    assert (prepared.views[1:] - prepared.views[:-1]).abs().mean() > 0.01
    assert prepared.views.min() < 0.01 and prepared.views.max() > 0.99


def test_8bit_and_16bit_frames_in_one_folder(tmp_path):
    from PIL import Image

    folder = write_png_sequence(tmp_path / "s", 2)  # f0.png, f1.png: 8-bit RGB
    g16 = _gray16_pan(1)[0]
    Image.fromarray(g16).save(folder / "f2.png")
    views = io.read_frame_folder(folder)
    assert views.dtype == torch.float32 and views.shape == (3, 3, 64, 64)
    eight = torch.from_numpy(_moving_pattern(2, 64, 64)).permute(0, 3, 1, 2).float() / 255.0
    assert torch.equal(views[:2], eight)
    assert torch.equal(views[2, 0], torch.from_numpy(g16.astype(np.float32) / 65535.0))
    prepared = io.prepare_views(io.discover_sequences(folder)[0])
    assert prepared.value_range == "uint8+uint16" and torch.equal(prepared.views, views)


def test_16bit_frames_with_value_range_uint8_are_refused(tmp_path):
    folder = _write_gray16(tmp_path / "s", _gray16_pan(2))
    (source,) = io.discover_sequences(folder, value_range="uint8")
    with pytest.raises(io.ValueRangeError, match=r"data.value_range=uint8 but frame .*f0.png is a 16-bit image .*value_range=auto"):
        io.prepare_views(source)


def test_float_and_32bit_integer_tiffs_are_refused(tmp_path):
    """Before: a float TIFF in [0, 1] was read as (almost) black, silently."""
    from PIL import Image

    folder = tmp_path / "s"
    folder.mkdir()
    Image.fromarray(np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)).save(folder / "f0.tif")
    with pytest.raises(ValueError, match=r"frame .*f0.tif: 32-bit float image \(Pillow mode F\) is refused.*data.value_range=01 or -11"):
        io.read_image(folder / "f0.tif")
    with pytest.raises(ValueError, match="mode F"):
        io.prepare_views(io.discover_sequences(folder)[0])
    Image.fromarray(np.arange(64 * 64, dtype=np.int32).reshape(64, 64)).save(tmp_path / "i32.tif")
    with pytest.raises(ValueError, match=r"i32.tif: 32-bit integer image \(Pillow mode I\) is refused"):
        io.read_image(tmp_path / "i32.tif")


def test_16bit_rgb_png_keeps_its_range(tmp_path):
    """Pillow opens 48-bit RGB PNG as 8-bit RGB (the high byte): the range stays right, uint8 out."""
    import struct
    import zlib

    arr = (np.random.default_rng(0).random((32, 32, 3)) * 65535).astype(np.uint16)
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(32))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 32, 16, 2, 0, 0, 0))
    (tmp_path / "rgb16.png").write_bytes(png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    img = io.read_image(tmp_path / "rgb16.png")
    assert img.dtype == torch.uint8
    assert torch.equal(img, torch.from_numpy((arr >> 8).astype(np.uint8)).permute(2, 0, 1))


# --- frames of different sizes with data.resize (item 9) ---------------------------------------


def _two_size_folder(tmp_path: Path) -> Path:
    from PIL import Image

    folder = write_png_sequence(tmp_path / "s", 3, 64, 64)
    Image.fromarray(_moving_pattern(1, 48, 80, seed=5)[0]).save(folder / "f1.png")  # f1 is 48x80
    return folder


def test_frames_of_different_sizes_are_resized_per_frame(tmp_path):
    """Before: frames of different sizes failed even with data.resize=[64,64] (stacked before resizing)."""
    folder = _two_size_folder(tmp_path)
    with pytest.raises(io.FrameSizeError, match=r"2 different sizes \(f0.png is 64x64, f1.png is 48x80\): set data.resize="):
        io.read_frame_folder(folder)
    (source,) = io.discover_sequences(folder)
    with pytest.raises(io.FrameSizeError, match=r"f1.png is 48x80.*data.resize="):
        io.prepare_views(source)
    views = io.read_frame_folder(folder, resize=[64, 64], resize_filter="bicubic")
    assert views.shape == (3, 3, 64, 64) and views.dtype == torch.float32
    prepared = io.prepare_views(source, resize=[64, 64], resize_filter="bicubic")
    assert torch.equal(prepared.views, views)
    assert prepared.resized and prepared.input_sizes == [(48, 80), (64, 64)]
    f1 = io.read_image(folder / "f1.png").float()[None] / 255.0
    assert torch.equal(views[1], io.resize_views(f1, (64, 64), "bicubic")[0])
    f0 = io.read_image(folder / "f0.png").float() / 255.0
    assert torch.equal(views[0], f0)  # already at the target size: untouched


def test_per_frame_resize_equals_the_batch_resize(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 4, 48, 80)
    batch = io.check_or_resize(io.read_frame_folder(folder).float() / 255.0, resize=[64, 64], filter="bicubic")
    prepared = io.prepare_views(io.discover_sequences(folder)[0], resize=[64, 64])
    assert torch.allclose(prepared.views, batch, atol=1e-6, rtol=0)
    assert prepared.resized and prepared.input_sizes == [(48, 80)]


def test_invalid_resize_target_and_filter_name_the_setting(tmp_path):
    (source,) = io.discover_sequences(write_png_sequence(tmp_path / "s", 2))
    with pytest.raises(io.FrameSizeError, match=r"data.resize=48x64 is invalid: height must be a multiple of 32"):
        io.prepare_views(source, resize=[48, 64], height_multiple=32)
    with pytest.raises(ValueError, match=r"data.resize_filter must be one of bicubic, bilinear, area, nearest; got 'lanczos'"):
        io.prepare_views(source, resize=[64, 64], resize_filter="lanczos")
    with pytest.raises(ValueError, match=r"data.frame_stride must be an integer >= 1; got 0"):
        io.prepare_views(source, frame_stride=0)
    with pytest.raises(ValueError, match=r"no frames left after frame selection: 2 stored, data.start=5"):
        io.prepare_views(source, start=5)


# --- broken symbolic links (item 6) ---------------------------------------------------------


def test_broken_symlink_frame_is_an_error_naming_it(tmp_path):
    """Before: the broken link was silently dropped, shifting every later pair."""
    folder = write_png_sequence(tmp_path / "s", 4)
    (folder / "f2.png").unlink()
    (folder / "f2.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(FileNotFoundError, match=r"frame .*f2.png is a broken symbolic link \(-> .*gone.png\)"):
        io.read_frame_folder(folder)
    (source,) = io.discover_sequences(folder)
    with pytest.raises(FileNotFoundError, match="f2.png is a broken symbolic link"):
        io.prepare_views(source, max_frames=2)  # even when the link is not among the frames used
    with pytest.raises(FileNotFoundError, match="f2.png"):
        source.fingerprint()


def test_valid_symlinks_are_followed(tmp_path):
    src = write_png_sequence(tmp_path / "src", 3)
    folder = tmp_path / "s"
    folder.mkdir()
    for name in ("f0.png", "f1.png", "f2.png"):
        (folder / name).symlink_to(src / name)
    assert torch.equal(io.read_frame_folder(folder), io.read_frame_folder(src))


def test_broken_symlinks_in_a_folder_of_sequences_are_reported(tmp_path):
    root = tmp_path / "seqs"
    write_png_sequence(root / "a", 2)
    (root / "b").symlink_to(tmp_path / "missing_dir")  # a sequence folder whose target is gone
    (root / "c.mp4").symlink_to(tmp_path / "missing.mp4")
    srcs = io.discover_sequences(root)
    assert [(s.name, s.kind) for s in srcs] == [("a", "frames"), ("b", "missing"), ("c.mp4", "video")]
    for s in srcs[1:]:
        with pytest.raises(FileNotFoundError, match=rf"{s.name} is a broken symbolic link"):
            io.prepare_views(s)
    broken_root = tmp_path / "link"
    broken_root.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="data.path is a broken symbolic link"):
        io.discover_sequences(broken_root)


# --- folder layouts (item 3) ----------------------------------------------------------------


def test_loose_images_next_to_sequence_folders_are_refused(tmp_path):
    """Before: two loose images made the whole folder one two-frame sequence; the 16 were ignored."""
    root = tmp_path / "seqs"
    for k in range(16):
        write_png_sequence(root / f"seq_{k:02d}", 2, seed=k)
    write_png_sequence(root, 2, seed=99)  # f0.png, f1.png at the top
    with pytest.raises(ValueError, match=(
        r"data.path=.*seqs mixes 2 loose image file\(s\) \(f0.png, f1.png\) with 16 sequence entries "
        r"\(sub-folders/videos: seq_00, seq_01, seq_02, \.\.\. \(16 in all\)\)"
    )) as info:
        io.discover_sequences(root)
    assert isinstance(info.value, io.MixedLayoutError) and "\n" not in str(info.value)


def test_loose_images_next_to_a_video_are_refused(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 3)
    write_mp4(folder / "preview.mp4", 3)
    with pytest.raises(io.MixedLayoutError, match=r"3 loose image file\(s\).*1 sequence entries.*preview.mp4"):
        io.discover_sequences(folder)


def test_folders_and_videos_together_are_a_folder_of_sequences(tmp_path, caplog):
    root = tmp_path / "seqs"
    write_png_sequence(root / "seq_a", 3)
    write_mp4(root / "clip.mkv", 4)
    write_gif(root / "anim.gif", 3)
    (root / "notes.txt").write_text("x")
    (root / ".hidden").mkdir()
    with caplog.at_level("WARNING", logger="met3r_metrics.io"):
        srcs = io.discover_sequences(root)
    assert [(s.name, s.kind) for s in srcs] == [("anim.gif", "video"), ("clip.mkv", "video"), ("seq_a", "frames")]
    assert "ignored 1 entries that are neither sequences nor frames: notes.txt" in caplog.text
    for s in srcs:
        assert io.prepare_views(s).views.shape[1:] == (3, 64, 64)


def test_no_sequences_names_what_was_ignored(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "samples.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"data.path: no sequences found in .*d \(ignored: samples.pt\)"):
        io.discover_sequences(tmp_path / "d")


# --- truncated videos (item 5) --------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.70, 0.85, 0.95])
def test_truncated_matroska_is_an_error_with_the_counts(tmp_path, fraction):
    """Before: a .mkv cut to 70/85/95 % decoded to fewer of its 20 frames and was used as is."""
    full = write_mp4(tmp_path / "full.mkv", 20)
    assert io.read_video(full).shape[0] == 20
    cut = _cut(full, fraction, tmp_path / "cut.mkv")
    with pytest.raises(ValueError, match=r"cut.mkv: decoded (\d+) of the 20 frames its container declares "
                       r"\(stream DURATION tag 2.000 s x 10 fps\): the file looks truncated") as info:
        io.read_video(cut)
    assert isinstance(info.value, io.TruncatedVideoError)
    with pytest.raises(io.TruncatedVideoError):
        io.prepare_views(io.discover_sequences(cut)[0])
    short = io.read_video(cut, check_length=False)  # explicitly opted out: the surviving frames
    assert 0 < short.shape[0] < 20


def _write_mkv_with_audio(path: Path, num_frames: int = 20, audio_seconds: float = 2.5) -> Path:
    """Matroska: mpeg4 video at 10 fps plus a longer AAC track (the container duration is the audio's)."""
    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for frame in _moving_pattern(num_frames, 64, 64):
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        samples = av.AudioFrame.from_ndarray(np.zeros((1, int(16000 * audio_seconds)), np.float32), format="fltp", layout="mono")
        samples.sample_rate = 16000
        container.mux(audio.encode(samples))
        container.mux(audio.encode())
        container.mux(video.encode())
    return path


def test_truncated_video_with_a_longer_audio_track(tmp_path):
    """The video track's own duration (Matroska DURATION tag) is used, not the container's (the audio's 2.6 s)."""
    full = _write_mkv_with_audio(tmp_path / "full.mkv")
    prepared = io.prepare_views(io.discover_sequences(full)[0])
    assert prepared.video == {"frames_decoded": 20, "frames_expected": 20,
                              "frames_expected_from": "stream DURATION tag 2.000 s x 10 fps"}
    cut = _cut(full, 0.7, tmp_path / "cut.mkv")
    with pytest.raises(io.TruncatedVideoError, match=r"decoded \d+ of the 20 frames"):
        io.read_video(cut)


def test_complete_videos_record_their_counts(tmp_path):
    prepared = io.prepare_views(io.discover_sequences(write_mp4(tmp_path / "a.mp4", 7))[0])
    assert prepared.video == {"frames_decoded": 7, "frames_expected": 7, "frames_expected_from": "stream frame count"}
    assert prepared.record()["frames_expected"] == 7 and prepared.num_frames_stored == 7


@pytest.mark.parametrize("fraction", [0.70, 0.85, 0.95])
def test_truncated_mp4_and_gif_name_the_file(tmp_path, fraction):
    """A cut mp4 loses its index (before: IndexError 'tuple index out of range'); a cut GIF fails part-way."""
    cut = _cut(write_mp4(tmp_path / "full.mp4", 20), fraction, tmp_path / "cut.mp4")
    with pytest.raises(io.VideoDecodeError, match=r"cut.mp4"):
        io.read_video(cut)
    gif = _cut(write_gif(tmp_path / "full.gif", 20), fraction, tmp_path / "cut.gif")
    with pytest.raises(io.TruncatedVideoError, match=r"GIF .*cut.gif: decoding failed after \d+ frame"):
        io.read_video(gif)


def test_not_a_video(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(io.VideoDecodeError, match=r"cannot decode video .*broken.mp4"):
        io.read_video(tmp_path / "broken.mp4")


# --- tensor files: value range per file (item 2), pickles (#14), mmap -------------------------


def test_value_range_is_decided_once_per_file(tmp_path):
    """Before: a [-1, 1] sequence without negative values (a white suit) was read as [0, 1]."""
    x = torch.rand(4, 3, 3, 32, 32) * 2 - 1
    x[1] = x[1].abs()  # the white suit: no negative value
    torch.save(x, tmp_path / "x.pt")
    srcs = io.discover_sequences(tmp_path / "x.pt")
    assert {s.value_range for s in srcs} == {"-11"}
    assert "negative values: [-1, 1]" in srcs[1].value_range_reason
    prepared = io.prepare_views(srcs[1])
    assert torch.allclose(prepared.views, (x[1] + 1) / 2) and prepared.value_range == "-11"
    # the old per-sequence decision (no negative value -> [0, 1]) would have read it as the raw values
    assert not torch.allclose(srcs[1].load(), (x[1] + 1) / 2)


def test_value_range_auto_reads_a_nonnegative_file_as_01(tmp_path):
    x = torch.rand(2, 2, 3, 32, 32, dtype=torch.float64)
    torch.save(x, tmp_path / "x.pt")
    srcs = io.discover_sequences(tmp_path / "x.pt")
    assert srcs[0].value_range == "01" and "no negative value in the whole file" in srcs[0].value_range_reason
    out = io.prepare_views(srcs[0]).views
    assert out.dtype == torch.float32 and torch.allclose(out, x[0].float())
    # an explicit -11 is honoured, and the decision follows it
    srcs = io.discover_sequences(tmp_path / "x.pt", value_range="-11")
    assert srcs[0].value_range == "-11" and torch.allclose(io.prepare_views(srcs[0]).views, (x[0].float() + 1) / 2)


@pytest.mark.parametrize(
    ("values", "setting", "message"),
    [
        (torch.full((1, 2, 3, 4, 4), 200.0), "auto", r"data.value_range=auto cannot decide the range of .*values in \[200, 200\].*set data.value_range=uint8"),
        (torch.full((1, 2, 3, 4, 4), -3.0), "auto", r"data.value_range=auto cannot decide.*rescale them"),
        (torch.full((1, 2, 3, 4, 4), -0.5), "01", r"data.value_range=01 expects values in \[0, 1\], but .* has values in \[-0.5, -0.5\]"),
        (torch.full((1, 2, 3, 4, 4), 2.0), "-11", r"data.value_range=-11 expects values in \[-1, 1\]"),
        (torch.full((1, 2, 3, 4, 4), 7, dtype=torch.uint8), "01", r"data.value_range=01 but .* is uint8 \(0..255\)"),
        (torch.full((1, 2, 3, 4, 4), 300), "auto", r"dtype int64 with values in \[300, 300\]; expected 0..255"),
        (torch.full((1, 2, 3, 4, 4), float("nan")), "auto", r"non-finite values"),
        (torch.zeros(1, 2, 3, 4, 4), "0-1", r"data.value_range must be one of auto, uint8, 01, -11; got '0-1'"),
    ],
)
def test_undecidable_or_contradicting_values_are_refused(tmp_path, values, setting, message):
    torch.save(values, tmp_path / "x.pt")
    with pytest.raises(io.ValueRangeError, match=message):
        io.discover_sequences(tmp_path / "x.pt", value_range=setting)


def test_integer_and_uint8_tensors(tmp_path):
    x = torch.randint(0, 256, (2, 2, 3, 32, 32))  # int64, as torch.randint makes them
    torch.save(x, tmp_path / "i.pt")
    (src, _) = io.discover_sequences(tmp_path / "i.pt")
    assert src.value_range == "uint8" and torch.allclose(io.prepare_views(src).views, x[0].float() / 255)
    np.save(tmp_path / "u.npy", x.to(torch.uint8).numpy())
    (src, _) = io.discover_sequences(tmp_path / "u.npy")
    assert src.value_range == "uint8" and torch.equal(src.load(), x[0].to(torch.uint8))


def test_float_range_settings_are_refused_for_image_inputs(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 2)
    with pytest.raises(io.ValueRangeError, match=r"data.value_range=-11 describes float tensor files, but data.path=.* holds image/video"):
        io.discover_sequences(folder, value_range="-11")
    with pytest.raises(io.ValueRangeError, match="data.value_range=01"):
        io.discover_sequences(write_mp4(tmp_path / "a.mp4", 2), value_range="01")
    assert io.discover_sequences(folder, value_range="uint8")[0].kind == "frames"


def test_pickled_pt_is_refused_naming_the_file_and_the_argument(tmp_path):
    """Before: torch's generic UnpicklingError, which suggests weights_only=False."""
    path = tmp_path / "samples.pt"
    torch.save({"images": torch.zeros(1, 2, 3, 4, 4), "meta": functools.partial(print)}, path)
    with pytest.raises(ValueError) as info:  # before: pickle.UnpicklingError with torch's advice
        io.discover_sequences(path)
    assert isinstance(info.value, io.UnsafeTensorFileError)
    text = str(info.value)
    assert text.startswith(f"data.path={path}: the file holds pickled Python objects (it refers to functools.partial)")
    assert "weights_only" not in text and "\n" not in text
    assert info.value.__cause__ is None and info.value.__suppress_context__  # torch's advice is not chained
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(io.UnsafeTensorFileError, match=r"data.path=.*obj.npy: the file holds pickled Python objects"):
        io.read_tensor_file(tmp_path / "obj.npy")


def test_pt_files_are_memory_mapped_when_the_format_allows(tmp_path, monkeypatch):
    x = torch.rand(2, 2, 3, 8, 8)
    torch.save(x, tmp_path / "zip.pt")
    torch.save(x, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("mmap", False))
        if kwargs.get("mmap"):  # a torch whose refusal to map a legacy file is worded differently
            with open(args[0], "rb") as fh:
                if fh.read(4) != b"PK\x03\x04":
                    raise RuntimeError("this file cannot be memory-mapped")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    assert torch.equal(io.read_tensor_file(tmp_path / "zip.pt"), x) and calls == [True]
    calls.clear()
    # decided by the format (zip archive or not), one read, whatever torch's error message says
    assert torch.equal(io.read_tensor_file(tmp_path / "legacy.pt"), x) and calls == [False]


def test_tensor_sequence_is_a_copy_of_one_sequence(tmp_path):
    x = torch.rand(5, 2, 3, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    seq = io.discover_sequences(tmp_path / "x.pt")[3].load()
    assert torch.equal(seq, x[3])
    # not a view into the whole file (a DataLoader worker would ship the whole storage)
    assert seq.untyped_storage().nbytes() == x[3].numel() * 4


def test_tensor_sources_pickle_without_their_data(tmp_path):
    """A DataLoader under 'spawn' pickles the sources: the file is reloaded there, if unchanged."""
    import pickle

    x = torch.rand(3, 2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    srcs = io.discover_sequences(tmp_path / "x.pt")
    blob = pickle.dumps(srcs[1])
    assert len(blob) < 4096  # not the 74 kB of values
    copy = pickle.loads(blob)
    assert copy.value_range == "01" and torch.equal(io.prepare_views(copy).views, x[1])
    stale = pickle.loads(blob)
    torch.save(x * 0.5, tmp_path / "x.pt")
    os.utime(tmp_path / "x.pt", ns=(0, 1))  # a different mtime whatever the clock's resolution
    with pytest.raises(ValueError, match=r"data.path=.*x.pt changed since it was discovered"):
        io.prepare_views(stale)


# --- fingerprints (item 1) ------------------------------------------------------------------


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_frame_folder_fingerprint_changes_with_its_frames(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 3)
    (source,) = io.discover_sequences(folder)
    fp = source.fingerprint()
    assert fp.startswith("stat:") and fp == source.fingerprint()
    (folder / "notes.txt").write_text("not a frame")
    assert source.fingerprint() == fp  # only frames count
    assert io.prepare_views(source).fingerprint == fp
    _bump_mtime(folder / "f1.png")  # replaced (same size)
    fp_replaced = source.fingerprint()
    assert fp_replaced != fp
    write_png_sequence(tmp_path / "extra", 4)
    (tmp_path / "extra" / "f3.png").rename(folder / "f3.png")  # added
    fp_added = source.fingerprint()
    assert fp_added not in (fp, fp_replaced)
    (folder / "f0.png").unlink()  # deleted
    assert source.fingerprint() not in (fp, fp_replaced, fp_added)


def test_content_fingerprint_ignores_mtime_but_not_bytes(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 3)
    (source,) = io.discover_sequences(folder)
    fp = source.fingerprint("content")
    assert fp.startswith("content:") and fp != source.fingerprint("stat")
    _bump_mtime(folder / "f1.png")
    assert source.fingerprint("content") == fp
    write_png_sequence(tmp_path / "other", 3, seed=7)
    (tmp_path / "other" / "f1.png").replace(folder / "f1.png")
    assert source.fingerprint("content") != fp
    with pytest.raises(ValueError, match="fingerprint mode must be 'stat' or 'content'"):
        source.fingerprint("hash")


def test_video_and_tensor_fingerprints(tmp_path):
    video = write_mp4(tmp_path / "a.mp4", 3)
    (vsrc,) = io.discover_sequences(video)
    fp = vsrc.fingerprint()
    _bump_mtime(video)
    assert vsrc.fingerprint() != fp
    x = torch.rand(3, 2, 3, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    srcs = io.discover_sequences(tmp_path / "x.pt")
    stat_fps = [s.fingerprint() for s in srcs]
    assert len(set(stat_fps)) == 3  # the index is part of it
    content = [s.fingerprint("content") for s in srcs]
    x[2] += 0.001  # regenerate the file, changing only sequence 2
    torch.save(x, tmp_path / "x.pt")
    again = io.discover_sequences(tmp_path / "x.pt")
    assert all(a.fingerprint() != b for a, b in zip(again, stat_fps))  # stat: every sequence of the file
    assert [a.fingerprint("content") == b for a, b in zip(again, content)] == [True, True, False]


def test_fingerprints_are_the_same_in_another_process(tmp_path):
    root = tmp_path / "seqs"
    write_png_sequence(root / "a", 3)
    write_mp4(root / "b.mp4", 3)
    here = {s.name: s.fingerprint() for s in io.discover_sequences(root)}
    code = (
        "import json, sys; from met3r_metrics import io; "
        "print(json.dumps({s.name: s.fingerprint() for s in io.discover_sequences(sys.argv[1])}))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(REPO)})
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


# --- prepared views, records and the DataLoader path ---------------------------------------


def test_prepare_views_matches_the_plain_readers(tmp_path):
    folder = write_png_sequence(tmp_path / "s", 12)
    (source,) = io.discover_sequences(folder)
    prepared = io.prepare_views(source, frame_stride=2, start=1, max_frames=4)
    expected = io.read_frame_folder(folder)[1::2][:4].float() / 255.0
    assert torch.equal(prepared.views, expected) and prepared.frame_indices == [1, 3, 5, 7]
    assert prepared.num_frames_stored == 12 and not prepared.resized
    record = prepared.record()
    assert set(record) == {"fingerprint", "value_range", "num_frames_stored", "input_sizes", "resized"}
    assert json.loads(json.dumps(record)) == record
    with pytest.raises(io.FrameSizeError, match=r"data.resize=\[64,64\]"):
        io.prepare_views(io.discover_sequences(write_png_sequence(tmp_path / "odd", 2, 60, 60))[0])


def test_decoder_versions_name_libavcodec_honestly():
    """Before: 'ffmpeg' held libavcodec's version (62.x), not FFmpeg's."""
    av = pytest.importorskip("av")
    versions = io.decoder_versions()
    assert versions["libavcodec"] == ".".join(str(v) for v in av.library_versions["libavcodec"])
    assert versions["ffmpeg"] == av.ffmpeg_version_info and versions["ffmpeg"] != versions["libavcodec"]
    assert versions["libswscale"] and versions["pyav"] == av.__version__


def test_dataset_with_workers_keeps_the_order_and_records_errors(tmp_path):
    root = tmp_path / "seqs"
    for k in range(5):
        write_png_sequence(root / f"s{k}", 2 + k, seed=k)
    (root / "s2" / "f1.png").write_bytes(b"not a png")  # one unreadable sequence
    write_mp4(root / "v.mkv", 4)
    sources = io.discover_sequences(root)
    prepare = functools.partial(io.prepare_views, resize=[64, 64])
    log = tmp_path / "calls.log"
    results = list(io.iter_prepared(sources, RecordWorkers(prepare, log), num_workers=2, prefetch_factor=1))
    assert_ran_in_workers(log, 2, {s.name for s in sources})  # decoded in two worker processes, not here
    assert [s.name for s, _ in results] == [s.name for s in sources]
    errors = {s.name: r for s, r in results if isinstance(r, io.SequenceError)}
    assert list(errors) == ["s2"] and errors["s2"].error_type == "ValueError"
    assert str(errors["s2"]).startswith("ValueError: cannot read frame ") and "f1.png" in str(errors["s2"])
    for source, result in results:
        if source.name != "s2":
            assert isinstance(result, io.PreparedViews)
            assert torch.equal(result.views, prepare(source).views)
    # the same without workers
    assert [type(r).__name__ for _, r in io.iter_prepared(sources, prepare)] == [type(r).__name__ for _, r in results]


def test_dataset_items_are_indexed(tmp_path):
    x = torch.rand(3, 2, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    dataset = io.SequenceDataset(io.discover_sequences(tmp_path / "x.pt"))
    # a fresh forkserver worker, as iter_prepared uses (a forked one can inherit PyAV state and hang)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2, collate_fn=io.dataset._keep,
                                         multiprocessing_context="forkserver")
    items = list(loader)
    assert [i for i, _ in items] == [0, 1, 2]
    for i, prepared in items:
        assert torch.allclose(prepared.views, x[i])


def test_met3r_eval_reader_applies_the_raft_frame_rule(tmp_path):
    """met3r-eval's reader checks frames with the settings' own size rule: RAFT needs 128 px, so 64x64
    frames are refused while reading (naming data.resize), not later per pair."""
    from met3r_metrics.cli.evaluate import _preparer
    from met3r_metrics.settings import Settings

    (source,) = io.discover_sequences(write_png_sequence(tmp_path / "s", 2))  # 64x64 frames
    data = {"frame_stride": 1, "start": 0, "max_frames": None, "resize": None, "resize_filter": "bicubic",
            "fingerprint": "stat"}
    raft, mast3r = Settings.official(backbone="raft", distance="mse"), Settings.official()
    assert raft.size_rule == (8, 8, 128) and mast3r.size_rule == (32, 16, 32)
    assert _preparer(data, mast3r)(source).views.shape[-2:] == (64, 64)
    with pytest.raises(io.FrameSizeError, match=r"frames are 64x64; height must be a multiple of 8, width of 8, both >= 128.*data.resize=\[128,128\]"):
        _preparer(data, raft)(source)
