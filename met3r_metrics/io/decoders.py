"""The optional decoding libraries: Pillow (images, GIFs) and PyAV (videos), imported lazily, and their
versions (recorded with the results)."""

from __future__ import annotations

from typing import Any

import torch


def _pil() -> Any:
    try:
        from PIL import Image, ImageSequence
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading images needs pillow: pip install 'met3r-metrics[cli]'") from err
    return Image, ImageSequence


def _av() -> Any:
    try:
        import av
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("reading videos needs PyAV: pip install 'met3r-metrics[video]'") from err
    return av


def _hwc_to_chw(array: Any) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()


def decoder_versions() -> dict[str, str | None]:
    """Versions of the decoders that produced the pixels (recorded with the results).

    ``ffmpeg``: the FFmpeg release PyAV runs on (``av.ffmpeg_version_info``); ``libavcodec`` /
    ``libavformat`` / ``libswscale``: the library versions (decoding, demuxing, YUV -> RGB).
    """
    out: dict[str, str | None] = {}
    try:
        import PIL

        out["pillow"] = PIL.__version__
    except ImportError:  # pragma: no cover
        out["pillow"] = None
    try:
        import av
    except ImportError:  # pragma: no cover
        av = None
    out["pyav"] = getattr(av, "__version__", None)
    out["ffmpeg"] = str(getattr(av, "ffmpeg_version_info", "") or "") or None
    libs = getattr(av, "library_versions", {}) or {}
    for name in ("libavcodec", "libavformat", "libswscale"):
        out[name] = ".".join(str(v) for v in libs.get(name, ())) or None
    return out
