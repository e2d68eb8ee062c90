"""met3r_metrics.cli.results / distributed: crash-safe appends, merge, statistics, sharding."""

import json
import math

import pytest

from met3r_metrics.cli import distributed as mdist
from met3r_metrics.cli import results as res


def test_append_repair_and_tolerant_read(tmp_path):
    path = tmp_path / "s.jsonl"
    res.append_jsonl(path, {"sequence": "a", "status": "ok"})
    res.append_jsonl(path, {"sequence": "b", "status": "ok"})
    with open(path, "ab") as fh:  # what a writer killed mid-line leaves behind
        fh.write(b'{"sequence":"c","sta')
    assert [r["sequence"] for r in res.read_jsonl(path)] == ["a", "b"]
    assert res.repair_jsonl(path) == len(b'{"sequence":"c","sta')
    assert path.read_bytes().endswith(b"}\n")
    res.append_jsonl(path, {"sequence": "c", "status": "ok"})
    assert [r["sequence"] for r in res.read_jsonl(path)] == ["a", "b", "c"]
    assert res.repair_jsonl(path) == 0


def test_merge_prefers_ok_and_keeps_order():
    recs = [
        {"sequence": "b", "status": "error", "error": "x"},
        {"sequence": "a", "status": "ok", "v": 1},
        {"sequence": "b", "status": "ok", "v": 2},
        {"sequence": "a", "status": "error", "error": "later failure does not replace a result"},
        {"sequence": "zz", "status": "ok"},
    ]
    merged = res.merge_records(recs, ["a", "b"])
    assert [(r["sequence"], r["status"]) for r in merged] == [("a", "ok"), ("b", "ok"), ("zz", "ok")]


def _rec(name, scores):
    return {"sequence": name, "status": "ok", "pairs": [[k, k + 1] for k in range(len(scores))],
            "pair_scores": scores, "overlap": [0.5] * len(scores),
            "score": (sum(s for s in scores if s is not None) / max(1, sum(s is not None for s in scores)))
            if any(s is not None for s in scores) else None}


def test_summary_statistics():
    recs = [_rec("a", [0.1, 0.3]), _rec("b", [0.4, None, 0.4]), _rec("c", [None]),
            {"sequence": "d", "status": "error", "error": "too short"}]
    s = res.summarize(recs)
    assert math.isclose(s["met3r"], (0.2 + 0.4) / 2)  # mean of per-sequence means
    assert math.isclose(s["pair_mean"], (0.1 + 0.3 + 0.4 + 0.4) / 4)
    assert s["num_zero_overlap_pairs"] == 2 and s["num_pairs"] == 6 and s["num_pairs_scored"] == 4
    assert s["num_sequences"] == 3 and s["num_sequences_scored"] == 2 and s["num_sequences_without_score"] == 1
    assert s["num_errors"] == 1 and s["errors"][0]["sequence"] == "d"
    std = math.sqrt(((0.2 - 0.3) ** 2 + (0.4 - 0.3) ** 2) / 1)
    assert math.isclose(s["met3r_std"], std)
    lo, hi = s["met3r_ci95"]  # bootstrap of two values: within [0.2, 0.4], around the mean
    assert 0.2 <= lo < 0.3 < hi <= 0.4 and "bootstrap" in s["ci95_method"]
    json.dumps(s)  # plain JSON
    csv = res.pairs_csv_text(recs)
    assert csv.splitlines()[0] == "sequence,i,j,score,overlap,frame_i,frame_j"
    assert "b,1,2,nan,0.5,," in csv and len(csv.splitlines()) == 1 + 6


def test_ci_respects_the_range_and_is_reproducible():
    """Small positive scores with one outlier: a Student-t interval goes below 0 (a MEt3R mean cannot)."""
    values = [0.001] * 9 + [0.5]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 9)
    assert mean - 2.262 * std / math.sqrt(10) < 0  # what the old interval reported
    lo, hi = res.bootstrap_ci95(values)
    assert 0.001 <= lo <= mean <= hi <= 0.5
    assert res.bootstrap_ci95(values) == [lo, hi]  # fixed seed: identical in every process
    assert res.bootstrap_ci95([0.3]) is None
    many = [0.01 * (k % 7) for k in range(5000)]  # chunked resampling for large runs
    lo, hi = res.bootstrap_ci95(many)
    assert lo < sum(many) / len(many) < hi and hi - lo < 0.002


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ci_is_the_exact_bootstrap_quantiles_of_a_two_valued_sample(seed):
    """Five values a and five b: a bootstrap mean is a + (b - a) X / 10 with X ~ Binomial(10, 1/2) exactly, whose
    2.5 % / 97.5 % quantiles are X = 2 and X = 8 (CDF 0.011 / 0.055 and 0.945 / 0.989 around them: with 2000
    resamples the empirical quantiles land on those atoms, 6 standard errors away from the neighbours)."""
    from math import comb

    cdf = [sum(comb(10, k) for k in range(x + 1)) / 2**10 for x in range(11)]
    assert cdf[1] < 0.02 and cdf[2] > 0.05 and cdf[7] < 0.95 and cdf[8] > 0.98  # the atoms named above
    a, b = 0.01, 0.05
    lo, hi = res.bootstrap_ci95([a] * 5 + [b] * 5, seed=seed)
    assert lo == pytest.approx(a + (b - a) * 2 / 10, abs=1e-12)
    assert hi == pytest.approx(a + (b - a) * 8 / 10, abs=1e-12)


def test_ci_matches_a_slow_reference_bootstrap():
    """Against a plain-Python percentile bootstrap (20000 resamples) of 50 skewed values, and normal theory."""
    import random

    rng = random.Random(7)
    values = [rng.expovariate(1 / 0.03) for _ in range(50)]
    n, mean = len(values), sum(values) / len(values)
    sem = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)
    ref_rng = random.Random(11)
    means = sorted(sum(ref_rng.choice(values) for _ in range(n)) / n for _ in range(20000))
    ref_lo, ref_hi = means[int(0.025 * 20000)], means[int(0.975 * 20000)]
    lo, hi = res.bootstrap_ci95(values)
    # Monte Carlo error of a 2.5 % quantile of 2000 resamples: ~0.06 sem; allow 0.35 sem (~5 of its sd)
    assert abs(lo - ref_lo) < 0.35 * sem and abs(hi - ref_hi) < 0.35 * sem, (lo, hi, ref_lo, ref_hi, sem)
    assert (hi - lo) == pytest.approx(2 * 1.96 * sem, rel=0.15)  # normal theory for the width, n = 50


def test_shard_round_robin_covers_everything():
    items = list(range(7))
    shards = [mdist.shard(items, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    info = mdist.setup("cpu")
    assert info.world_size == 1 and info.rank == 0 and not info.distributed


def test_precision_pins_tf32_only_for_the_call_and_only_on_cuda():
    """The scorer's precision context restores the global switches; on CPU it touches nothing."""
    import torch

    from met3r_metrics.scorer import precision_context

    before = torch.backends.cuda.matmul.allow_tf32
    with precision_context("bf16", torch.device("cpu")):
        assert torch.backends.cuda.matmul.allow_tf32 == before
    assert torch.backends.cuda.matmul.allow_tf32 == before
