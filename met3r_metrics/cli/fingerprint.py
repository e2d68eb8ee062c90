"""What a results folder's numbers depend on, and the refusal to mix them: the settings fingerprint (settings
minus memory knobs, the weights' content digests, the data settings, decoders), the default folder name, the
resume check."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from met3r_metrics import io as mio
from met3r_metrics.cli import results as res
from met3r_metrics.settings import Settings
from met3r_metrics.weights.identity import network_digests

#: How the headline number aggregates (recorded in summary.json).
AGGREGATION = "mean over sequences of per-sequence mean over pairs"
#: Settings fields that do not change the numbers (to float rounding): not part of the resume check.
_MEMORY_KNOBS = ("batch_size",)
#: data settings that change the numbers (data.fingerprint only decides how changed inputs are noticed)
_DATA_KEYS = ("path", "tensor_key", "value_range", "frame_stride", "start", "max_frames", "resize", "resize_filter",
              "geometry", "intrinsics")


def _data_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The data settings that change the numbers (recorded and checked on resume)."""
    out = {k: data.get(k) for k in _DATA_KEYS}
    out["path"] = str(Path(str(data["path"])).expanduser().resolve())
    return out


def _fingerprint(settings: Settings, data: dict[str, Any], weights: dict[str, str] | None = None) -> dict[str, Any]:
    """What the numbers depend on: the metric's settings (minus memory knobs), the weights the networks
    loaded (their content digests), the data settings, decoders."""
    metric = {k: v for k, v in settings.to_dict().items() if k not in _MEMORY_KNOBS}
    metric["overrides"] = [k for k in metric["overrides"] if k not in _MEMORY_KNOBS]
    return {"settings": metric, "weights": dict(weights or {}), "aggregation": AGGREGATION,
            "data": {**_data_settings(data), "decoders": mio.decoder_versions()}}


def weights_identity(scorer: Any) -> dict[str, str]:
    """``{network: SHA-256 of its state dict}`` for every network the scorer loaded (stereo, features,
    lpips, flow: the scorer's child modules): see :mod:`met3r_metrics.weights.identity`."""
    return network_digests(scorer.named_children())


def default_output_dir(settings: Settings, data: dict[str, Any], weights: dict[str, str] | None = None) -> Path:
    """``met3r_results/<data name>_<variant>_<digest>``: the digest covers everything the numbers
    depend on (settings, data settings, the weights' identity), so the same command resumes, different
    settings (a hydra multirun) never collide, and changed weights start a new folder."""
    path = Path(str(data["path"])).expanduser().resolve()
    key = {"settings": settings.digest(exclude=_MEMORY_KNOBS), "data": _data_settings(data)}
    if weights:
        key["weights"] = dict(weights)
    key = json.dumps(key, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return Path("met3r_results") / f"{path.name or 'data'}_{settings.variant}_{digest}"


def _check_settings(out_dir: Path, fingerprint: dict[str, Any], is_main: bool, ignore: tuple[str, ...] = ()) -> None:
    """Refuse to mix results computed with different settings in one output dir (``ignore``: top-level keys
    left out of the comparison, e.g. the weights before the networks are built; nothing is written then)."""
    path = out_dir / "settings.json"
    text = json.dumps(fingerprint, indent=2, sort_keys=True, default=str)
    if path.exists():
        old = {k: v for k, v in json.loads(path.read_text()).items() if k not in ignore}
        new = {k: v for k, v in json.loads(text).items() if k not in ignore}
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            inner = [f"{k}.{f}" for k in diff if isinstance(old.get(k), dict) and isinstance(new.get(k), dict)
                     for f in sorted(set(old[k]) | set(new[k])) if old[k].get(f) != new[k].get(f)]
            what = "other weights" if diff == ["weights"] else "different settings"
            raise SystemExit(
                f"met3r-eval: {out_dir} holds results computed with {what} ({', '.join(inner or diff)} "
                f"differ; see {path}). Use another output.dir, or output.overwrite=true to start over."
            )
    elif is_main and not ignore:
        res.atomic_write_text(path, text + "\n")
