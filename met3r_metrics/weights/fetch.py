"""Fetching checkpoint files: one path for every source, nothing downloaded unless allowed.

Sources and where their files land (the caches users already have):

* Hugging Face repos (DUSt3R / MASt3R ``naver/<name>``): the hub cache, through
  ``huggingface_hub.hf_hub_download(..., local_files_only=...)``.
* URLs (DINO, FeatUp, the official DUSt3R/MASt3R ``.pth``): ``torch.hub.get_dir()/checkpoints``, through
  ``torch.hub.download_url_to_file`` with the registry's SHA-256 as ``hash_prefix``.

Every source is first looked up locally; a download happens only with ``download=True`` and without
``HF_HUB_OFFLINE=1``. Otherwise, or when the download fails, :class:`WeightsNotFoundError` names the file,
its source, the places searched and the command that prefetches it.
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants
import huggingface_hub.utils
import torch

from .registry import HF_FILES, by_url, get_checkpoint

__all__ = [
    "WeightsNotFoundError",
    "checkpoint_file",
    "hub_cache_dir",
    "hub_file",
    "torch_hub_checkpoint_dir",
    "url_file",
]

#: ``get(local_only)``: the local file, None when it is not there (``local_only=True``), or the file after
#: fetching it (``local_only=False``; raises when that fails).
Getter = Callable[[bool], "Path | None"]


class WeightsNotFoundError(FileNotFoundError):
    """A checkpoint is not available locally and could not (or must not) be downloaded.

    Attributes (besides the message): ``what`` (the file), ``reason`` (why it was not fetched),
    ``searched`` (where it was looked for), so that callers such as ``met3r-download`` can phrase
    their own advice.
    """

    def __init__(self, message: str, *, what: str = "", reason: str = "", searched: Iterable[Path] = ()) -> None:
        super().__init__(message)
        self.what, self.reason, self.searched = what, reason, [str(p) for p in searched]


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved at call time: HF_HUB_CACHE, else HF_HOME/hub, else the default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(huggingface_hub.constants.HF_HUB_CACHE)


def torch_hub_checkpoint_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints`` (TORCH_HOME aware), where URL checkpoints are cached."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _offline() -> bool:
    """HF_HUB_OFFLINE, read at call time (huggingface_hub reads it once at import)."""
    if "HF_HUB_OFFLINE" in os.environ:
        return os.environ["HF_HUB_OFFLINE"].strip().upper() in {"1", "ON", "YES", "TRUE"}
    return bool(huggingface_hub.constants.HF_HUB_OFFLINE)


def _hub(repo_id: str) -> Getter:
    """Getter of a hub repo's :data:`HF_FILES`; returns the weights file (``config.json`` beside it)."""

    def get(local_only: bool) -> Path | None:
        try:  # looked up at call time: the hub client stays patchable (tests)
            paths = [huggingface_hub.hf_hub_download(repo_id, f, cache_dir=str(hub_cache_dir()), local_files_only=local_only)
                     for f in HF_FILES]
        except huggingface_hub.utils.LocalEntryNotFoundError:
            if local_only:
                return None
            raise
        return Path(paths[-1])

    return get


def _url(url: str, dst: Path, sha256: str | None) -> Getter:
    """Getter of a URL file cached at ``dst``."""

    def get(local_only: bool) -> Path | None:
        if dst.is_file():
            return dst
        if local_only:
            return None
        dst.parent.mkdir(parents=True, exist_ok=True)
        # Writes a temporary file and renames it, so a partial download never looks cached.
        torch.hub.download_url_to_file(url, str(dst), hash_prefix=sha256, progress=True)
        return dst

    return get


def _hub_host() -> str:
    return urllib.parse.urlparse(huggingface_hub.constants.ENDPOINT).hostname or "huggingface.co"


def _unreachable(host: str, timeout: float = 3.0) -> str | None:
    """Why ``host`` (or the HTTPS proxy, when one is set) cannot be reached, or None.

    One TCP connection attempt with a short timeout: without it, a machine without network waits
    through the hub client's retries (about 25 s) before saying the same thing.
    """
    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)), None)
    target, port = host, 443
    if proxy:
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else f"http://{proxy}")
        target, port = parsed.hostname or host, parsed.port or 8080
    try:
        socket.create_connection((target, port), timeout=timeout).close()
    except OSError as err:
        return f"no network access: {target}:{port} is unreachable ({type(err).__name__}: {err})"
    return None


