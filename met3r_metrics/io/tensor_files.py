"""Tensor files (.pt/.pth, .npz/.npy): read without unpickling, memory-mapped where the format allows,
and one file loaded once with its value range decided once."""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import torch

from .errors import UnsafeTensorFileError
from .value_ranges import decide_value_range


def _unsafe_pt_error(path: Path, err: Exception) -> UnsafeTensorFileError:
    found = re.search(r"GLOBAL (\S+)", str(err))
    what = f" (it refers to {found.group(1)})" if found else ""
    return UnsafeTensorFileError(
        f"data.path={path}: the file holds pickled Python objects{what}, which are never unpickled because "
        f"loading them can run arbitrary code; save the frames as a plain tensor or a dict of tensors "
        f"(torch.save(images, path)) or as .npy/.npz"
    )


def _load_pt(path: Path) -> Any:
    """``torch.load`` restricted to tensors (``weights_only``), memory-mapped where the format allows."""
    import pickle
    import zipfile

    # Zip-format files (torch.save's default since 1.6) are memory-mapped: counting the sequences and
    # deciding the value range does not need the whole file in RAM. The legacy format cannot be mapped and
    # is read into memory. Decided by the file's format, not by the wording of torch's mmap error.
    mmap = zipfile.is_zipfile(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        raise _unsafe_pt_error(path, err) from None


def read_tensor_file(path: str | Path, key: str | None = None) -> torch.Tensor:
    """A ``.pt``/``.pth`` (torch.save) or ``.npz``/``.npy`` file -> ``(N, V, 3, H, W)`` tensor.

    A single sequence ``(V, 3, H, W)`` is returned as ``N = 1``.  For ``.npz`` and for ``.pt``
    files holding a dict, ``key`` picks the array (default: the only one, else ``"images"``).
    Channels-last ``(..., H, W, 3)`` arrays are permuted to channels-first (a copy).

    ``.pt`` files are loaded with ``weights_only=True`` (a file holding pickled objects raises
    :class:`UnsafeTensorFileError` naming it) and memory-mapped when saved in torch's zip format;
    ``.npy`` files are memory-mapped by numpy; ``.npz`` and legacy ``.pt`` files are read into
    memory.  The stored dtype is kept; never unpickles (``allow_pickle=False`` for numpy).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".npz", ".npy"):
        import numpy as np

        try:
            loaded: Any = np.load(path, allow_pickle=False, mmap_mode="r" if suffix == ".npy" else None)
            if suffix == ".npz":
                loaded = {k: loaded[k] for k in loaded.files}
        except ValueError as err:
            if "pickle" not in str(err) and "Python objects" not in str(err):
                raise
            raise UnsafeTensorFileError(
                f"data.path={path}: the file holds pickled Python objects (an object array), which are never "
                f"unpickled because loading them can run arbitrary code; save a numeric array"
            ) from None
    else:
        loaded = _load_pt(path)
    if isinstance(loaded, dict):
        if key is None:
            key = next(iter(loaded)) if len(loaded) == 1 else "images"
        if key not in loaded:
            raise KeyError(f"{path} holds {sorted(loaded)}; choose one with data.tensor_key=...")
        loaded = loaded[key]
    if not isinstance(loaded, torch.Tensor):
        with warnings.catch_warnings():
            # A read-only memory map is never written to: sequences are copied out of it.
            warnings.filterwarnings("ignore", message=".*not writable.*")
            loaded = torch.as_tensor(loaded)
    tensor = loaded
    if tensor.ndim == 4:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 5:
        raise ValueError(f"{path}: expected (N, V, 3, H, W) or (V, 3, H, W), got {tuple(tensor.shape)}")
    if tensor.shape[2] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 1, 4, 2, 3)
    if tensor.shape[2] != 3:
        raise ValueError(f"{path}: expected 3 channels, got shape {tuple(tensor.shape)}")
    return tensor.contiguous()


class _TensorFile:
    """One tensor file, loaded (memory-mapped where possible) once; its value range decided once.

    Pickled without its data (DataLoader workers under ``spawn`` reload it, after checking that
    the file is the one discovered).
    """

    def __init__(self, path: Path, key: str | None, setting: str) -> None:
        self.path, self.key = path, key
        st = path.stat()
        self.identity = [path.name, st.st_size, st.st_mtime_ns]
        self._data: torch.Tensor | None = read_tensor_file(path, key)
        self.value_range, self.reason = decide_value_range(self._data, setting, what=f"data.path={path}")
        self.count = int(self._data.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_data": None}

    def data(self) -> torch.Tensor:
        if self._data is None:
            st = self.path.stat()
            if [self.path.name, st.st_size, st.st_mtime_ns] != self.identity:
                raise ValueError(f"data.path={self.path} changed since it was discovered; run again")
            self._data = read_tensor_file(self.path, self.key)
        return self._data

    def sequence(self, index: int) -> torch.Tensor:
        # A copy: a view would share (and ship to workers) the storage of the whole file.
        return self.data()[index].clone()
