"""Geometry files (``data.geometry``): where a sequence's ``.npz`` of depth, intrinsics and poses is,
its fingerprint, and reading it checked against the stored frames."""

from __future__ import annotations

from pathlib import Path

import torch

from .fingerprints import _check_fingerprint_mode, _digest, _file_sha256, _stat_entry
from .sources import SequenceSource

_GEOMETRY_KEYS = {"depth": "(V, H, W)", "intrinsics": "(V, 3, 3)", "cam_to_world": "(V, 4, 4)"}


def geometry_path(source: SequenceSource, pattern: str) -> Path:
    """The geometry file of ``source``: ``pattern`` (``data.geometry``) with ``{name}`` (the sequence
    name) and ``{stem}`` (the name without its suffix) filled in, relative to the folder holding the
    sequence (a sequence folder's or video's parent, a tensor file's folder) unless absolute.

    ``'{name}.npz'`` puts ``seqs/seq_a.npz`` beside ``seqs/seq_a/``; ``'{name}/cameras.npz'`` puts it inside.
    """
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError(f"data.geometry must be null or a file name pattern such as '{{name}}.npz'; got {pattern!r}")
    try:
        name = pattern.format(name=source.name, stem=Path(source.name).stem)
    except (KeyError, IndexError, ValueError) as err:
        raise ValueError(f"data.geometry={pattern!r}: only {{name}} and {{stem}} can be filled in ({err})") from None
    path = Path(name).expanduser()
    return path if path.is_absolute() else Path(source.path).parent / path


def geometry_fingerprint(source: SequenceSource, pattern: str, mode: str = "stat") -> str:
    """Fingerprint of ``source``'s geometry file (as :meth:`SequenceSource.fingerprint` for the frames)."""
    _check_fingerprint_mode(mode)
    path = geometry_path(source, pattern)
    if not path.is_file():
        raise FileNotFoundError(f"no geometry file {path} for sequence {source.name} (data.geometry={pattern!r})")
    if mode == "stat":
        return _digest("stat", {"kind": "geometry", "file": _stat_entry(path)})
    return _digest("content", {"kind": "geometry", "sha256": _file_sha256(path)})


def read_geometry_file(path: str | Path, num_frames: int, size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Read and check a geometry ``.npz`` (no pickle) for ``num_frames`` stored frames of ``size`` (H, W).

    Returns:
        ``depth`` (V, H, W) float32, ``intrinsics`` (V, 3, 3) float64, ``cam_to_world`` (V, 4, 4) float64
        and, when stored, ``valid`` (V, H, W) bool. Values (positive depth, rigid poses, ...) are checked
        by :class:`~met3r_metrics.KnownGeometry`.

    Raises:
        ValueError: naming the file, the array, what was expected and what it holds.
    """
    import numpy as np

    path = Path(path)
    h, w = size
    want = {"depth": (num_frames, h, w), "intrinsics": (num_frames, 3, 3), "cam_to_world": (num_frames, 4, 4),
            "valid": (num_frames, h, w)}
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except ValueError as err:  # an object array (pickle) or not an npz at all
        raise ValueError(f"geometry file {path}: expected a .npz of numeric arrays (no pickled objects), got {err}") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"geometry file {path}: expected a readable .npz, got {type(err).__name__}: {err}") from None
    missing = [k for k in _GEOMETRY_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"geometry file {path}: expected arrays {list(_GEOMETRY_KEYS)} (+ optional 'valid'), "
                         f"missing {missing} (it holds {sorted(arrays)})")
    out: dict[str, torch.Tensor] = {}
    for key in (*_GEOMETRY_KEYS, "valid"):
        if key not in arrays:
            continue
        a = arrays[key]
        shape_text = _GEOMETRY_KEYS.get(key, "(V, H, W)")
        if tuple(a.shape) != want[key]:
            raise ValueError(f"geometry file {path}: {key}: expected shape {shape_text} = {want[key]} (the sequence's "
                             f"{num_frames} stored frames of {h}x{w}), got {tuple(a.shape)}")
        if key == "valid":
            if a.dtype != np.bool_:
                raise ValueError(f"geometry file {path}: valid: expected a bool array, got dtype {a.dtype}")
            out[key] = torch.from_numpy(a.copy())
        else:
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"geometry file {path}: {key}: expected a float array, got dtype {a.dtype}")
            out[key] = torch.from_numpy(a.astype(np.float32 if key == "depth" else np.float64))
    return out
