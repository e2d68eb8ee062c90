"""Checkpoint registry, local resolution / download, and loading of DUSt3R / MASt3R weights.

One registry (:data:`CHECKPOINTS`) lists every file MEt3R needs. Files are looked up where users already have
them and downloaded only when allowed:

* DUSt3R / MASt3R: the Hugging Face hub cache (``naver/<name>``: ``config.json`` + ``model.safetensors``),
  else an official ``.pth`` already in the torch hub checkpoint cache, else a hub download.
* DINO ViT-S/16 and FeatUp JBU: ``torch.hub.get_dir()/checkpoints/<cache_name>``, else a download from the
  official URL into that folder (the same place ``torch.hub.load_state_dict_from_url`` uses).

Nothing is downloaded when ``download=False`` or ``HF_HUB_OFFLINE=1``; a missing file then raises
:class:`WeightsNotFoundError` naming the file, its source and the prefetch command ``met3r-download <name>``.

Formats accepted by :func:`load_stereo_model` and the single key mapping applied to them are documented in
``docs/weights.md``. The DUSt3R / MASt3R weights are licensed CC BY-NC-SA 4.0 (non-commercial); this package
ships no weights.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
from torch import nn

from .model_args import inference_kwargs, parse_model_call

__all__ = [
    "CHECKPOINTS",
    "CheckpointInfo",
    "CheckpointStubWarning",
    "PickleStub",
    "WeightsNotFoundError",
    "checkpoint_file",
    "hub_cache_dir",
    "load_stereo_model",
    "load_stereo_state_dict",
    "map_official_state_dict",
    "read_checkpoint_tensors",
    "restricted_allow_list",
    "safe_torch_load",
    "save_stereo_files",
    "torch_hub_checkpoint_dir",
]

NAVER_LICENCE = "CC BY-NC-SA 4.0 (non-commercial use only; Naver Corporation)"
DINO_LICENCE = "Apache-2.0 (Meta Platforms, facebookresearch/dino)"
FEATUP_LICENCE = "MIT (Mark Hamilton et al., mhamilton723/FeatUp)"

_NAVER_URL = "https://download.europe.naverlabs.com/ComputerVision/{project}/{name}.pth"
_FEATUP_URL = "https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained/{path}"
INF = float("inf")


@dataclass(frozen=True)
class CheckpointInfo:
    """One known checkpoint.

    Attributes:
        name: registry key (also the argument of ``met3r-download``).
        kind: 'stereo' (DUSt3R/MASt3R), 'dino' or 'featup'.
        filename: file name at the official URL.
        url: official direct download URL.
        cache_name: path of the downloaded file relative to ``torch.hub.get_dir()/checkpoints``.
        hf_repo_id: Hugging Face repo (``config.json`` + ``model.safetensors``), stereo models only.
        config: official inference constructor kwargs (stereo models only; what ``load_model`` builds).
        model_string: the training ``--model`` string stored in the official ``.pth`` (stereo models only).
        licence: licence of the weights.
        description: one line for humans.
        sha256: expected SHA-256 of the URL file, verified after a download when known (None: not published).
    """

    name: str
    kind: Literal["stereo", "dino", "featup"]
    filename: str
    url: str
    cache_name: str
    licence: str
    description: str
    hf_repo_id: str | None = None
    config: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)
    model_string: str | None = None
    sha256: str | None = None

    @property
    def prefetch_command(self) -> str:
        return f"met3r-download {self.name}"

    @property
    def source(self) -> str:
        """Human-readable origin(s)."""
        if self.hf_repo_id:
            return f"Hugging Face repo {self.hf_repo_id} (or the official file {self.url})"
        return self.url


def _stereo(
    name: str, official: str, project: str, model_class: str, head: dict[str, Any], img: int, desc: str,
) -> CheckpointInfo:
    """Registry entry for an official DUSt3R/MASt3R checkpoint (ViT-L encoder, ViT-B decoder, RoPE100)."""
    config: dict[str, Any] = {
        "enc_embed_dim": 1024, "enc_depth": 24, "enc_num_heads": 16,
        "dec_embed_dim": 768, "dec_depth": 12, "dec_num_heads": 12,
        "pos_embed": "RoPE100", "output_mode": "pts3d",
        "depth_mode": ("exp", -INF, INF), "conf_mode": ("exp", 1, INF),
        "img_size": (img, img), "patch_embed_cls": "PatchEmbedDust3R", "landscape_only": False,
        **head,
    }
    patch = "" if img == 224 else "patch_embed_cls='ManyAR_PatchEmbed', "
    extra = ""
    if model_class == "AsymmetricMASt3R":
        extra = ", two_confs=True, desc_conf_mode=('exp', 0, inf)"
    model_string = (
        f"{model_class}(pos_embed='RoPE100', {patch}img_size=({img}, {img}), head_type='{head['head_type']}', "
        f"output_mode='{config['output_mode']}', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
        f"enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, dec_embed_dim=768, dec_depth=12, "
        f"dec_num_heads=12{extra})"
    )
    return CheckpointInfo(
        name=name, kind="stereo", filename=f"{official}.pth", url=_NAVER_URL.format(project=project, name=official),
        cache_name=f"{official}.pth", licence=NAVER_LICENCE, description=desc, hf_repo_id=f"naver/{official}",
        config=MappingProxyType(config), model_string=model_string,
    )


CHECKPOINTS: dict[str, CheckpointInfo] = {
    info.name: info
    for info in (
        _stereo("dust3r_224_linear", "DUSt3R_ViTLarge_BaseDecoder_224_linear", "DUSt3R", "AsymmetricCroCo3DStereo",
                {"head_type": "linear"}, 224, "DUSt3R ViT-L/ViT-B, linear head, trained at 224x224"),
        _stereo("dust3r_512_linear", "DUSt3R_ViTLarge_BaseDecoder_512_linear", "DUSt3R", "AsymmetricCroCo3DStereo",
                {"head_type": "linear"}, 512, "DUSt3R ViT-L/ViT-B, linear head, trained at 512 (long side)"),
        _stereo("dust3r_512_dpt", "DUSt3R_ViTLarge_BaseDecoder_512_dpt", "DUSt3R", "AsymmetricCroCo3DStereo",
                {"head_type": "dpt"}, 512, "DUSt3R ViT-L/ViT-B, DPT head, trained at 512 (long side)"),
        _stereo("mast3r_512_catmlpdpt_metric", "MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric", "MASt3R",
                "AsymmetricMASt3R",
                {"head_type": "catmlp+dpt", "output_mode": "pts3d+desc24", "two_confs": True,
                 "desc_conf_mode": ("exp", 0, INF)},
                512, "MASt3R ViT-L/ViT-B, catmlp+dpt head with 24-d descriptors (MEt3R's default backbone)"),
        CheckpointInfo(
            name="dino_vits16", kind="dino", filename="dino_deitsmall16_pretrain.pth",
            url="https://dl.fbaipublicfiles.com/dino/dino_deitsmall16_pretrain/dino_deitsmall16_pretrain.pth",
            cache_name="dino_deitsmall16_pretrain.pth", licence=DINO_LICENCE,
            description="DINO ViT-S/16 backbone (plain state dict), the featurizer of FeatUp dino16",
        ),
        CheckpointInfo(
            name="featup_dino16_jbu", kind="featup", filename="dino16_jbu_stack_cocostuff.ckpt",
            url=_FEATUP_URL.format(path="dino16_jbu_stack_cocostuff.ckpt"),
            cache_name="dino16_jbu_stack_cocostuff.ckpt", licence=FEATUP_LICENCE,
            description="FeatUp JBU stack for dino16 with ChannelNorm (use_norm=True, MEt3R's default)",
        ),
        CheckpointInfo(
            name="featup_dino16_jbu_no_norm", kind="featup", filename="dino16_jbu_stack_cocostuff.ckpt",
            url=_FEATUP_URL.format(path="no_norm/dino16_jbu_stack_cocostuff.ckpt"),
            # Same basename as the use_norm file: kept in a subfolder so the two never overwrite each other.
            cache_name="no_norm/dino16_jbu_stack_cocostuff.ckpt", licence=FEATUP_LICENCE,
            description="FeatUp JBU stack for dino16 without ChannelNorm (use_norm=False)",
        ),
    )
}

_BY_REPO = {info.hf_repo_id: info for info in CHECKPOINTS.values() if info.hf_repo_id}
_HF_FILES = ("config.json", "model.safetensors")


class WeightsNotFoundError(FileNotFoundError):
    """A checkpoint is not available locally and could not (or must not) be downloaded."""


# ----------------------------------------------------------------------------------------------------------------
# Locations
# ----------------------------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline() -> bool:
    """HF_HUB_OFFLINE, read at call time (huggingface_hub reads it once at import)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return _truthy(os.environ["HF_HUB_OFFLINE"])
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved at call time: HF_HUB_CACHE, else HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def torch_hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (TORCH_HOME aware), where URL checkpoints are cached."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _cached_hub_file(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    return Path(found) if isinstance(found, str) else None


