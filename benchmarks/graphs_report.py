"""Three-process summary of the ``graphs`` section of :mod:`benchmarks.gpu_bench`: markdown table + PNG.

    python benchmarks/graphs_report.py benchmarks/results/gpu_bench_graphs_final_h200.json \
        --png benchmarks/results/graphs_three_processes.png > table.md

The JSON holds ``{"processes": {"p1": <gpu_bench.json>, ...}}``: one fresh process per entry. Each row of
the table is one configuration: min / median / max pairs/s over the processes, eager and with CUDA
graphs, the spread (max / min - 1), the peak memory and the score deviations.
"""

from __future__ import annotations

import argparse
import json
import statistics


def rows(doc: dict) -> list[dict]:
    runs = [p["graphs"] for p in doc["processes"].values()]
    out = []
    for i, first in enumerate(runs[0]):
        same = [r[i] for r in runs]
        row = {k: first[k] for k in ("size", "batch", "mode", "chunk")}
        for tag in ("eager", "graphs"):
            v = sorted(r[tag]["pairs_per_s"] for r in same)
            row[tag] = (v[0], statistics.median(v), v[-1])
            row[f"{tag}_ms"] = statistics.median(r[tag]["ms_per_call"] for r in same)
        row["peak_gib"] = max(r["graphs"]["peak_gib"] for r in same)
        row["graphs_vs_eager"] = max(r["graphs_vs_eager_max_abs_diff"] for r in same)
        row["vs_fp32"] = max(r["graphs"]["max_abs_diff_vs_exact_fp32"] for r in same)
        out.append(row)
    return out


def table(rs: list[dict]) -> str:
    head = ("| size | pairs per call | chunk | precision | eager pairs/s min / median / max | graphs pairs/s min / median / max "
            "| graphs spread | graphs ms per call (median) | peak GiB | graphs vs eager | vs exact fp32 |")
    lines = [head, "| " + " | ".join("---" for _ in range(11)) + " |"]
    for r in rs:
        e, g = r["eager"], r["graphs"]
        lines.append(
            f"| {r['size']} | {r['batch']} | {r['chunk']} | {r['mode']} | {e[0]:.1f} / {e[1]:.1f} / {e[2]:.1f} | "
            f"{g[0]:.1f} / {g[1]:.1f} / {g[2]:.1f} | {100 * (g[2] / g[0] - 1):.0f} % | {r['graphs_ms']:.1f} | "
            f"{r['peak_gib']:.2f} | {r['graphs_vs_eager']:.1e} | {r['vs_fp32']:.1e} |"
        )
    return "\n".join(lines)


def plot(rs: list[dict], path: str, device: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['size']}px, {r['batch']} pair{'s' if r['batch'] > 1 else ''}\nchunk {r['chunk']}, {r['mode']}" for r in rs]
    x = range(len(rs))
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for off, tag, color in ((-0.2, "eager", "#9aa5b1"), (0.2, "graphs", "#1f6feb")):
        med = [r[tag][1] for r in rs]
        err = [[r[tag][1] - r[tag][0] for r in rs], [r[tag][2] - r[tag][1] for r in rs]]
        ax.bar([i + off for i in x], med, 0.4, yerr=err, capsize=3, color=color,
               label=f"{'CUDA graphs (default)' if tag == 'graphs' else 'eager'}: median, min-max of 3 processes")
    ax.set_xticks(list(x), labels, fontsize=8)
    ax.set_ylabel("pairs / s")
    ax.set_title(f"MEt3R official variant on one {device}: eager vs CUDA-graph replay")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("json")
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    doc = json.load(open(args.json))
    rs = rows(doc)
    print(table(rs))
    if args.png:
        plot(rs, args.png, doc.get("device", "GPU"))


if __name__ == "__main__":
    main()
