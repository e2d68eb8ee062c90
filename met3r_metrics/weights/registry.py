"""The one table of checkpoints MEt3R knows: name, source, files, licence, optional SHA-256.

Every entry can be fetched by name (:func:`met3r_metrics.weights.checkpoint_file`, ``met3r-download
<name>``). DUSt3R / MASt3R come from the Hugging Face hub (``naver/<official name>``: ``config.json`` +
``model.safetensors``) or as the official ``.pth`` from Naver's server; DINO and FeatUp from their official
URLs. This package ships no network weights except LPIPS's linear layers (5-7 KB each, BSD-2-Clause, ``met3r_metrics/data``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

__all__ = [
    "ALEXNET_CHECKPOINT",
    "CHECKPOINTS",
    "RAFT_CHECKPOINT",
    "CheckpointInfo",
    "DINO_CHECKPOINT",
    "FEATUP_CHECKPOINTS",
    "HF_FILES",
    "by_hf_repo",
    "by_url",
    "get_checkpoint",
    "stereo_names",
]

NAVER_LICENCE = "CC BY-NC-SA 4.0 (non-commercial use only; Naver Corporation)"
DINO_LICENCE = "Apache-2.0 (Meta Platforms, facebookresearch/dino)"
FEATUP_LICENCE = "MIT (Mark Hamilton et al., mhamilton723/FeatUp)"
ALEXNET_LICENCE = "BSD-3-Clause (torchvision)"
RAFT_LICENCE = "BSD-3-Clause (torchvision, which trained these weights; RAFT itself: princeton-vl/RAFT, BSD-3-Clause)"

#: The files of a DUSt3R / MASt3R Hugging Face repo, in this order (the weights file last).
HF_FILES = ("config.json", "model.safetensors")

_NAVER_URL = "https://download.europe.naverlabs.com/ComputerVision/{project}/{name}.pth"
_FEATUP_URL = "https://marhamilresearch4.blob.core.windows.net/feature-upsampling-public/pretrained/{path}"
INF = float("inf")


@dataclass(frozen=True)
class CheckpointInfo:
    """One known checkpoint.

    Attributes:
        name: registry key (also the argument of ``met3r-download``).
        kind: 'stereo' (DUSt3R/MASt3R), 'dino', 'featup', 'alexnet' / 'vgg' (LPIPS's trunk) or 'raft' (optical flow).
        filename: file name at the official URL.
        url: official direct download URL.
        cache_name: path of the downloaded URL file relative to ``torch.hub.get_dir()/checkpoints``.
        licence: licence of the weights.
        description: one line for humans.
        hf_repo_id: Hugging Face repo holding :data:`HF_FILES` (stereo models only; preferred over ``url``).
        config: official inference constructor kwargs (stereo models only; what ``load_model`` builds).
        model_string: the training ``--model`` string stored in the official ``.pth`` (stereo models only).
        sha256: SHA-256 of the URL file, or a prefix of it (torchvision publishes 8 hex digits in its file names),
            checked by torch's downloader when set (None: not published).
    """

    name: str
    kind: Literal["stereo", "dino", "featup", "alexnet", "vgg", "raft"]
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
        CheckpointInfo(
            name="alexnet_torchvision", kind="alexnet", filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            # torchvision's own cache name: a file torchvision already downloaded is reused
            cache_name="alexnet-owt-7be5be79.pth", licence=ALEXNET_LICENCE,
            description="torchvision AlexNet ImageNet weights: the trunk of distance='lpips' (features only)",
        ),
        CheckpointInfo(
            name="vgg16_torchvision", kind="vgg", filename="vgg16-397923af.pth",
            url="https://download.pytorch.org/models/vgg16-397923af.pth",
            cache_name="vgg16-397923af.pth", licence=ALEXNET_LICENCE, sha256="397923af",
            description="torchvision VGG-16 ImageNet weights: the optional LPIPS-VGG trunk (lpips_weights=; features only)",
        ),
        CheckpointInfo(
            # what torchvision's raft_large(pretrained=True) loads (Raft_Large_Weights.C_T_SKHT_V2), i.e. what the
            # official MEt3R's backbone='raft' runs
            name="raft_large_torchvision", kind="raft", filename="raft_large_C_T_SKHT_V2-ff5fadd5.pth",
            url="https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth",
            cache_name="raft_large_C_T_SKHT_V2-ff5fadd5.pth", licence=RAFT_LICENCE, sha256="ff5fadd5",
            description="torchvision RAFT-large optical flow (C_T_SKHT_V2): the network of backbone='raft'",
        ),
    )
}

#: The AlexNet trunk of ``distance="lpips"``.
ALEXNET_CHECKPOINT = "alexnet_torchvision"
#: The optical-flow network of ``backbone="raft"``.
RAFT_CHECKPOINT = "raft_large_torchvision"

#: FeatUp checkpoint by ``use_norm`` (MEt3R: True), and the DINO file that supplies a missing ViT.
FEATUP_CHECKPOINTS: Mapping[bool, str] = MappingProxyType({True: "featup_dino16_jbu", False: "featup_dino16_jbu_no_norm"})
DINO_CHECKPOINT = "dino_vits16"


def get_checkpoint(name: str) -> CheckpointInfo:
    """The entry called ``name``; ``KeyError`` naming the known ones otherwise."""
    if name not in CHECKPOINTS:
        raise KeyError(f"unknown checkpoint {name!r}; known: {', '.join(CHECKPOINTS)}")
    return CHECKPOINTS[name]


def by_hf_repo(repo_id: str) -> CheckpointInfo | None:
    """The entry whose Hugging Face repo is ``repo_id``, if any."""
    return next((info for info in CHECKPOINTS.values() if info.hf_repo_id == repo_id), None)


def by_url(url: str) -> CheckpointInfo | None:
    """The entry whose official URL is ``url``, if any."""
    return next((info for info in CHECKPOINTS.values() if info.url == url), None)


def stereo_names() -> list[str]:
    """Registry names of the DUSt3R / MASt3R checkpoints."""
    return [name for name, info in CHECKPOINTS.items() if info.kind == "stereo"]
