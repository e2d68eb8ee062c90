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
    .partial/         the windows of pairs of a sequence in progress (cli/partial.py)
    .met3r_results    the marker: a results folder, never read as data (an existing folder holding
                      files we did not write is refused: cli/output_dir.py)
    report.html       one self-contained page: headline + CI, sortable sequence table, charts, worst pairs

Re-running with the same ``output.dir`` resumes: finished sequences are skipped, a sequence in progress
continues after its last finished window of pairs; results of other settings or other weights (the
networks' state-dict digests, weights/identity.py) are never reused.  Under
``torchrun --nproc_per_node=N`` sequences are sharded over ranks and rank 0 merges.

Examples::

    met3r-eval data.path=/data/generated_videos
    met3r-eval data.path=samples.pt metric=paper metric.precision=bf16 metric.batch_size=16
    torchrun --nproc_per_node=8 -m met3r_metrics.cli.evaluate data.path=/data/seqs output.dir=out
"""

from __future__ import annotations

import copy
import functools
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
from met3r_metrics.cli import config as mconf
from met3r_metrics.cli import distributed as mdist
from met3r_metrics.cli import results as res
from met3r_metrics.cli.fingerprint import (  # noqa: F401 - default_output_dir, weights_identity: public here too
    AGGREGATION, _check_settings, _fingerprint, default_output_dir, weights_identity,
)
from met3r_metrics.cli.output_dir import prepare_output_dir
from met3r_metrics.cli.partial import PARTIAL_DIR, SequenceCheckpoint, partial_path
from met3r_metrics.cli.run_outputs import _report, _write_plots, _write_worst_pairs
from met3r_metrics.cli.scoring import finite_mean, score_sequence
from met3r_metrics.settings import Settings

log = logging.getLogger("met3r_eval")

# Internal: seconds to sleep after each sequence (lets the kill/resume test stop a run mid-way).
_SLEEP_ENV = "_MET3R_EVAL_SLEEP_AFTER_SEQUENCE"
def _package_version() -> str:
    from met3r_metrics import __version__

    return __version__


def _plain(cfg: Any) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if cfg is not None else None


def _all_record_files(out_dir: Path) -> list[Path]:
    return [out_dir / "sequences.jsonl", *sorted(out_dir.glob("sequences.rank*.jsonl"), key=lambda p: mio.natural_key(p.name))]


def _read_all_records(out_dir: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for path in _all_record_files(out_dir):
        records.extend(res.read_jsonl(path))
    return records


def _clear_results(out_dir: Path) -> None:
    names = ["sequences.jsonl", "pairs.csv", "summary.json", "settings.json", "run_info.json",
             "sequence_curves.png", "histogram.png", "worst_pairs.png", "report.html"]
    for name in names:
        (out_dir / name).unlink(missing_ok=True)
    for path in out_dir.glob("sequences.rank*.jsonl"):
        path.unlink()
    for path in (out_dir / PARTIAL_DIR).glob("*.jsonl"):
        path.unlink()


def _preparer(data: dict[str, Any], settings: Settings) -> Any:
    """``source -> PreparedViews``: frame selection, the value range, an explicit resize or the size
    check (the settings' frame-size rule), and the input fingerprint. Picklable, for DataLoader workers."""
    return functools.partial(
        mio.prepare_views,
        frame_stride=int(data["frame_stride"]), start=int(data["start"]), max_frames=data["max_frames"],
        resize=data["resize"], resize_filter=str(data["resize_filter"]),
        # the settings' frame-size rule (RAFT needs 128 px and multiples of 8, the ViTs 16-px patches)
        multiple=settings.size_rule[1], height_multiple=settings.size_rule[0], min_side=settings.size_rule[2],
        fingerprint_mode=str(data["fingerprint"]), geometry=data.get("geometry"),
        intrinsics_units=str(data.get("intrinsics", "pixels")),
    )


def _evaluate_sequence(
    source: mio.SequenceSource,
    prepared: mio.PreparedViews,
    settings: Settings,
    scorer: Any,
    pair_bar: Any,
    checkpoint_key: dict[str, Any] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """One prepared sequence -> its record (status ok), or raise (the caller records the error).

    With ``checkpoint_key`` (the run's settings fingerprint) each window of pairs is appended to the
    sequence's partial file in ``out_dir`` as it is scored, and the windows of an interrupted run with the
    same key (same settings, weights, frames and pairs) are taken from it instead of being scored again."""
    t0 = time.perf_counter()
    views = prepared.views  # (V, 3, H, W) float32 in [0, 1]
    pairs = settings.pairs(views.shape[0])
    if not pairs:
        raise ValueError(
            f"too short: {views.shape[0]} frame(s) after frame selection, need at least {settings.pair_gap + 1}"
        )
    if pair_bar is not None:
        pair_bar.reset(total=len(pairs))
        pair_bar.set_description(source.name[:30])
    checkpoint = done = None
    if checkpoint_key is not None and out_dir is not None:
        checkpoint = SequenceCheckpoint(out_dir, source.name, {"run": checkpoint_key, "inputs": prepared.record(),
                                                               "frame_indices": prepared.frame_indices, "pairs": pairs})
        done = checkpoint.load(len(pairs))
        if checkpoint.stale:
            log.info("%s: a partial result of other inputs, settings or weights was dropped", source.name)
        elif done is not None:
            log.info("%s: resuming after %d of %d pairs scored before", source.name, len(done.scores), len(pairs))
    out = score_sequence(views, pairs, settings, scorer, normalize=True, progress=pair_bar, geometry=prepared.geometry,
                         done=done, on_window=checkpoint.append if checkpoint is not None else None)
    nan_to_none = lambda v: v if math.isfinite(v) else None  # noqa: E731 - JSON has no NaN
    return {
        "sequence": source.name,
        "status": "ok",
        "kind": source.kind,
        "path": source.path,
        "num_frames": int(views.shape[0]),
        "frame_indices": list(prepared.frame_indices),  # stored frame numbers of the pairs' indices
        "height": int(views.shape[-2]),
        "width": int(views.shape[-1]),
        "score": finite_mean(out.scores),
        "num_zero_overlap": sum(not math.isfinite(s) for s in out.scores),
        "pairs": [list(p) for p in pairs],
        "pair_scores": [nan_to_none(s) for s in out.scores],
        "overlap": [nan_to_none(o) for o in out.overlap],
        "batch_size": settings.batch_size,
        **prepared.record(),  # fingerprint, value_range, num_frames_stored, input_sizes, resized (+ video counts)
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _error_record(source: mio.SequenceSource, error: str) -> dict[str, Any]:
    return {"sequence": source.name, "status": "error", "kind": source.kind, "path": source.path, "error": error}


def _unchanged(record: dict[str, Any], source: mio.SequenceSource, mode: str, geometry: str | None = None) -> bool:
    """Whether a finished record's inputs (frames and, with data.geometry, the geometry file) are still what it
    was computed from (their fingerprints)."""
    try:
        if geometry is not None and record.get("geometry_fingerprint") != mio.geometry_fingerprint(source, geometry, mode):
            return False
        return record.get("fingerprint") == source.fingerprint(mode)
    except (OSError, ValueError):  # unreadable now: recompute, which records the error
        return False


def _tqdm(disable: bool, **kwargs: Any) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress bars are optional
        return None
    return tqdm(disable=disable, dynamic_ncols=True, **kwargs)


def run(cfg: Any) -> dict[str, Any] | None:
    """Evaluate with a composed config (``DictConfig`` or plain dict); returns the summary on rank 0.

    Raises:
        SystemExit: an invalid setting (the message names it; nothing was read or written), missing
            weights, or an output dir holding results of other settings.
    """
    conf = copy.deepcopy(_plain(cfg) if not isinstance(cfg, dict) else cfg)
    try:
        settings = mconf.validate(conf)  # every setting, before any data is read
    except mconf.ConfigError as err:
        raise SystemExit(f"met3r-eval: {err}") from None
    threads = torch.get_num_threads()
    if conf["runtime"].get("num_threads"):
        torch.set_num_threads(int(conf["runtime"]["num_threads"]))
    try:
        return _run(conf, settings)
    finally:
        torch.set_num_threads(threads)  # no lasting side effect when called in-process


def _run(conf: dict[str, Any], settings: Settings) -> dict[str, Any] | None:
    t_start = time.time()
    data, runtime, output = conf["data"], conf["runtime"], conf["output"]
    info = mdist.setup(runtime["device"], runtime["backend"], float(runtime["dist_timeout_min"]))
    out_dir: Path | None = None
    num_sources: int | None = None  # for the Ctrl-C line
    try:
        try:
            sources = mio.discover_sequences(str(data["path"]), tensor_key=data.get("tensor_key"),
                                             value_range=str(data["value_range"]))
        except (OSError, ValueError, KeyError) as err:
            raise SystemExit(f"met3r-eval: {err}" if str(err).startswith("data.path: ") else f"met3r-eval: data.path: {err}") from None
        num_sources = len(sources)
        prepare = _preparer(data, settings)
        if output.get("dir") is not None and not output["overwrite"] and mio.is_results_folder(Path(str(output["dir"])).expanduser()):
            # other settings are refused before any weights are loaded; the weights are compared once built
            _check_settings(Path(str(output["dir"])).expanduser(), _fingerprint(settings, data), False, ignore=("weights",))
        # The networks first (before any bar is drawn or file written): missing weights end the run here, and
        # the weights' identity is part of what a result depends on (resume never keeps scores of other weights).
        scorer = _build_scorer(settings, info.device)
        weights = weights_identity(scorer)
        if output.get("dir") is None:
            output["dir"] = str(default_output_dir(settings, data, weights))
        out_dir = Path(str(output["dir"])).expanduser()
        fingerprint = _fingerprint(settings, data, weights)

        # Phase 1 (before the barrier): rank 0 owns the shared files, each rank its own file.
        own_file = out_dir / ("sequences.jsonl" if info.world_size == 1 else mdist.rank_file_name(info.rank))
        if info.is_main:
            prepare_output_dir(out_dir, bool(output["overwrite"]))
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
        # A finished record is kept only while its inputs are unchanged (fingerprint); regenerated
        # samples in the same folder are recomputed, never reported with their old scores.
        previous = res.merge_records(_read_all_records(out_dir), [s.name for s in sources])
        by_name = {r["sequence"]: r for r in previous}
        retry, mode = bool(runtime["retry_errors"]), str(data["fingerprint"])
        todo, changed = [], []
        for source in sources:
            rec = by_name.get(source.name)
            if rec is None or (rec.get("status") != "ok" and retry):
                todo.append(source)
            elif rec.get("status") == "ok" and not _unchanged(rec, source, mode, data.get("geometry")):
                todo.append(source)
                changed.append(source.name)
        mine = mdist.shard(todo, info.rank, info.world_size)
        if info.is_main:
            log.info("%d sequences: %d done before, %d to do (%d of them because their inputs changed) over %d process(es)",
                     len(sources), len(sources) - len(todo), len(todo), len(changed), info.world_size)

        show = bool(runtime["progress"]) and info.is_main
        seq_bar = _tqdm(not show, total=len(mine), desc="sequences", unit="seq", position=0)
        pair_bar = _tqdm(not show, total=0, desc="pairs", unit="pair", position=1, leave=False)
        sleep_s = float(os.environ.get(_SLEEP_ENV, "0") or 0)
        workers = _num_workers(runtime, info.device)
        # decoding runs in DataLoader workers (in order) while this process scores
        for source, prepared in mio.iter_prepared(mine, prepare, num_workers=workers):
            if isinstance(prepared, mio.SequenceError):
                record = _error_record(source, str(prepared))
            else:
                try:
                    record = _evaluate_sequence(source, prepared, settings, scorer, pair_bar,
                                                checkpoint_key=fingerprint, out_dir=out_dir)
                except Exception as err:  # noqa: BLE001 - one bad input must not end the run
                    hint = " (lower metric.batch_size)" if isinstance(err, torch.cuda.OutOfMemoryError) else ""
                    record = _error_record(source, f"{type(err).__name__}: {err}{hint}")
            if record["status"] != "ok":
                log.warning("skipping %s: %s", source.name, record["error"])
            res.append_jsonl(own_file, record)
            if record["status"] == "ok":
                partial_path(out_dir, source.name).unlink(missing_ok=True)  # the record holds every pair now
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
        return _finalize(out_dir, sources, conf, settings, fingerprint, info, t_start, prepare, changed, scorer)
    except KeyboardInterrupt:
        raise EvalInterrupted(_interrupted_message(out_dir, num_sources)) from None
    finally:
        mdist.teardown(info)


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``message`` says what was kept and that re-running the same command resumes."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _interrupted_message(out_dir: Path | None, num_sources: int | None) -> str:
    """One line for Ctrl-C: how many sequences (and pairs of the one in progress) the results folder keeps."""
    if out_dir is None or not out_dir.is_dir():
        return "met3r-eval: interrupted before any result was written"
    kept = len({r["sequence"] for r in _read_all_records(out_dir) if r.get("status") == "ok"})
    pairs = sum(max(0, len(res.read_jsonl(p)) - 1) for p in (out_dir / PARTIAL_DIR).glob("*.jsonl"))
    total = f" of {num_sources}" if num_sources is not None else ""
    partial = f" (+ {pairs} window(s) of pairs of a sequence in progress)" if pairs else ""
    return (f"met3r-eval: interrupted: {kept}{total} sequences kept in {out_dir}{partial}; "
            "re-run the same command to resume")


def _num_workers(runtime: dict[str, Any], device: torch.device) -> int:
    """runtime.num_workers, or by default 2 decoding workers next to a GPU (none on CPU, where the
    scoring itself uses the cores)."""
    if runtime.get("num_workers") is not None:
        return int(runtime["num_workers"])
    return 2 if device.type == "cuda" else 0


def _build_scorer(settings: Settings, device: torch.device) -> Any:
    """The frozen networks, built now: missing weights are fatal (one clear message naming
    met3r-download and the settings that point at local files), not an error per sequence."""
    from met3r_metrics.scorer import get_scorer
    from met3r_metrics.weights import WeightsNotFoundError

    try:
        return get_scorer(settings, device)
    except WeightsNotFoundError as err:
        raise SystemExit(
            f"met3r-eval: {err} (or point metric.backbone_weights= / metric.feature_weights= at local files)"
        ) from None
    except ValueError as err:  # settings the loaded networks contradict (e.g. backbone vs backbone_weights)
        raise SystemExit(f"met3r-eval: metric.{err}") from None


def _finalize(
    out_dir: Path, sources: list[mio.SequenceSource], conf: dict[str, Any], settings: Settings,
    fingerprint: dict[str, Any], info: mdist.DistInfo, t_start: float, prepare: Any, changed: list[str],
    scorer: Any = None,
) -> dict[str, Any]:
    """Rank 0: merge every rank's records into sequences.jsonl, then derive the other outputs."""
    output = conf["output"]
    # the records of this data: sequences removed from the folder since an earlier run are left out
    names = {s.name for s in sources}
    merged = res.merge_records(_read_all_records(out_dir), [s.name for s in sources], latest=changed)
    merged = [r for r in merged if r["sequence"] in names]
    # Atomic rewrite first, then drop the rank files: a crash in between loses nothing.
    res.atomic_write_text(out_dir / "sequences.jsonl", "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in merged))
    for path in out_dir.glob("sequences.rank*.jsonl"):
        path.unlink()
    res.atomic_write_text(out_dir / "pairs.csv", res.pairs_csv_text(merged))
    summary = res.summarize(merged)
    summary.update({
        "variant": settings.variant,
        "aggregation": AGGREGATION,
        "settings": settings.to_dict(),
        "weights": fingerprint.get("weights", {}),  # SHA-256 of each network's state dict (weights.identity)
        "batch_sizes_used": sorted({int(r["batch_size"]) for r in merged if "batch_size" in r}),
        "data": {**fingerprint["data"], "fingerprint": conf["data"]["fingerprint"], **_value_range_decision(sources)},
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
        _write_plots(out_dir, merged, int(output["max_curves"]), settings)
    if int(output["worst_pairs"]) > 0:
        try:
            scorer = scorer if scorer is not None else _build_scorer(settings, info.device)
            _write_worst_pairs(out_dir, merged, {s.name: s for s in sources}, prepare, settings, scorer, int(output["worst_pairs"]))
        except ImportError as err:
            log.warning("worst-pair maps skipped: %s", err)
    if output.get("report", True):
        _write_html_report(out_dir, merged, summary, sources, prepare, settings, info, output)
    _report(summary, out_dir)
    return summary


def _write_html_report(
    out_dir: Path, merged: list[dict[str, Any]], summary: dict[str, Any], sources: list[mio.SequenceSource],
    prepare: Any, settings: Settings, info: mdist.DistInfo, output: dict[str, Any],
) -> None:
    """report.html (rank 0, after the summary): rewritten at the end of every run and resume."""
    from met3r_metrics.report import write_run_report

    by_name = {s.name: s for s in sources}

    def views_of(name: str) -> Any:
        prepared = prepare(by_name[name])
        return prepared.views, prepared.geometry

    k = int(output.get("report_pairs", 0))
    scorer = _build_scorer(settings, info.device) if k and summary["num_pairs_scored"] else None
    write_run_report(out_dir, summary, merged, settings=settings, views_of=views_of, scorer=scorer, worst_pairs=k,
                     max_curves=int(output["max_curves"]))


def _value_range_decision(sources: list[mio.SequenceSource]) -> dict[str, Any]:
    """How a tensor file's values were read (decided once per file, at discovery)."""
    tensor = [s for s in sources if s.kind == "tensor"]
    if not tensor:
        return {}
    return {"value_range_resolved": {"value_range": tensor[0].value_range, "reason": tensor[0].value_range_reason}}


CONF_DIR = Path(__file__).resolve().parent / "conf"


def compose_config(overrides: list[str] | None = None) -> Any:
    """The config ``met3r-eval <overrides>`` would run with, for in-process use (tests, notebooks)."""
    from hydra import compose, initialize_config_dir

    mconf.register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


def main() -> None:
    """Console entry point (``met3r-eval``): hydra parses ``key=value`` overrides.

    Exit status: 0 when at least one sequence got a score; 1 when the run finished without any score
    (every sequence failed or had no overlap); 2 for any problem of the command (one line naming the key:
    an invalid or unknown setting, output.dir, missing weights/data); 130 on Ctrl-C (one line: what was kept).
    """
    try:
        import hydra
    except ImportError as err:  # pragma: no cover
        raise SystemExit("met3r-eval needs hydra: pip install 'met3r-metrics[cli]'") from err
    mconf.register_configs()
    _check_command_line(sys.argv[1:])

    # Absolute path: works the same for the console script, python -m and torchrun (a relative
    # path would be resolved as the module "met3r_metrics.cli.conf", which is not a package).
    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
    def _app(cfg: Any) -> None:
        logging.basicConfig(level=logging.INFO, format="[met3r-eval] %(message)s")
        try:
            summary = run(cfg)
        except SystemExit as err:
            if isinstance(err.code, str):
                print(err.code, file=sys.stderr, flush=True)
                raise SystemExit(2) from None
            raise
        if summary is not None and summary["num_sequences_scored"] == 0:
            first = f"; first error: {summary['errors'][0]['error']}" if summary["errors"] else ""
            print(f"met3r-eval: no sequence got a score ({summary['num_errors']} failed, "
                  f"{summary['num_sequences_without_score']} without overlap){first}", file=sys.stderr, flush=True)
            raise SystemExit(1)

    try:
        _app()
    except KeyboardInterrupt as err:  # Ctrl-C: one line (what was kept, how to resume), not a traceback
        message = err.message if isinstance(err, EvalInterrupted) else "met3r-eval: interrupted"
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(130) from None


def _check_command_line(argv: list[str]) -> None:
    """Unknown keys, unparsable or mistyped values: one line naming the key, exit status 2 (before hydra)."""
    from met3r_metrics.cli.overrides import override_error

    problem = override_error(argv, compose_config)
    if problem is not None:
        print(problem, file=sys.stderr, flush=True)
        raise SystemExit(2)


if __name__ == "__main__":
    main()
