"""Test helpers: tiny random-weight MEt3R networks, through the public loading path.

:func:`write_random_tiny_networks` (``met3r-download --random-tiny DIR``) needs nothing but this package: it
builds a tiny MASt3R and a tiny FeatUp dino16 with seeded random weights and writes them in the official
formats (Hugging Face ``config.json`` + ``model.safetensors``; FeatUp's Lightning ``.ckpt`` with a
``state_dict``), plus a few frames to score: the offline smoke test before the real checkpoints are fetched.
Its scores mean nothing (random networks); they only show that everything loads and runs.

The helpers below read the repository's golden data (``../shared/golden``) instead.

:func:`tiny_met3r_kwargs` writes ordinary local checkpoints (what a user with downloaded weights
has) into a work directory and returns the ``MEt3R(...)`` / ``met3r(...)`` keyword arguments that
point at them. The networks are the ones the golden MEt3R cases were produced with:

* MASt3R ``mast3r_catmlpdpt_tiny`` (or DUSt3R ``dust3r_dpt_tiny``) with the 40 fitted DPT-head
  tensors of ``golden/met3r/<cfg>.met3r_heads.safetensors`` (plausible geometry, overlap ~0.7);
* FeatUp ``dino16`` with a 2-block ViT + the JBU stack (``golden/featup/dino16_d2_weights``).

With ``img_size=64`` and ``radius=0.04`` (the golden cases' settings), inputs (B, V, 3, 64, 64)
give plausible scores in a fraction of a second on CPU.

:func:`extras_kwargs` adds the networks of ``golden/met3r_extras`` (the official lpips / psnr / ssim
distances and the RAFT backbone): for ``distance="lpips"`` the random-weight AlexNet trunk, for
``backbone="raft"`` the random-weight RAFT-large, both regenerated from ``weights_recipe.json`` (every
tensor's SHA-256 checked) and written as torchvision-layout ``.pth`` files.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "RANDOM_TINY_STEREO_CONFIG",
    "extras_kwargs",
    "random_tiny_kwargs",
    "write_random_tiny_networks",
    "recipe_state_dict",
    "tiny_met3r_kwargs",
    "write_recipe_alexnet_checkpoint",
    "write_recipe_raft_checkpoint",
    "write_tiny_featup_checkpoint",
    "write_tiny_stereo_checkpoint",
]

_STEREO_CFGS = {"mast3r": "mast3r_catmlpdpt_tiny", "dust3r": "dust3r_dpt_tiny"}


def write_tiny_stereo_checkpoint(golden_root: Path, workdir: Path, backbone: str = "mast3r") -> Path:
    """Write ``<workdir>/<cfg>/{config.json, model.safetensors}`` (Hugging Face layout, official key
    names) for the tiny MASt3R/DUSt3R with MEt3R's fitted heads; returns the directory."""
    import torch
    from safetensors.torch import load_file, save_file

    golden_root, workdir = Path(golden_root), Path(workdir)
    cfg = _STEREO_CFGS[backbone]
    out = workdir / cfg
    if (out / "model.safetensors").is_file() and (out / "config.json").is_file():
        return out
    meta = json.loads((golden_root / "dust3r" / f"{cfg}.json").read_text())
    config: dict[str, Any] = dict(meta["constructor_kwargs"])
    if meta.get("dpt_head_overrides"):
        config["dpt_head_overrides"] = dict(meta["dpt_head_overrides"])
    config["model_class"] = meta.get("model_class", "AsymmetricMASt3R" if backbone == "mast3r" else "AsymmetricCroCo3DStereo")
    sd = load_file(str(golden_root / "dust3r" / f"{cfg}.weights.safetensors"))
    sd.update(load_file(str(golden_root / "met3r" / f"{cfg}.met3r_heads.safetensors")))
    sd = {k: v.to(torch.float32).contiguous() for k, v in sd.items()}
    tmp = workdir / f".{cfg}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    # json cannot hold inf: official HF configs write it as the JSON extension 'Infinity', as here
    (tmp / "config.json").write_text(json.dumps(config, indent=1))
    save_file(sd, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def write_tiny_featup_checkpoint(golden_root: Path, workdir: Path) -> Path:
    """Copy the FeatUp dino16 (ViT depth 2) + JBU checkpoint (official key names) into ``workdir``."""
    src = Path(golden_root) / "featup" / "dino16_d2_weights.safetensors"
    dst = Path(workdir) / "featup_dino16_d2.safetensors"
    if not dst.is_file():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    return dst


def tiny_met3r_kwargs(golden_root: Path, workdir: Path, *, backbone: str = "mast3r") -> dict[str, Any]:
    """Keyword arguments for ``MEt3R(...)`` / ``met3r(...)`` that build the tiny test networks.

    Args:
        golden_root: the ``shared/golden`` directory.
        workdir: a writable directory (e.g. pytest's ``tmp_path_factory``); checkpoints are written
            once and reused.
        backbone: ``"mast3r"`` (default, as the official variant) or ``"dust3r"``.

    Returns:
        ``{"backbone", "backbone_weights", "feature_weights", "img_size": 64, "radius": 0.04}``.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stereo = write_tiny_stereo_checkpoint(golden_root, workdir, backbone)
    featup = write_tiny_featup_checkpoint(golden_root, workdir)
    return {
        "backbone": backbone,
        "backbone_weights": str(stereo),
        "feature_weights": str(featup),
        "img_size": 64,
        "radius": 0.04,
    }


def recipe_state_dict(golden_root: Path, net: str) -> dict[str, Any]:
    """Regenerate the random-weight state dict ``recipes.<net>`` of ``met3r_extras/weights_recipe.json``.

    ``randn`` entries are ``torch.randn(shape, generator=manual_seed(seed)) * scale + offset`` (float32),
    ``const`` entries ``torch.full(shape, offset, dtype)``; each tensor's SHA-256 (contiguous little-endian
    bytes) is checked against the recipe.

    Raises:
        KeyError: ``net`` is not in the recipe file.
        ValueError: a regenerated tensor's SHA-256 differs from the recipe (naming the key).
    """
    import torch

    recipes = json.loads((Path(golden_root) / "met3r_extras" / "weights_recipe.json").read_text())["recipes"]
    if net not in recipes:
        raise KeyError(f"net: expected one of {sorted(recipes)}, got {net!r}")
    out: dict[str, Any] = {}
    for e in recipes[net]["entries"]:
        dtype = getattr(torch, e["dtype"])
        if e["kind"] == "randn":
            gen = torch.Generator().manual_seed(int(e["seed"]))
            t = torch.randn(e["shape"], generator=gen, dtype=torch.float32) * e["scale"] + e["offset"]
        elif e["kind"] == "const":
            t = torch.full(e["shape"], e["offset"], dtype=dtype)
        else:
            raise ValueError(f"{net}.{e['key']}: expected kind 'randn' or 'const', got {e['kind']!r}")
        t = t.to(dtype).contiguous()
        digest = hashlib.sha256(t.numpy().tobytes()).hexdigest()
        if digest != e["sha256"]:
            raise ValueError(f"{net}.{e['key']}: expected SHA-256 {e['sha256']}, got {digest} (regeneration differs)")
        out[e["key"]] = t
    return out


def write_recipe_alexnet_checkpoint(golden_root: Path, workdir: Path) -> Path:
    """Write the recipe AlexNet trunk as ``<workdir>/alexnet_recipe.pth``, a plain state dict with torchvision's
    keys (``features.<i>.weight``), as ``alexnet-owt-7be5be79.pth`` holds them; returns the file."""
    import torch

    dst = Path(workdir) / "alexnet_recipe.pth"
    if not dst.is_file():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        sd = {f"features.{k}": v for k, v in recipe_state_dict(golden_root, "alexnet_features").items()}
        tmp = dst.with_suffix(".tmp")
        torch.save(sd, tmp)
        tmp.rename(dst)
    return dst


def write_recipe_raft_checkpoint(golden_root: Path, workdir: Path) -> Path:
    """Write the recipe RAFT-large as ``<workdir>/raft_large_recipe.pth``, a plain state dict with torchvision's
    ``raft_large`` keys, as ``raft_large_C_T_SKHT_V2-ff5fadd5.pth`` holds them; returns the file."""
    import torch

    dst = Path(workdir) / "raft_large_recipe.pth"
    if not dst.is_file():
        Path(workdir).mkdir(parents=True, exist_ok=True)
        tmp = dst.with_suffix(".tmp")
        torch.save(recipe_state_dict(golden_root, "raft_large"), tmp)
        tmp.rename(dst)
    return dst


def extras_kwargs(golden_root: Path, workdir: Path, *, backbone: str = "mast3r", distance: str) -> dict[str, Any]:
    """Keyword arguments for ``MEt3R(...)`` / ``met3r(...)`` reproducing a ``golden/met3r_extras`` case.

    Args:
        golden_root: the ``shared/golden`` directory.
        workdir: a writable directory; checkpoints are written once and reused.
        backbone: ``"mast3r"`` (the L1 / P1 / S1 cases) or ``"raft"`` (R1, R2; inputs ``sq128``).
        distance: ``"lpips"``, ``"psnr"``, ``"ssim"`` (or any other distance).

    Returns:
        mast3r: :func:`tiny_met3r_kwargs` plus ``distance``; raft: ``backbone="raft"``, ``backbone_weights`` (the
        recipe RAFT), ``feature_weights`` (the tiny FeatUp), ``distance``. For lpips also ``lpips_weights`` (the
        recipe AlexNet trunk; LPIPS's linear layers are the ones shipped with the package, the released v0.1
        layers). The RAFT path ignores ``img_size`` (its maps are at the input size).

    Raises:
        ValueError: another ``backbone``.
    """
    if backbone not in ("mast3r", "raft"):
        raise ValueError(f"backbone: expected 'mast3r' or 'raft', got {backbone!r}")
    if backbone == "raft":
        kw: dict[str, Any] = {
            "backbone": "raft",
            "backbone_weights": str(write_recipe_raft_checkpoint(golden_root, workdir)),
            "feature_weights": str(write_tiny_featup_checkpoint(golden_root, workdir)),
        }
    else:
        kw = tiny_met3r_kwargs(golden_root, workdir, backbone=backbone)
    kw["distance"] = distance
    if distance == "lpips":
        kw["lpips_weights"] = str(write_recipe_alexnet_checkpoint(golden_root, workdir))
    return kw


_INF = float("inf")
#: The tiny MASt3R of :func:`write_random_tiny_networks` (official constructor kwargs, as an HF config.json holds
#: them): the golden tiny configuration (64 px, a 2-block encoder; the DPT head needs 12 decoder blocks).
RANDOM_TINY_STEREO_CONFIG: dict[str, Any] = {
    "model_class": "AsymmetricMASt3R", "pos_embed": "RoPE100", "patch_embed_cls": "PatchEmbedDust3R",
    "img_size": [64, 64], "head_type": "catmlp+dpt", "output_mode": "pts3d+desc4", "depth_mode": ["exp", -_INF, _INF],
    "conf_mode": ["exp", 1, _INF], "enc_embed_dim": 64, "enc_depth": 2, "enc_num_heads": 4, "dec_embed_dim": 48,
    "dec_depth": 12, "dec_num_heads": 4, "two_confs": True, "desc_conf_mode": ["exp", 0, _INF],
    "landscape_only": False, "dpt_head_overrides": {"feature_dim": 32, "last_dim": 8, "layer_dims": [16, 24, 32, 40]},
}
_STEREO_DIR, _FEATUP_FILE, _FRAMES_DIR = "mast3r_tiny", "featup_dino16_tiny.ckpt", "frames"
# Random heads point anywhere (half the points behind the camera: no overlap, every pair NaN). The last 1x1 conv
# of each point head is scaled down and biased to z = +2 (exp depth mode: points ~6 units in front of the camera),
# so that the renders overlap and the smoke test gets a (meaningless) finite score.
_HEAD_SCALE, _HEAD_Z = 0.1, 2.0


def write_random_tiny_networks(directory: str | Path, *, seed: int = 0, frames: bool = True) -> dict[str, Any]:
    """Write tiny seeded random-weight networks in the official file formats into ``directory``; no golden data,
    no network access.

    Writes ``mast3r_tiny/{config.json, model.safetensors}`` (a MASt3R, official key names, HF layout),
    ``featup_dino16_tiny.ckpt`` (FeatUp dino16 with a 2-block ViT + JBU stack, official key names under
    ``state_dict``) and, with ``frames``, ``frames/seq_{0,1}/f{0..3}.png`` (64x64 shifted crops of a seeded
    smooth image). The same ``seed`` gives the same tensors (same torch version); the global RNG is untouched.

    Returns:
        :func:`random_tiny_kwargs` of ``directory``: ``MEt3R(**kw)`` / ``met3r(images, **kw)`` load the files.
    """
    import torch

    from .models.dino import DinoFeaturizer
    from .models.dust3r import build_stereo_model
    from .models.featup import JBUStack, UpsampledDino, to_official_key
    from .weights import save_stereo_files

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        stereo = build_stereo_model(dict(RANDOM_TINY_STEREO_CONFIG))
        features = UpsampledDino(DinoFeaturizer(depth=2, use_norm=True), JBUStack(384))
    with torch.no_grad():
        for head in ("downstream_head1", "downstream_head2"):
            last = stereo.get_submodule(f"{head}.dpt.head.4")  # 1x1 conv -> (x, y, z, conf)
            last.weight.mul_(_HEAD_SCALE)
            last.bias.zero_()
            last.bias[2] = _HEAD_Z
    save_stereo_files(stereo, directory / _STEREO_DIR, RANDOM_TINY_STEREO_CONFIG)
    state = {to_official_key(k): v.detach().clone().contiguous() for k, v in features.state_dict().items()}
    tmp = directory / f".{_FEATUP_FILE}.tmp"
    torch.save({"state_dict": state}, tmp)
    tmp.replace(directory / _FEATUP_FILE)
    if frames:
        _write_smoke_frames(directory / _FRAMES_DIR, seed)
    return random_tiny_kwargs(directory)


def _write_smoke_frames(folder: Path, seed: int, num_sequences: int = 2, num_frames: int = 4) -> None:
    import torch
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    for s in range(num_sequences):
        coarse = torch.rand(1, 3, 8, 12, generator=gen)
        image = torch.nn.functional.interpolate(coarse, size=(64, 64 + 8 * num_frames), mode="bicubic").clamp(0, 1)
        seq = folder / f"seq_{s}"
        seq.mkdir(parents=True, exist_ok=True)
        for t in range(num_frames):  # the camera pans 8 px per frame
            crop = (image[0, :, :, 8 * t : 8 * t + 64] * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
            Image.fromarray(crop).save(seq / f"f{t}.png")


def random_tiny_kwargs(directory: str | Path) -> dict[str, Any]:
    """``MEt3R(...)`` / ``met3r(...)`` keyword arguments for the networks :func:`write_random_tiny_networks` wrote
    into ``directory``: ``backbone``, ``backbone_weights``, ``feature_weights``, ``img_size=64``, ``radius=0.04``."""
    directory = Path(directory)
    return {"backbone": "mast3r", "backbone_weights": str(directory / _STEREO_DIR),
            "feature_weights": str(directory / _FEATUP_FILE), "img_size": 64, "radius": 0.04}
