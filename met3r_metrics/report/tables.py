"""The comparison table as Markdown, CSV and LaTeX (booktabs), plus the footnote that says how it was made."""

from __future__ import annotations

import csv
import io
from typing import Any

from .comparison import Comparison
from .run_page import score_name

__all__ = ["table_rows", "markdown_table", "csv_table", "latex_table", "footnote", "COLUMNS"]

COLUMNS = ["method", "mean", "ci_low", "ci_high", "sequences", "lacking", "diff_vs_reference", "diff_ci_low",
           "diff_ci_high", "common_sequences"]


def table_rows(c: Comparison) -> list[dict[str, Any]]:
    """One dict per method (COLUMNS); the reference's difference columns are None."""
    paired = {p.name: p for p in c.paired}
    rows = []
    for m in c.methods:
        p = paired.get(m.name)
        rows.append({"method": m.name, "mean": m.interval.mean, "ci_low": m.interval.low, "ci_high": m.interval.high,
                     "sequences": m.interval.n, "lacking": m.lacking,
                     "diff_vs_reference": p.interval.mean if p else None, "diff_ci_low": p.interval.low if p else None,
                     "diff_ci_high": p.interval.high if p else None, "common_sequences": p.interval.n if p else None})
    return rows


def footnote(c: Comparison) -> str:
    """How the numbers were made (resamples, seed, what the paired interval means), one paragraph."""
    ref = c.methods[0].name
    text = (f"{score_name(c.distance)}. Mean over each method's scored sequences, {c.level:.0%} percentile bootstrap "
            f"interval ({c.resamples} resamples, torch.Generator seed {c.seed}). Difference: method minus {ref} on "
            f"the sequences both scored (matched by name), with a paired bootstrap interval (sequences resampled "
            f"with both scores, same resamples and seed); an interval that excludes 0 means the methods differ "
            f"beyond resampling noise. 'lacking': sequences scored by another method but not by this one "
            f"(of {c.num_sequences}).")
    if c.differences:
        keys = ", ".join(k for k, _ in c.differences)
        text += f" WARNING: compared with allow_different_settings=true although these settings differ: {keys}."
    return text


def _f(x: Any, digits: int = 4) -> str:
    return "" if x is None else (str(x) if isinstance(x, int) else f"{x:.{digits}f}")


def _ci(lo: Any, hi: Any) -> str:
    return "" if lo is None else f"[{lo:.4f}, {hi:.4f}]"


def _signed(x: Any) -> str:
    return "" if x is None else f"{x:+.4f}"


def markdown_table(c: Comparison) -> str:
    """compare.md: the table and its footnote."""
    ref = c.methods[0].name
    lines = [f"| method | mean | 95% CI | sequences | lacking | difference vs {ref} | 95% paired CI | common |",
             "|---|---:|---|---:|---:|---:|---|---:|"]
    for r in table_rows(c):
        lines.append(f"| {r['method'].replace('|', '/')} | {_f(r['mean'])} | {_ci(r['ci_low'], r['ci_high'])} | "
                     f"{r['sequences']} | {r['lacking']} | {_signed(r['diff_vs_reference'])} | "
                     f"{_ci(r['diff_ci_low'], r['diff_ci_high'])} | {_f(r['common_sequences'])} |")
    return "\n".join(lines) + "\n\n" + footnote(c) + "\n"


def csv_table(c: Comparison) -> str:
    """compare.csv: full-precision values (empty = not applicable), each row with the reference, resamples,
    seed and level that made it."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS + ["reference", "resamples", "seed", "level"])
    for r in table_rows(c):
        w.writerow(["" if r[k] is None else (repr(r[k]) if isinstance(r[k], float) else r[k]) for k in COLUMNS]
                   + [c.methods[0].name, c.resamples, c.seed, c.level])
    return buf.getvalue()


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in text)


def latex_table(c: Comparison) -> str:
    """compare.tex: a booktabs tabular to paste into a paper (\\usepackage{booktabs})."""
    arrow = r"$\uparrow$" if c.higher_is_better else r"$\downarrow$"
    ref = tex_escape(c.methods[0].name)
    out = [f"% {footnote(c)}".replace("\n", " "), r"\begin{tabular}{lrlrr}", r"\toprule",
           f"Method & MEt3R {arrow} & 95\\% CI & $\\Delta$ vs {ref} & 95\\% paired CI \\\\", r"\midrule"]
    for r in table_rows(c):
        ci = "" if r["ci_low"] is None else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
        dci = "" if r["diff_ci_low"] is None else f"[{r['diff_ci_low']:+.4f}, {r['diff_ci_high']:+.4f}]"
        diff = "--" if r["diff_vs_reference"] is None else f"${r['diff_vs_reference']:+.4f}$"
        out.append(f"{tex_escape(r['method'])} & {_f(r['mean'])} & {ci} & {diff} & {dci} \\\\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"
