"""Checkpoints: the registry, fetching, file formats and loading of every network MEt3R uses.

Layout (each concern in one place):

* :mod:`.registry`: the one table of checkpoints (:data:`CHECKPOINTS`: name, source, files, licence,
  optional SHA-256);
* :mod:`.fetch`: one path from a source to a local file (:func:`checkpoint_file`): the Hugging Face hub
  cache for DUSt3R/MASt3R, ``torch.hub.get_dir()/checkpoints`` for URL files; nothing is downloaded with
  ``download=False`` or ``HF_HUB_OFFLINE=1``, a missing file raises :class:`WeightsNotFoundError` naming
  the file, its source and the prefetch command ``met3r-download <name>``;
* :mod:`.formats` and :mod:`.safe_load`: safetensors (+ ``config.json``), official ``.pth``, Lightning
  ``.ckpt``, read without ever running code from a pickle;
* :mod:`.loading`: the one builder :func:`build_frozen` (timm's pattern): the checkpoint goes through the
  network's ``checkpoint_filter_fn`` (beside its model in :mod:`met3r_metrics.models`), the network is built on
  the meta device, gets a strict copy of the filtered checkpoint (it owns its memory) and is frozen;
* :mod:`.architectures`: :data:`ARCHITECTURES`, the network and filter of every checkpoint kind;
* :mod:`.stereo` (:func:`load_stereo_model`), :mod:`.features` (:func:`load_featup_dino`,
  :func:`load_dino_featurizer`), :mod:`.lpips` (:func:`load_lpips`) and :mod:`.raft` (:func:`load_raft`). The key mappings (checkpoint filters) live beside the models in
  :mod:`met3r_metrics.models`, which never import this package.

The DUSt3R / MASt3R weights are licensed CC BY-NC-SA 4.0 (non-commercial); this package ships no network weights except
LPIPS's v0.1 linear layers (AlexNet and VGG-16, 5-7 KB, BSD-2-Clause, ``met3r_metrics/data/LICENSE-lpips.txt``).
Formats and the key mapping are documented in ``docs/weights.md``.
"""

from __future__ import annotations

from ..models.dust3r import map_official_state_dict
from .architectures import ARCHITECTURES, Architecture
from .features import load_dino_featurizer, load_featup_dino
from .loading import build_frozen
from .lpips import LPIPS_LINS_FILE, load_lpips
from .raft import load_raft
from .fetch import WeightsNotFoundError, checkpoint_file, hub_cache_dir, torch_hub_checkpoint_dir
from .registry import (
    ALEXNET_CHECKPOINT,
    CHECKPOINTS,
    DINO_CHECKPOINT,
    FEATUP_CHECKPOINTS,
    RAFT_CHECKPOINT,
    CheckpointInfo,
)
from .safe_load import (
    CheckpointStubWarning,
    PickleStub,
    UnsafeCheckpointError,
    _restricted_pickle_module,
    read_checkpoint_tensors,
    restricted_allow_list,
    safe_torch_load,
)
from .stereo import load_stereo_model, load_stereo_state_dict, save_stereo_files

__all__ = [
    "ALEXNET_CHECKPOINT",
    "ARCHITECTURES",
    "Architecture",
    "CHECKPOINTS",
    "CheckpointInfo",
    "CheckpointStubWarning",
    "DINO_CHECKPOINT",
    "FEATUP_CHECKPOINTS",
    "RAFT_CHECKPOINT",
    "PickleStub",
    "UnsafeCheckpointError",
    "WeightsNotFoundError",
    "build_frozen",
    "checkpoint_file",
    "LPIPS_LINS_FILE",
    "hub_cache_dir",
    "load_dino_featurizer",
    "load_featup_dino",
    "load_lpips",
    "load_raft",
    "load_stereo_model",
    "load_stereo_state_dict",
    "map_official_state_dict",
    "read_checkpoint_tensors",
    "restricted_allow_list",
    "safe_torch_load",
    "save_stereo_files",
    "torch_hub_checkpoint_dir",
]