def _fetch(
    get: Getter, download: bool, *, what: str, source: str, searched: Iterable[Path], command: str, host: str,
    argument: str = "a local file path", also: str = "",
) -> Path:
    """The one download path: the local file if there is one, else a download if allowed, else a clear error."""
    found = get(True)
    if found is not None:
        return found
    searched = list(searched)
    if not download:
        reason = "download=False was given"
    elif _offline():
        reason = "downloads are disabled by HF_HUB_OFFLINE=1"
    elif (why := _unreachable(host)) is not None:
        reason = why
    else:
        try:
            return get(False)  # type: ignore[return-value]  # allowed to fetch: the file, or it raises
        except Exception as err:  # network errors, missing repo, auth, hash mismatch: all mean "not available"
            reason = f"the download failed: {type(err).__name__}: {err}"
            raise _not_found(what, source, searched, reason, command, argument, also) from err
    raise _not_found(what, source, searched, reason, command, argument, also)


def _not_found(
    what: str, source: str, searched: list[Path], reason: str, command: str, argument: str, also: str,
) -> WeightsNotFoundError:
    places = ", ".join(str(p) for p in searched)
    return WeightsNotFoundError(
        f"{what} is not available locally ({reason}). It comes from {source}. Looked in: {places}. "
        f"Prefetch it with `{command}` (where there is network access; the file lands in the cache shown), "
        f"or pass {argument} instead.{also}",
        what=what, reason=reason, searched=searched,
    )


def _repo_dir(repo_id: str) -> Path:
    return hub_cache_dir() / f"models--{repo_id.replace('/', '--')}"


def checkpoint_file(name: str, *, download: bool = True) -> Path:
    """Local path of a registry checkpoint, downloading it if allowed and online.

    Stereo models resolve to the hub-cache ``model.safetensors`` (its ``config.json`` beside it), else to an
    official ``.pth`` already in the torch hub checkpoint cache, else to a hub download. DINO / FeatUp resolve
    to ``torch.hub.get_dir()/checkpoints/<cache_name>``, downloaded from the official URL when missing.

    Raises:
        KeyError: unknown name.
        WeightsNotFoundError: not cached and downloading is disabled (``download=False``, ``HF_HUB_OFFLINE=1``)
            or failed; the message names the file, its source and ``met3r-download <name>``.
    """
    info = get_checkpoint(name)
    what = f"checkpoint '{name}' ({info.filename})"
    setting = {"stereo": "backbone_weights", "raft": "backbone_weights", "alexnet": "lpips_weights", "vgg": "lpips_weights"}.get(
        info.kind, "feature_weights")
    argument = f"a local file with {setting}="
    pth = torch_hub_checkpoint_dir() / info.cache_name
    from_url = _url(info.url, pth, info.sha256)
    if info.hf_repo_id is None:
        return _fetch(from_url, download, what=what, source=info.url, searched=[pth], command=info.prefetch_command,
                      host=_url_host(info.url), argument=argument)
    from_hub = _hub(info.hf_repo_id)
    local = from_hub(True) or from_url(True)  # hub cache first, then an official .pth already in torch hub's folder
    if local is not None:
        return local
    return _fetch(
        from_hub, download, what=what, source=f"Hugging Face repo {info.hf_repo_id}",
        searched=[_repo_dir(info.hf_repo_id)], command=info.prefetch_command, host=_hub_host(), argument=argument,
        also=f" The official file {info.url} placed at {pth} also works.",
    )


def hub_file(repo_id: str, *, download: bool = True) -> Path:
    """``model.safetensors`` (``config.json`` beside it) of any Hugging Face repo, from the cache or downloaded."""
    return _fetch(
        _hub(repo_id), download, what=f"Hugging Face repo '{repo_id}'", source=f"Hugging Face repo {repo_id}",
        searched=[_repo_dir(repo_id)], command=f"hf download {repo_id} {' '.join(HF_FILES)}", host=_hub_host(),
    )


def url_file(url: str, *, download: bool = True) -> Path:
    """Local copy of a URL file in ``torch.hub.get_dir()/checkpoints`` (a registry URL: its registry entry)."""
    info = by_url(url)
    if info is not None:  # same cache place, SHA-256 and offline error as the registry name
        return checkpoint_file(info.name, download=download)
    dst = torch_hub_checkpoint_dir() / os.path.basename(url.split("?")[0])
    command = f"python -c \"import torch; torch.hub.download_url_to_file('{url}', '{dst}')\""
    return _fetch(_url(url, dst, None), download, what=f"file {dst.name}", source=url, searched=[dst], command=command,
                  host=_url_host(url))


def _url_host(url: str) -> str:
    return urllib.parse.urlparse(url).hostname or url
