"""Weights identity: a content digest of what a network actually loaded, so that a result is never reused
after its weights changed (a checkpoint re-converted or fine-tuned at the same path).

The digest covers the network's ``state_dict()`` (every parameter and persistent buffer: name, dtype,
shape and bytes), not the file it came from: it is the same for a ``.pth`` and its ``.safetensors``
conversion, covers every way weights are found (registry name, Hugging Face cache, URL, local file or
directory, the DINO fallback inside FeatUp, LPIPS's shipped layers), and cannot go stale: nothing is
memoised, every call hashes the tensors in memory (SHA-256: 1.37 s for a 1 GiB state dict on one core of the
workplace's CPU, so about 3.5 s for MASt3R ViT-L; the networks on a GPU are copied to the CPU one tensor at a
time).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

import torch
from torch import nn

__all__ = ["state_dict_digest", "network_digests"]


def _tensor_bytes(t: torch.Tensor) -> memoryview:
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy())


def state_dict_digest(state_dict: Mapping[str, torch.Tensor] | nn.Module) -> str:
    """SHA-256 (hex) of a state dict (or a module's ``state_dict()``): sorted keys, each with its dtype,
    shape and little-endian bytes. Equal weights give equal digests whatever file format they came from.

    Raises:
        TypeError: ``state_dict`` is neither a module nor a mapping of tensors (the message names the key).
    """
    sd = state_dict.state_dict() if isinstance(state_dict, nn.Module) else state_dict
    h = hashlib.sha256()
    for key in sorted(sd):
        t = sd[key]
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}]: expected a torch.Tensor, got {type(t).__name__}")
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        if t.numel():
            h.update(_tensor_bytes(t))
    return h.hexdigest()


def network_digests(networks: Iterable[tuple[str, nn.Module]]) -> dict[str, str]:
    """``{name: state_dict_digest}`` of named networks (e.g. a scorer's ``named_children()``), sorted by name;
    a network without any tensor (a user's parameter-free callable) is left out."""
    out = {}
    for name, net in networks:
        if isinstance(net, nn.Module) and net.state_dict():
            out[name] = state_dict_digest(net)
    return dict(sorted(out.items()))
