"""Turn ``results/gpu_bench.json`` (from :mod:`benchmarks.gpu_bench`) into the markdown tables of ``gpu_bench.md``.

    python benchmarks/gpu_report.py benchmarks/results/gpu_bench.json > benchmarks/gpu_bench.md
"""

from __future__ import annotations

import json
import sys

# Official pipeline on one H100 (torch 2.11, TF32 on), from the issue that asked for this benchmark.
OFFICIAL = {(256, 16): 16.1, (256, 1): 5.9, (512, 4): 1.9}
TARGETS = {  # official variant, one H100
    ("tf32", 256, 16): 250.0,
    ("bf16", 256, 16): 400.0,
    ("tf32", 512, 16): 60.0,
}


def fmt(x: float, nd: int = 1) -> str:
    return f"{x:.{nd}f}"


def main(path: str) -> None:
    r = json.load(open(path))
    out = [f"# GPU benchmark: {r['device']}, torch {r['torch']}", ""]
    c = r.get("ceilings", {})
    if c:
        out += [f"Measured ceilings (8192^3 matmul): bf16 {fmt(c['bf16_tflops'])} TFLOP/s, TF32 {fmt(c['tf32_tflops'])}, "
                f"strict fp32 {fmt(c['fp32_tflops'])}.", ""]
    if "flops_per_pair" in r:
        f = r["flops_per_pair"]
        fl = r.get("floor_ms_per_pair_bf16", {})
        ft = r.get("floor_ms_per_pair_tf32", {})
        out += ["| backbone FLOPs per pair (MASt3R, encoder x2 + decoder + heads) | GFLOP | floor bf16 ms | floor TF32 ms |",
                "|---|---|---|---|"]
        for s in f:
            out.append(f"| {s}x{s} | {f[s] / 1e9:.0f} | {fl.get(s, float('nan')):.2f} | {ft.get(s, float('nan')):.2f} |")
        out.append("")
    if "e2e" in r:
        base = {(b["size"], b["batch"]): b for b in r.get("baseline", [])}
        out += ["## End to end (score_sequences on B pairs, synthetic geometry after the real backbone)", "",
                "| variant | size | batch | chunk | mode | pairs/s | ms/pair | peak GiB | vs official H100 | vs same-run baseline | target |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in r["e2e"]:
            key = (e["size"], e["batch"])
            off = OFFICIAL.get(key) if e["variant"] == "official" else None
            b = base.get(key) if e["variant"] == "official" and e["geometry"] == "synthetic" else None
            tgt = TARGETS.get((e["mode"], e["size"], e["batch"])) if e["variant"] == "official" else None
            if e["size"] == 512 and e["mode"] == "tf32" and e["variant"] == "official":
                tgt = TARGETS[("tf32", 512, 16)]
            geo = "" if e["geometry"] == "synthetic" else " (random geometry)"
            verdict = ""
            if tgt:
                ok = e["pairs_per_s"] >= tgt
                verdict = f">= {fmt(tgt, 0)} " + ("met" if ok else f"missed ({fmt(e['pairs_per_s'] / tgt * 100, 0)}% of it)")
            out.append(
                f"| {e['variant']}{geo} | {e['size']} | {e['batch']} | {e.get('chunk', '')} | {e['mode']} | {fmt(e['pairs_per_s'])} | {fmt(e['ms_per_pair'], 2)} "
                f"| {fmt(e['peak_gib'], 2)} | {fmt(e['pairs_per_s'] / off) + 'x' if off else ''} "
                f"| {fmt(e['pairs_per_s'] / b['pairs_per_s']) + 'x' if b else ''} "
                f"| {verdict} |"
            )
        out.append("")
    if "baseline" in r:
        out += ["## Same-run baseline: the official pipeline's structure (per-pair recomputation, naive rasterizer in torch, TF32)", "",
                "| size | batch | pairs/s | ms/pair | peak GiB | official code on H100 (issue) |", "|---|---|---|---|---|---|"]
        for b in r["baseline"]:
            off = OFFICIAL.get((b["size"], b["batch"]))
            out.append(f"| {b['size']} | {b['batch']} | {fmt(b['pairs_per_s'], 2)} | {fmt(b['ms_per_pair'], 1)} | {fmt(b['peak_gib'], 2)} | {off or ''} |")
        out.append("")
    if "stages" in r:
        names = list(r["stages"][0]["ms_per_pair"])
        out += ["## Stages (ms per pair, official variant, synthetic geometry for focal/splat/composite/score)", "",
                "| size | batch | mode | " + " | ".join(names) + " | sum |", "|---|---|---|" + "---|" * (len(names) + 1)]
        for s in r["stages"]:
            out.append(f"| {s['size']} | {s['batch']} | {s['mode']} | " + " | ".join(fmt(s["ms_per_pair"][n], 2) for n in names)
                       + f" | {fmt(s['sum_ms_per_pair'], 2)} |")
        out.append("")
    if "sequence" in r:
        out += ["## Sequences (consecutive pairs, 256x256, official variant, library-default chunks of 8 pairs)", "",
                "| frames | mode | pairs/s | seconds | peak GiB | peak above inputs+weights GiB | baseline s | speedup |",
                "|---|---|---|---|---|---|---|---|"]
        for s in r["sequence"]:
            out.append(f"| {s['frames']} | {s['mode']} | {fmt(s['pairs_per_s'])} | {fmt(s['seconds'], 2)} | {fmt(s['peak_gib'], 2)} "
                       f"| {fmt(s['peak_above_inputs_and_weights_gib'], 2)} | {fmt(s['baseline_seconds'], 2) if 'baseline_seconds' in s else ''} "
                       f"| {fmt(s['speedup']) + 'x' if 'speedup' in s else ''} |")
        out.append("")
    if "compiled" in r:
        out += ["## Opt-in `met3r_metrics.compile.compile_networks` (torch.compile of the transformer blocks)", "",
                "| size | batch | mode | pairs/s | ms/pair | peak GiB | first call s | max abs score diff vs uncompiled |",
                "|---|---|---|---|---|---|---|---|"]
        for c in r["compiled"]:
            out.append(f"| {c['size']} | {c['batch']} | {c['mode']} | {fmt(c['pairs_per_s'])} | {fmt(c['ms_per_pair'], 2)} "
                       f"| {fmt(c['peak_gib'], 2)} | {fmt(c['first_call_s'])} | {c['max_abs_diff_vs_uncompiled']:.1e} |")
        out.append("")
    if "accuracy_golden" in r or "accuracy_random" in r:
        out += ["## Accuracy of the fast modes", "", "| what | mode | max abs score diff |", "|---|---|---|"]
        for a in r.get("accuracy_golden", []):
            out.append(f"| golden `{a['case']}` vs official CPU fp32 | {a['mode']} | {a['max_abs_diff']:.2e} |")
        for a in r.get("accuracy_random", []):
            d = "n/a (no overlap)" if a["max_abs_diff"] is None else f"{a['max_abs_diff']:.2e}"
            out.append(f"| full-size random nets, {a['geometry']} geometry, vs fp32 on GPU ({a['valid_pairs']} pairs) | {a['mode']} | {d} |")
        out.append("")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
