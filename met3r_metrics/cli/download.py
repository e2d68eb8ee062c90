"""``met3r-download``: prefetch the weights a variant needs, for offline clusters (argparse).

Weights land in the standard caches (the Hugging Face hub cache for DUSt3R/MASt3R, torch hub's
checkpoint dir for DINO/FeatUp), so that later runs with ``HF_HUB_OFFLINE=1`` find them::

    met3r-download                 # what the default variant (official) needs
    met3r-download official paper  # several variants
    met3r-download dust3r_512_dpt  # a checkpoint by registry name
    met3r-download --list          # every known checkpoint, and whether it is cached
    met3r-download --random-tiny met3r_smoke   # offline smoke test: tiny random-weight networks + frames
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from met3r_metrics.settings import Settings

__all__ = ["main", "checkpoints_for", "is_cached"]


def _weights() -> Any:
    from met3r_metrics import weights

    return weights


def _variants() -> dict[str, Any]:
    from met3r_metrics.settings import VARIANTS

    return VARIANTS


def _feature_checkpoints(settings: Settings) -> list[str]:
    """Registry names of the feature path ``settings`` use (none for the RGB distances).

    The feature network is always FeatUp's dino16 (MEt3R uses ChannelNorm, ``use_norm=True``)
    whatever the upsampler; DINO's own weights are fetched too, because they are the fallback
    when a FeatUp checkpoint lacks the ViT tensors.
    """
    if not settings.uses_features or settings.feature_weights is not None:
        return []
    weights = _weights()
    return [weights.FEATUP_CHECKPOINTS[True], weights.DINO_CHECKPOINT]


def checkpoints_for(target: str) -> list[str]:
    """Registry names needed for ``target``: a variant name, a backbone alias, or a registry name."""
    weights = _weights()
    names = list(weights.CHECKPOINTS)
    if target in names:
        return [target]
    from met3r_metrics.settings import BACKBONE_ALIASES, Settings

    if target in BACKBONE_ALIASES:
        return [BACKBONE_ALIASES[target]]
    if target in _variants():
        settings = Settings.from_variant(target)
        needed = [settings.backbone] if settings.backbone_weights is None else []
        needed += [n for n in _feature_checkpoints(settings) if n not in needed]
        return needed
    raise SystemExit(
        f"met3r-download: unknown variant or checkpoint {target!r}; "
        f"variants: {', '.join(_variants())}; checkpoints: {', '.join(names)}"
    )


def is_cached(name: str) -> str | None:
    """Local path of checkpoint ``name`` if it is already cached, else ``None`` (never downloads)."""
    weights = _weights()
    try:
        return str(weights.checkpoint_file(name, download=False))
    except weights.WeightsNotFoundError:
        return None


def _describe(info: Any) -> str:
    return f"{info.description} [{info.licence}] from {info.source}"


def _list() -> int:
    weights = _weights()
    rows = []
    for name, info in weights.CHECKPOINTS.items():
        path = is_cached(name)
        rows.append((name, "cached" if path else "missing", path or _describe(info)))
    width = max((len(r[0]) for r in rows), default=4)
    for name, state, where in rows:
        print(f"{name:<{width}}  {state:<7}  {where}")
    needs = {v: checkpoints_for(v) for v in _variants()}
    for variant, names in needs.items():
        print(f"variant {variant}: {', '.join(names)}")
    return 0


def _random_tiny(directory: str) -> int:
    """``--random-tiny DIR``: write the smoke-test networks and frames, print the commands that use them."""
    from pathlib import Path

    from met3r_metrics.testing import write_random_tiny_networks

    kw = write_random_tiny_networks(directory)
    root = Path(directory)
    overrides = " ".join(f"metric.{k}={v}" for k, v in kw.items() if k != "backbone")
    print(f"tiny random-weight networks (smoke test only: their scores mean nothing) in {root}:\n"
          f"  {kw['backbone_weights']}  (MASt3R, config.json + model.safetensors)\n"
          f"  {kw['feature_weights']}  (FeatUp dino16, state_dict)\n"
          f"  {root / 'frames'}  (2 sequences of 4 frames)\n"
          f"met3r-eval data.path={root / 'frames'} {overrides} output.dir={root / 'results'}\n"
          f"python: met3r_metrics.met3r(images, **met3r_metrics.testing.random_tiny_kwargs({str(root)!r}))")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point; returns the exit status (0: everything requested is cached)."""
    parser = argparse.ArgumentParser(
        prog="met3r-download",
        description="Prefetch MEt3R weights into the standard caches (for offline runs).",
    )
    parser.add_argument("targets", nargs="*", default=None, help="variants (official, paper) or checkpoint names; default: official")
    parser.add_argument("--list", action="store_true", help="list known checkpoints and whether each is cached")
    parser.add_argument("--random-tiny", metavar="DIR", default=None,
                        help="write tiny seeded random-weight networks (official file formats) and a few frames into "
                             "DIR, for an offline smoke test (no download; the scores mean nothing)")
    args = parser.parse_args(argv)
    if args.list:
        return _list()
    if args.random_tiny is not None:
        if args.targets:
            parser.error(f"--random-tiny: expected no variant or checkpoint names beside it, got {args.targets}")
        return _random_tiny(args.random_tiny)
    targets = args.targets or ["official"]
    names: list[str] = []
    for target in targets:
        names.extend(n for n in checkpoints_for(target) if n not in names)
    weights = _weights()
    failed = 0
    for name in names:
        try:
            path = weights.checkpoint_file(name, download=True)
            print(f"{name}: {path}")
        except weights.WeightsNotFoundError as err:
            failed += 1
            # this *is* the prefetch command: say what stops it, not "run met3r-download"
            fix = ("unset HF_HUB_OFFLINE (met3r-download needs network access)" if "HF_HUB_OFFLINE" in err.reason
                   else "run it where there is network access, then copy the cache folder shown")
            print(f"{name}: FAILED: {err.what} could not be downloaded ({err.reason}); {fix}. "
                  f"Looked in: {', '.join(err.searched)}", file=sys.stderr)
        except Exception as err:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            print(f"{name}: FAILED: {err}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
