"""``met3r-eval``: MEt3R over folders of sequences, videos or tensor files (hydra app).

The paper's protocol: score consecutive frame pairs of each sequence, average per sequence, then
average over sequences.  Results go to ``output.dir``::

    sequences.jsonl   one line per finished sequence (appended + fsync'ed as each one finishes)
    pairs.csv         sequence, i, j, score, overlap   (score empty-overlap pairs = nan)
    summary.json      mean over sequences / pairs, std, 95% CI, counts, settings, versions
    config.yaml       the resolved hydra config;  settings.json  what the numbers depend on
    run_info.json     world size, device, timing (kept out of summary.json so that summaries of
                      1-process and N-process runs are identical)
    sequence_curves.png, histogram.png, worst_pairs.png (optional)

Re-running with the same ``output.dir`` resumes: finished sequences are skipped.  Under
``torchrun --nproc_per_node=N`` sequences are sharded over ranks and rank 0 merges.

Examples::

    met3r-eval data.path=/data/generated_videos
    met3r-eval data.path=samples.pt metric=paper runtime.precision=bf16 runtime.batch_size=16
    torchrun --nproc_per_node=8 -m met3r_metrics.cli.evaluate data.path=/data/seqs output.dir=out
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from met3r_metrics import io as mio
from met3r_metrics.cli import distributed as mdist
from met3r_metrics.cli import results as res
from met3r_metrics.cli.scoring import PRECISIONS, PairBatchScorer, finite_mean

log = logging.getLogger("met3r_eval")

# Keys of the metric config group that steer the CLI rather than resolve_settings().
_CLI_METRIC_KEYS = ("variant", "pairing", "pair_gap")
# Internal: seconds to sleep after each sequence (lets the kill/resume test stop a run mid-way).
_SLEEP_ENV = "_MET3R_EVAL_SLEEP_AFTER_SEQUENCE"


def _package_version() -> str:
    from met3r_metrics import __version__

    return __version__


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


def metric_overrides(metric_cfg: dict[str, Any]) -> dict[str, Any]:
    """resolve_settings() overrides from the metric group: every non-null knob except CLI keys."""
    out = {k: v for k, v in metric_cfg.items() if k not in _CLI_METRIC_KEYS and v is not None}
    if isinstance(out.get("img_size"), str) and out["img_size"].lower() in ("input", "none"):
        out["img_size"] = None  # null already means "the variant's value"
    return out


def _data_settings(data: dict[str, Any]) -> dict[str, Any]:
    """The data settings that change the numbers (recorded and checked on resume)."""
    keys = ("path", "tensor_key", "value_range", "frame_stride", "start", "max_frames", "resize", "resize_filter")
    out = {k: data.get(k) for k in keys}
    out["path"] = str(Path(str(data["path"])).expanduser().resolve())
    out["decoders"] = mio.decoder_versions()
    return out


def _check_settings(out_dir: Path, fingerprint: dict[str, Any], is_main: bool) -> None:
    """Refuse to mix results computed with different settings in one output dir."""
    path = out_dir / "settings.json"
    text = json.dumps(fingerprint, indent=2, sort_keys=True, default=str)
    if path.exists():
        old = json.loads(path.read_text())
        new = json.loads(text)
        if old != new:
            diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise SystemExit(
                f"met3r-eval: {out_dir} holds results computed with different settings ({', '.join(diff)} "
                f"differ; see {path}). Use another output.dir, or output.overwrite=true to start over."
            )
    elif is_main:
        res.atomic_write_text(path, text + "\n")


def _all_record_files(out_dir: Path) -> list[Path]:
    return [out_dir / "sequences.jsonl", *sorted(out_dir.glob("sequences.rank*.jsonl"), key=lambda p: mio.natural_key(p.name))]


def _read_all_records(out_dir: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in _all_record_files(out_dir):
        records.extend(res.read_jsonl(path))
    return records


def _clear_results(out_dir: Path) -> None:
    names = ["sequences.jsonl", "pairs.csv", "summary.json", "settings.json", "run_info.json",
             "sequence_curves.png", "histogram.png", "worst_pairs.png"]
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    for path in out_dir.glob("sequences.rank*.jsonl"):
        path.unlink()


def _size_rules(settings: dict[str, Any]) -> dict[str, int]:
    """Frame sizes the metric takes: patch multiples, and an even number of patch rows for FeatUp."""
    from met3r_metrics.inputs import MIN_SIDE, PATCH

    featup = settings.get("distance") == "cosine" and settings.get("upsampler") == "featup"
    return {"multiple": PATCH, "height_multiple": 2 * PATCH if featup else PATCH, "min_side": MIN_SIDE}


def _prepare_views(source: mio.SequenceSource, data: dict[str, Any], rules: dict[str, int]) -> torch.Tensor:
    """Load a sequence and bring it to float [0, 1] at a valid, explicitly chosen size."""
    views = source.load()
    views = mio.select_frames(views, stride=int(data["frame_stride"]), start=int(data["start"]), max_frames=data["max_frames"])
    views = mio.to_unit_range(views, str(data["value_range"]))
    return mio.check_or_resize(views, resize=data["resize"], filter=str(data["resize_filter"]), **rules)


def _evaluate_sequence(
    source: mio.SequenceSource,
    data: dict[str, Any],
    metric: dict[str, Any],
    scorer: PairBatchScorer,
    rules: dict[str, int],
    pair_bar: Any,
) -> dict[str, Any]:
    """One sequence -> its record (status ok), or raise (the caller records the error)."""
    t0 = time.perf_counter()
    views = _prepare_views(source, data, rules)
    gap = int(metric["pair_gap"])
    pairs = list(mio.iter_pairs(views.shape[0], str(metric["pairing"]), gap))
    if not pairs:
        raise ValueError(f"too short: {views.shape[0]} frame(s) after frame selection, need at least {gap + 1}")
    if pair_bar is not None:
        pair_bar.reset(total=len(pairs))
        pair_bar.set_description(source.name[:30])
    out = scorer.score_pairs(views, pairs, progress=pair_bar)
    nan_to_none = lambda v: v if math.isfinite(v) else None  # noqa: E731 - JSON has no NaN
    return {
        "sequence": source.name,
        "status": "ok",
        "kind": source.kind,
        "path": source.path,
        "num_frames": int(views.shape[0]),
        "height": int(views.shape[-2]),
        "width": int(views.shape[-1]),
        "score": finite_mean(out.scores),
        "num_zero_overlap": sum(not math.isfinite(s) for s in out.scores),
        "pairs": [list(p) for p in pairs],
        "pair_scores": [nan_to_none(s) for s in out.scores],
        "overlap": [nan_to_none(o) for o in out.overlap],
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _tqdm(disable: bool, **kwargs: Any) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(disable=disable, dynamic_ncols=True, **kwargs)


def _curve_labels(pairing: str, gap: int) -> dict[str, str]:
    """Title and x label of sequence_curves.png for the pairing protocol used."""
    if pairing == "first":
        return {"title": "MEt3R per pair with the first frame", "xlabel": "pair index k (frame 0 -> k+1)"}
    if pairing == "all":
        return {"title": "MEt3R per pair (all pairs i < j)", "xlabel": "pair index (pairs (i, j), i < j, in row-major order)"}
    step = "i+1" if gap == 1 else f"i+{gap}"
    return {"title": "MEt3R per consecutive pair" + ("" if gap == 1 else f" (gap {gap})"), "xlabel": f"pair index i (frame i -> {step})"}


def _write_plots(out_dir: Path, merged: list[dict[str, Any]], max_curves: int, pairing: str = "consecutive", gap: int = 1) -> None:
    try:
        from met3r_metrics.plotting import plot_score_histogram, plot_sequence_curves
    except ImportError:  # pragma: no cover
        return
    ok = [r for r in merged if r.get("status") == "ok"]
    if not ok:
        return
    try:
        curves = {r["sequence"]: [float("nan") if s is None else s for s in r["pair_scores"]] for r in ok[:max_curves]}
        plot_sequence_curves(curves, **_curve_labels(pairing, gap)).savefig(out_dir / "sequence_curves.png", dpi=120)
        pair_scores = [float("nan") if s is None else s for r in ok for s in r["pair_scores"]]
        plot_score_histogram(pair_scores, title="MEt3R per pair").savefig(out_dir / "histogram.png", dpi=120)
    except ImportError as err:
        log.warning("plots skipped: %s", err)


def _write_worst_pairs(
    out_dir: Path, merged: list[dict[str, Any]], sources: dict[str, mio.SequenceSource],
    data: dict[str, Any], scorer: PairBatchScorer, k: int, rules: dict[str, int],
) -> None:
    """Recompute the k worst pairs with score maps and draw them (rank 0, after the merge)."""
    from met3r_metrics.plotting import plot_pair_maps

    ranked = [
        (s, r["sequence"], tuple(p))
        for r in merged if r.get("status") == "ok"
        for p, s in zip(r["pairs"], r["pair_scores"]) if s is not None
    ]
    ranked.sort(key=lambda t: -t[0])
    ranked = ranked[:k]
    if not ranked:
        return
    v1, v2, maps, masks, scores, titles = [], [], [], [], [], []
    for score, name, (i, j) in ranked:
        views = _prepare_views(sources[name], data, rules)
        out = scorer.score_pairs(views, [(i, j)], return_maps=True)
        v1.append(views[i]), v2.append(views[j])
        maps.append(out.score_maps[0]), masks.append(out.masks[0])
        scores.append(out.scores[0]), titles.append(f"{name[:20]} {i}->{j}")
    fig = plot_pair_maps(torch.stack(v1), torch.stack(v2), torch.stack(maps), torch.stack(masks), torch.tensor(scores), titles=titles)
    fig.savefig(out_dir / "worst_pairs.png", dpi=100)


def run(cfg: Any) -> dict[str, Any] | None:
    """Evaluate with a composed config (``DictConfig`` or plain dict); returns the summary on rank 0."""
    conf = _plain(cfg) if not isinstance(cfg, dict) else cfg
    data, metric, runtime, output = conf["data"], conf["metric"], conf["runtime"], conf["output"]
    if data.get("path") in (None, "", "???"):
        raise SystemExit("met3r-eval: set data.path=... (a folder of sequences, a video, or a .pt/.npz file)")
    if runtime["precision"] not in PRECISIONS:
        raise SystemExit(f"met3r-eval: runtime.precision must be one of {PRECISIONS}")
    threads = torch.get_num_threads()
    if runtime.get("num_threads"):
        torch.set_num_threads(int(runtime["num_threads"]))
    try:
        return _run(conf, data, metric, runtime, output)
    finally:
        torch.set_num_threads(threads)  # no lasting side effect when called in-process


def _run(conf: dict[str, Any], data: dict[str, Any], metric: dict[str, Any], runtime: dict[str, Any],
         output: dict[str, Any]) -> dict[str, Any] | None:
    t_start = time.time()

    info = mdist.setup(runtime["device"], runtime["backend"], float(runtime["dist_timeout_min"]))
    out_dir = Path(str(output["dir"])).expanduser()
    try:
        sources = mio.discover_sequences(str(data["path"]), tensor_key=data.get("tensor_key"))
        scorer = PairBatchScorer(
            str(metric["variant"]), metric_overrides(metric), info.device, runtime["precision"], int(runtime["batch_size"])
        )
        rules = _size_rules(scorer.settings)
        # batch_size is a memory knob of the metric (numbers do not depend on it): not part of
        # what a resumed run must match.
        fingerprint = {
            "variant": scorer.variant,
            "metric": {k: ([o for o in v if o != "batch_size"] if k == "overrides" else v)
                       for k, v in scorer.settings.items() if k != "batch_size"},
            "protocol": {"pairing": metric["pairing"], "pair_gap": metric["pair_gap"], "aggregation": "mean over sequences of per-sequence mean over pairs"},
            "data": _data_settings(data),
            "precision": runtime["precision"],
        }

        # Phase 1 (before the barrier): rank 0 owns the shared files, each rank its own file.
        own_file = out_dir / ("sequences.jsonl" if info.world_size == 1 else mdist.rank_file_name(info.rank))
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            if output["overwrite"]:
                _clear_results(out_dir)
            _check_settings(out_dir, fingerprint, is_main=True)
            res.repair_jsonl(out_dir / "sequences.jsonl")
            from omegaconf import OmegaConf

            res.atomic_write_text(out_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(conf)))
        mdist.barrier(info)
        if not info.is_main:
            _check_settings(out_dir, fingerprint, is_main=False)
        res.repair_jsonl(own_file)
        mdist.barrier(info)  # every file repaired before anyone reads them all

        # Phase 2: the same todo list on every rank, then this rank's round-robin share.
        previous = _read_all_records(out_dir)
        retry = bool(runtime["retry_errors"])
        done = {r["sequence"] for r in previous if r.get("status") == "ok" or not retry}
        todo = [s for s in sources if s.name not in done]
        mine = mdist.shard(todo, info.rank, info.world_size)
        if info.is_main:
            log.info("%d sequences: %d done before, %d to do over %d process(es)", len(sources), len(sources) - len(todo), len(todo), info.world_size)

        show = bool(runtime["progress"]) and info.is_main
        seq_bar = _tqdm(not show, total=len(mine), desc="sequences", unit="seq", position=0)
        pair_bar = _tqdm(not show, total=0, desc="pairs", unit="pair", position=1, leave=False)
        sleep_s = float(os.environ.get(_SLEEP_ENV, "0") or 0)
        if mine:
            # Build the networks now: missing weights are fatal (one clear message naming
            # met3r-download), not an error recorded against every sequence.
            from met3r_metrics.weights import WeightsNotFoundError

            try:
                scorer.scorer  # noqa: B018
            except WeightsNotFoundError as err:
                raise SystemExit(f"met3r-eval: {err}") from None
        for source in mine:
            try:
                record = _evaluate_sequence(source, data, metric, scorer, rules, pair_bar)
            except Exception as err:  # noqa: BLE001 - one bad input must not end the run
                hint = " (lower runtime.batch_size)" if isinstance(err, torch.cuda.OutOfMemoryError) else ""
                record = {"sequence": source.name, "status": "error", "kind": source.kind, "path": source.path,
                          "error": f"{type(err).__name__}: {err}{hint}"}
                log.warning("skipping %s: %s", source.name, record["error"])
            res.append_jsonl(own_file, record)
            if seq_bar is not None:
                seq_bar.update(1)
            if sleep_s:
                time.sleep(sleep_s)
        for bar in (pair_bar, seq_bar):
            if bar is not None:
                bar.close()

        mdist.barrier(info)  # all shards finished
        if not info.is_main:
            return None
        return _finalize(out_dir, sources, conf, fingerprint, scorer, info, rules, t_start)
    finally:
        mdist.teardown(info)


def _finalize(
    out_dir: Path, sources: list[mio.SequenceSource], conf: dict[str, Any], fingerprint: dict[str, Any],
    scorer: PairBatchScorer, info: mdist.DistInfo, rules: dict[str, int], t_start: float,
) -> dict[str, Any]:
    """Rank 0: merge every rank's records into sequences.jsonl, then derive the other outputs."""
    output = conf["output"]
    merged = res.merge_records(_read_all_records(out_dir), [s.name for s in sources])
    # Atomic rewrite first, then drop the rank files: a crash in between loses nothing.
    res.atomic_write_text(out_dir / "sequences.jsonl", "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in merged))
    for path in out_dir.glob("sequences.rank*.jsonl"):
        path.unlink()
    res.atomic_write_text(out_dir / "pairs.csv", res.pairs_csv_text(merged))
    summary = res.summarize(merged)
    summary.update({
        "variant": fingerprint["variant"],
        "protocol": fingerprint["protocol"],
        "settings": fingerprint["metric"],
        "data": fingerprint["data"],
        "runtime": {"precision": conf["runtime"]["precision"], "batch_size": conf["runtime"]["batch_size"]},
        "package_version": _package_version(),
        "torch_version": torch.__version__,
    })
    res.atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    res.atomic_write_text(out_dir / "run_info.json", json.dumps({
        "world_size": info.world_size, "backend": info.backend, "device": str(info.device),
        "seconds": round(time.time() - t_start, 3), "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "argv": sys.argv,
    }, indent=2) + "\n")
    if output["plots"]:
        protocol = fingerprint["protocol"]
        _write_plots(out_dir, merged, int(output["max_curves"]), str(protocol["pairing"]), int(protocol["pair_gap"]))
    if int(output["worst_pairs"]) > 0:
        try:
            _write_worst_pairs(out_dir, merged, {s.name: s for s in sources}, conf["data"], scorer, int(output["worst_pairs"]), rules)
        except ImportError as err:
            log.warning("worst-pair maps skipped: %s", err)
    _report(summary, out_dir)
    return summary


def _report(summary: dict[str, Any], out_dir: Path) -> None:
    m, ci = summary["met3r"], summary["met3r_ci95"]
    head = "no sequence could be scored" if m is None else f"MEt3R ({summary['variant']}) = {m:.5f}"
    if ci:
        head += f"  (95% CI {ci[0]:.5f} .. {ci[1]:.5f})"
    print(
        f"{head}\n  {summary['num_sequences_scored']} sequences, {summary['num_pairs_scored']} pairs scored, "
        f"{summary['num_zero_overlap_pairs']} pairs without overlap, {summary['num_errors']} errors\n  results: {out_dir}",
        flush=True,
    )


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("met3r_stem"):
        # Default output dir named after the data, so that re-running the same command resumes.
        OmegaConf.register_new_resolver(
            "met3r_stem", lambda p: (Path(str(p)).expanduser().resolve().name or "data") if p not in (None, "", "???") else "data"
        )


CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: list[str] | None = None) -> Any:
    """The config ``met3r-eval <overrides>`` would run with, for in-process use (tests, notebooks)."""
    from hydra import compose, initialize_config_dir

    _register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


def main() -> None:
    """Console entry point (``met3r-eval``): hydra parses ``key=value`` overrides."""
    try:
        import hydra
    except ImportError as err:  # pragma: no cover
        raise SystemExit("met3r-eval needs hydra: pip install 'met3r-metrics[cli]'") from err
    _register_resolvers()

    # Absolute path: works the same for the console script, python -m and torchrun (a relative
    # path would be resolved as the module "met3r_metrics.cli.conf", which is not a package).
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _app(cfg: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="[met3r-eval] %(message)s")
        summary = run(cfg)
        if summary is not None and summary["num_sequences"] == 0 and summary["num_errors"] > 0:
            raise SystemExit(f"met3r-eval: every sequence failed; first error: {summary['errors'][0]['error']}")

    _app()


if __name__ == "__main__":
    main()