def _not_found(
    what: str, source: str, searched: Iterable[Path | str], reason: str, command: str,
) -> WeightsNotFoundError:
    places = ", ".join(str(p) for p in searched)
    return WeightsNotFoundError(
        f"{what} is not available locally ({reason}). It comes from {source}. Looked in: {places}. "
        f"Prefetch it with `{command}` (where there is network access; the file lands in the cache shown), "
        f"or pass a local file path instead."
    )


def _why_no_download(download: bool) -> str | None:
    if not download:
        return "download=False was given"
    if _offline():
        return "downloads are disabled by HF_HUB_OFFLINE=1"
    return None


def _hub_files(repo_id: str, download: bool, what: str, command: str) -> dict[str, Path]:
    """config.json + model.safetensors of a hub repo from the cache, downloading if allowed."""
    cached = {f: _cached_hub_file(repo_id, f) for f in _HF_FILES}
    if all(cached.values()):
        return cached  # type: ignore[return-value]
    reason = _why_no_download(download)
    searched = [hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"]
    if reason is None:
        from huggingface_hub import hf_hub_download

        try:
            return {f: Path(hf_hub_download(repo_id, f, cache_dir=str(hub_cache_dir()))) for f in _HF_FILES}
        except Exception as err:  # network errors, missing repo, auth: all mean "not available"
            raise _not_found(what, f"Hugging Face repo {repo_id}", searched,
                             f"the download failed: {type(err).__name__}: {err}", command) from err
    raise _not_found(what, f"Hugging Face repo {repo_id}", searched, reason, command)


def _download_url(info: CheckpointInfo, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # download_url_to_file writes to a temporary file and renames it, so a partial download never looks cached.
    torch.hub.download_url_to_file(info.url, str(dst), hash_prefix=None, progress=True)
    if info.sha256:
        import hashlib

        digest = hashlib.sha256(dst.read_bytes()).hexdigest()
        if digest != info.sha256:
            dst.unlink(missing_ok=True)
            raise OSError(f"SHA-256 mismatch for {info.filename}: expected {info.sha256}, got {digest}")


def checkpoint_file(name: str, *, download: bool = True) -> Path:
    """Local path of a registry checkpoint, downloading it if allowed and online.

    Stereo models resolve to the hub-cache ``model.safetensors`` (its ``config.json`` beside it), or to an
    official ``.pth`` already in the torch hub checkpoint cache. DINO / FeatUp resolve to
    ``torch.hub.get_dir()/checkpoints/<cache_name>``.

    Raises:
        KeyError: unknown name.
        WeightsNotFoundError: not cached and downloading is disabled (``download=False``, ``HF_HUB_OFFLINE=1``)
            or failed; the message names the file, its source and ``met3r-download <name>``.
    """
    if name not in CHECKPOINTS:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    info = CHECKPOINTS[name]
    what = f"checkpoint '{name}' ({info.filename})"
    local = torch_hub_checkpoint_dir() / info.cache_name
    if info.hf_repo_id:
        cached = {f: _cached_hub_file(info.hf_repo_id, f) for f in _HF_FILES}
        if all(cached.values()):
            return cached["model.safetensors"]  # type: ignore[return-value]
        if local.is_file():
            return local
        try:
            return _hub_files(info.hf_repo_id, download, what, info.prefetch_command)["model.safetensors"]
        except WeightsNotFoundError as err:
            cause = err.__cause__
            raise WeightsNotFoundError(f"{err} The official file {info.url} placed at {local} also works.") from cause
    if local.is_file():
        return local
    reason = _why_no_download(download)
    if reason is None:
        try:
            _download_url(info, local)
            return local
        except Exception as err:
            raise _not_found(what, info.url, [local], f"the download failed: {type(err).__name__}: {err}",
                             info.prefetch_command) from err
    raise _not_found(what, info.url, [local], reason, info.prefetch_command)


# ----------------------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------------------


def safe_torch_load(
    path: str | os.PathLike, safe_globals: Iterable[Any] = (), *, stub_unknown: bool = False,
) -> Any:
    """``torch.load(..., weights_only=True)`` on CPU with extra allow-listed globals (memory-mapped when possible).

    Never falls back to full unpickling. Without ``stub_unknown`` a file that needs other classes fails with
    torch's ``UnpicklingError``. With ``stub_unknown=True`` such a file is read again by a restricted unpickler
    (:func:`_restricted_torch_load`): allow-listed globals (:func:`restricted_allow_list`) resolve to the real
    objects, every other class or function becomes an inert :class:`PickleStub` (its module is never imported,
    its code never runs), and a :class:`CheckpointStubWarning` names the stubbed classes.
    """
    safe_globals = list(safe_globals)
    try:
        return _weights_only_load(path, safe_globals)
    except pickle.UnpicklingError as err:
        if not stub_unknown:
            raise
        first = err
    stubbed: dict[str, None] = {}
    try:
        result = _restricted_torch_load(path, safe_globals, stubbed)
    except Exception as err:
        names = f" (classes replaced by inert stubs so far: {', '.join(stubbed)})" if stubbed else ""
        raise pickle.UnpicklingError(
            f"{path}: torch.load(weights_only=True) refused this checkpoint ({_first_line(first)}) and the "
            f"restricted unpickler could not read it either: {type(err).__name__}: {err}{names}. Nothing outside "
            "the allow-list was imported or run. If you trust the file, re-save only its tensors, e.g. "
            "torch.save(ckpt['state_dict'], 'weights.pth')."
        ) from err
    if stubbed:
        warnings.warn(
            f"{path}: torch.load(weights_only=True) refused this checkpoint; it was read with a restricted "
            f"unpickler that replaced these non-tensor objects by inert stubs (never imported nor run): "
            f"{', '.join(stubbed)}",
            CheckpointStubWarning,
            stacklevel=2,
        )
    return result


def read_checkpoint_tensors(
    path: str | os.PathLike, key: str | None = "state_dict", safe_globals: Iterable[Any] = (),
) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, read safely (:func:`safe_torch_load` with ``stub_unknown=True``).

    ``ckpt[key]`` when the file holds a dict with that entry (Lightning's ``state_dict``), else the top-level
    dict. Non-tensor values of that dict are dropped (they are not weights). Fails with ``UnpicklingError``
    when the tensor dict itself, one of its values, or an attribute of one of its tensors is an object of a
    class outside the allow-list: weights never depend on a stub.
    """
    ckpt = safe_torch_load(path, safe_globals, stub_unknown=True)
    container = ckpt
    where = "the checkpoint"
    if key is not None and isinstance(ckpt, Mapping) and key in ckpt:
        container, where = ckpt[key], f"entry {key!r}"
    if isinstance(container, PickleStub):
        raise pickle.UnpicklingError(
            f"{path}: {where} is a pickled {container.stub_of} object (not allow-listed), not a dict of tensors"
        )
    if not isinstance(container, Mapping):
        raise pickle.UnpicklingError(f"{path}: {where} is a {type(container).__name__}, not a dict of tensors")
    out: dict[str, torch.Tensor] = {}
    for name, value in container.items():
        bad = _stub_in(value)
        if bad is not None:
            raise pickle.UnpicklingError(
                f"{path}: tensor entry {name!r} of {where} needs the non-allow-listed global {bad.stub_of!r}; "
                "refusing to load weights that depend on it"
            )
        if isinstance(value, torch.Tensor):
            out[str(name)] = value
    return out


def _weights_only_load(path: str | os.PathLike, safe_globals: list[Any]) -> Any:
    with torch.serialization.safe_globals(safe_globals):
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):  # legacy (non-zip) files cannot be memory-mapped
                raise
            return torch.load(path, map_location="cpu", weights_only=True)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        if "Unsupported global" in line or "WeightsUnpickler error" in line:
            return line.strip()
    return text.splitlines()[0] if text else type(err).__name__


# ----------------------------------------------------------------------------------------------------------------
# Restricted unpickler (stubs for everything outside the allow-list)
# ----------------------------------------------------------------------------------------------------------------


class CheckpointStubWarning(UserWarning):
    """Some pickled objects of a checkpoint were replaced by inert stubs (see :func:`safe_torch_load`)."""


class PickleStub:
    """Inert stand-in for a pickled class or function outside the allow-list.

    Accepts any constructor arguments, state, items and list elements and only stores them (``stub_args``,
    ``stub_kwargs``, ``stub_state``, ``stub_items``, ``stub_list``) for inspection; it has no other behaviour.
    ``stub_of`` is the ``module.name`` it replaces.
    """

    stub_of = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> PickleStub:
        obj = object.__new__(cls)
        d = obj.__dict__
        d["stub_args"], d["stub_kwargs"] = args, kwargs
        d["stub_state"], d["stub_items"], d["stub_list"] = None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["stub_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__["stub_items"][key] = value

    def append(self, item: Any) -> None:
        self.__dict__["stub_list"].append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.__dict__["stub_list"].extend(items)

    def add(self, item: Any) -> None:
        self.__dict__["stub_list"].append(item)

    def __repr__(self) -> str:
        return f"<PickleStub of {self.stub_of}>"


def _stub_in(value: Any) -> PickleStub | None:
    """A stub that ``value`` is or (for a tensor) carries as an attribute, else None."""
    if isinstance(value, PickleStub):
        return value
    if isinstance(value, type) and issubclass(value, PickleStub):
        return value  # type: ignore[return-value]
    if isinstance(value, torch.Tensor):
        for attr in getattr(value, "__dict__", {}).values():
            found = _stub_in(attr)
            if found is not None:
                return found
    return None


def _global_name(obj: Any) -> tuple[str, Any]:
    if isinstance(obj, tuple):  # (object, "module.name") as torch.serialization.add_safe_globals accepts
        return obj[1], obj[0]
    return f"{obj.__module__}.{obj.__qualname__}", obj


def restricted_allow_list(safe_globals: Iterable[Any] = ()) -> dict[str, Any]:
    """``"module.name" -> object`` that the restricted unpickler resolves to the real object.

    torch's own ``weights_only`` allow-list (tensor / parameter rebuild functions, ``_rebuild_from_type_v2``,
    dtypes, storage and tensor classes, ``torch.Size``, ``torch.device``, layouts, qschemes,
    ``collections.OrderedDict`` / ``Counter``, ``builtins.set`` / ``complex`` / ``bytearray``,
    ``_codecs.encode``), globals registered with ``torch.serialization.add_safe_globals``, ``safe_globals``,
    ``argparse.Namespace`` and the plain builtin types ``frozenset, slice, range, bytes, str, int, float, bool,
    tuple, list, dict`` (calling those runs no foreign code). Nothing else: in particular no ``builtins.eval`` /
    ``exec`` / ``getattr`` / ``__import__``, no ``os``, ``subprocess``, ``copyreg``, ``functools``, ``numpy``.
    """
    import _codecs
    from collections import Counter, OrderedDict

    allowed: dict[str, Any] = {
        "collections.OrderedDict": OrderedDict,
        "collections.Counter": Counter,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch.serialization._get_layout": torch.serialization._get_layout,
        "torch.Size": torch.Size,
        "torch.Tensor": torch.Tensor,
        "torch.device": torch.device,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.storage.UntypedStorage": torch.storage.UntypedStorage,
        "_codecs.encode": _codecs.encode,
        "argparse.Namespace": argparse.Namespace,
    }
    for fn in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
               "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
               "_rebuild_meta_tensor_no_storage", "_rebuild_nested_tensor", "_rebuild_wrapper_subclass",
               "_rebuild_device_tensor_from_cpu_tensor"):
        if hasattr(torch._utils, fn):
            allowed[f"torch._utils.{fn}"] = getattr(torch._utils, fn)
    for value in vars(torch).values():
        if isinstance(value, torch.dtype):
            allowed[str(value)] = value  # 'torch.float32' ...
    for t in (set, frozenset, complex, slice, range, bytearray, bytes, str, int, float, bool, tuple, list, dict):
        allowed[f"builtins.{t.__name__}"] = t
    try:  # private: keeps dtypes / storage classes / qschemes in step with the installed torch
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed.update(_get_allowed_globals())
    except (ImportError, AttributeError):
        pass
    for obj in [*torch.serialization.get_safe_globals(), *safe_globals]:
        name, value = _global_name(obj)
        allowed[name] = value
    return allowed


def _restricted_pickle_module(allowed: Mapping[str, Any], stubbed: dict[str, None]) -> Any:
    """A module-like object (``Unpickler`` + ``load``) for ``torch.load(pickle_module=...)``.

    Pure-Python unpickler: ``find_class`` never imports anything (allow-listed objects come from modules that
    are already imported), and BUILD (``__setstate__`` / ``__dict__`` update) is only done on stubs and on
    instances of tensors, ``Parameter``, ``OrderedDict``, ``Counter``, ``Namespace`` and allow-listed classes,
    never on a class, function or module (which could otherwise tamper with allow-listed code).
    """
    import _compat_pickle
    import types

    stubs: dict[str, type[PickleStub]] = {}
    build_types = {torch.Tensor, torch.nn.Parameter, argparse.Namespace}
    build_types |= {v for k, v in allowed.items() if isinstance(v, type) and not k.startswith("builtins.")}

    class RestrictedUnpickler(pickle._Unpickler):  # type: ignore[name-defined,misc]
        dispatch = dict(pickle._Unpickler.dispatch)  # type: ignore[attr-defined]

        def find_class(self, module: str, name: str) -> Any:
            if self.proto < 3 and self.fix_imports:  # protocol-2 files name Python 2 modules (__builtin__ ...)
                if (module, name) in _compat_pickle.NAME_MAPPING:
                    module, name = _compat_pickle.NAME_MAPPING[(module, name)]
                elif module in _compat_pickle.IMPORT_MAPPING:
                    module = _compat_pickle.IMPORT_MAPPING[module]
            full = f"{module}.{name}"
            if full in allowed:
                return allowed[full]
            if full not in stubs:
                stubs[full] = type(f"PickleStub[{full}]", (PickleStub,), {"stub_of": full, "__slots__": ()})
                stubbed[full] = None
            return stubs[full]

        def load_build(self) -> None:
            inst = self.stack[-2]  # stack: ..., inst, state
            if isinstance(inst, PickleStub):
                inst.__setstate__(self.stack.pop())
            elif isinstance(inst, type) and issubclass(inst, PickleStub):
                self.stack.pop()  # state of a stubbed class object: ignored
            elif type(inst) in build_types:
                super().load_build()
            else:
                raise pickle.UnpicklingError(f"refusing to set the state of a {type(inst).__qualname__} object")

    RestrictedUnpickler.dispatch[pickle.BUILD[0]] = RestrictedUnpickler.load_build

    def load(file: Any, **kwargs: Any) -> Any:
        return RestrictedUnpickler(file, **kwargs).load()

    module = types.ModuleType("met3r_restricted_pickle")
    module.Unpickler = RestrictedUnpickler  # type: ignore[attr-defined]
    module.load = load  # type: ignore[attr-defined]
    module.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return module


def _restricted_torch_load(path: str | os.PathLike, safe_globals: list[Any], stubbed: dict[str, None]) -> Any:
    """``torch.load`` with the restricted unpickler (torch still rebuilds the storages itself)."""
    module = _restricted_pickle_module(restricted_allow_list(safe_globals), stubbed)
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)


def _read_config(path: Path) -> dict[str, Any]:
    # Python's json accepts the non-standard tokens Infinity / -Infinity that PyTorchModelHubMixin writes.
    return json.loads(path.read_text())


def _read_safetensors(path: Path, device: torch.device | str | None) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device) if device is not None else "cpu")


def _read_pth(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Official .pth -> (state dict, inference kwargs parsed from args.model) ; bare state dicts -> (sd, None)."""
    ckpt = safe_torch_load(path, [argparse.Namespace])
    if isinstance(ckpt, Mapping) and "model" in ckpt and isinstance(ckpt["model"], Mapping):
        config = None
        args = ckpt.get("args")
        model_string = getattr(args, "model", None) if args is not None else None
        if isinstance(model_string, str):
            cls_name, kwargs = parse_model_call(model_string)
            config = {"model_class": cls_name, **inference_kwargs(kwargs)}
        return dict(ckpt["model"]), config
    if isinstance(ckpt, Mapping) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt), None
    raise ValueError(f"{path}: not a DUSt3R/MASt3R checkpoint (expected a dict with 'model' and 'args')")


# ----------------------------------------------------------------------------------------------------------------
# Key mapping and loading
# ----------------------------------------------------------------------------------------------------------------

_ALIAS_NEW = re.compile(r"^(?P<p>.*\.scratch\.)layer(?P<n>[1-4])_rn\.weight$")
_ALIAS_OLD = re.compile(r"^(?P<p>.*\.scratch\.)layer_rn\.(?P<i>[0-3])\.weight$")


def map_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The one key mapping: DPT alias names ``scratch.layer{N}_rn.weight`` <-> ``scratch.layer_rn.{N-1}.weight``.

    The official DPT registers each of these convs under both names. ``.pth`` state dicts hold both; safetensors
    files (``save_model`` / ``PyTorchModelHubMixin``) keep only ``layer{N}_rn``. Whichever name is missing is
    filled from the other (same tensor object); if both are present they must be equal. Nothing else is renamed.
    """
    out = dict(state_dict)
    for key in list(state_dict):
        m = _ALIAS_NEW.match(key)
        other = f"{m['p']}layer_rn.{int(m['n']) - 1}.weight" if m else None
        if other is None:
            m = _ALIAS_OLD.match(key)
            other = f"{m['p']}layer{int(m['i']) + 1}_rn.weight" if m else None
        if other is None:
            continue
        if other not in out:
            out[other] = out[key]
        elif out[other] is not out[key] and not _same_values(out[other], out[key]):
            raise ValueError(f"alias keys {key!r} and {other!r} hold different tensors")
    return out


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta:  # no values to compare (shape-only checks)
        return True
    return torch.equal(a, b)


def load_stereo_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, assign: bool = False) -> None:
    """Strictly load an official-key state dict (after :func:`map_official_state_dict`) into a stereo model."""
    mapped = map_official_state_dict(state_dict)
    try:
        model.load_state_dict(mapped, strict=True, assign=assign)
    except RuntimeError as err:
        hint = ""
        if not any(k.startswith("dec_blocks2.") for k in mapped):
            hint = (" (no dec_blocks2.* keys: a CroCo pre-training checkpoint? The official loader would copy "
                    "dec_blocks into dec_blocks2; released DUSt3R/MASt3R checkpoints have both)")
        raise RuntimeError(f"checkpoint does not match the model built from its config{hint}: {err}") from None


def _looks_like_repo_id(source: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", source)) and not source.endswith(
        (".pth", ".pt", ".ckpt", ".safetensors", ".bin")
    )


def _resolve(
    source: str | os.PathLike, config: Mapping[str, Any] | None,
) -> tuple[Path, Mapping[str, Any] | None, str]:
    """-> (weights file, config or None, label). The config is the explicit one, else config.json, else the
    registry's (for a registry name); .pth files carry their own and get None here."""
    registry: CheckpointInfo | None = None
    if isinstance(source, str) and not Path(source).exists():
        registry = CHECKPOINTS.get(source) or _BY_REPO.get(source)
        if registry is not None:
            if registry.kind != "stereo":
                raise ValueError(f"{source!r} is a {registry.kind} checkpoint, not a DUSt3R/MASt3R model")
            path = checkpoint_file(registry.name)
        elif _looks_like_repo_id(source):
            files = _hub_files(source, True, f"Hugging Face repo '{source}'",
                               f"hf download {source} config.json model.safetensors")
            path = files["model.safetensors"]
        else:
            stereo = ", ".join(k for k, v in CHECKPOINTS.items() if v.kind == "stereo")
            raise WeightsNotFoundError(
                f"{source!r} is neither a registry name ({stereo}), an existing file or directory, "
                "nor a Hugging Face repo id"
            )
        label = source
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise WeightsNotFoundError(f"checkpoint path {str(path)!r} does not exist")
        label = str(path)
    if path.is_dir():
        weights = path / "model.safetensors"
        if not weights.is_file():
            raise WeightsNotFoundError(f"{path}: a checkpoint directory needs model.safetensors (+ config.json)")
        path = weights
    if config is not None:
        return path, config, label
    if path.suffix == ".safetensors":
        sibling = path.parent / "config.json"
        if sibling.is_file():
            return path, _read_config(sibling), label
        if registry is not None and registry.config is not None:
            return path, dict(registry.config), label
        raise ValueError(f"{path}: a bare .safetensors file needs a config (pass config=... or add config.json)")
    return path, None, label


def load_stereo_model(
    source: str | os.PathLike,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    config: Mapping[str, Any] | None = None,
    attn_impl: str | None = None,
) -> nn.Module:
    """Build and load a DUSt3R / MASt3R model, frozen and in eval mode.

    Args:
        source: a registry name (``'mast3r_512_catmlpdpt_metric'``...), a Hugging Face repo id
            (``'naver/...'``, through the hub cache), a directory with ``config.json`` + ``model.safetensors``,
            an official ``.pth`` (``{'args': Namespace(model='Cls(...)'), 'model': state_dict}``), or a
            ``.safetensors`` file (config from ``config=``, a sibling ``config.json`` or the registry).
        device: where the weights go (default CPU).
        dtype: parameter dtype (default float32).
        config: constructor kwargs overriding any stored config (needed for a bare state dict / safetensors).
        attn_impl: 'sdpa' (default) or 'explicit'.

    The model is built on the meta device and the weights assigned, so no random init is computed and peak
    memory is one copy of the weights. Loading is strict after :func:`map_official_state_dict`.
    """
    path, cfg, label = _resolve(source, config)
    if path.suffix == ".safetensors":
        state_dict = _read_safetensors(path, device)
    else:
        state_dict, pth_cfg = _read_pth(path)
        cfg = cfg if cfg is not None else pth_cfg
        if cfg is None:
            raise ValueError(f"{path}: no args.model constructor string in the file; pass config=...")
    from .models.dust3r import build_stereo_model

    with torch.device("meta"):
        model = build_stereo_model(dict(cfg), attn_impl=attn_impl)
    try:
        load_stereo_state_dict(model, state_dict, assign=True)
    except RuntimeError as err:
        raise RuntimeError(f"{label}: {err}") from None
    model = model.to(device=device or "cpu", dtype=dtype or torch.float32)
    return model.eval().requires_grad_(False)


def save_stereo_files(model: nn.Module, directory: str | os.PathLike, config: Mapping[str, Any]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` like the HF mixin (alias names dropped, Infinity tokens).

    Handy for converting an official ``.pth`` once into the faster safetensors layout.
    """
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(dict(config), indent=2))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        tmp_file = Path(tmp) / "model.safetensors"
        save_model(model, str(tmp_file))
        tmp_file.replace(directory / "model.safetensors")
    return directory / "model.safetensors"
