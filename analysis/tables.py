"""The results table: methods as rows, protocols plus Avg as columns, mean +- std over seeds.

Conventions:

* Value: the target test metric in percent at the epoch the selection rule picks, under the
  threshold rule (``analysis.runs``); mean +- sample std (ddof=1) over seeds, 2 decimals; a
  single seed shows no std. Avg: each seed's mean over the protocols (seeds with an ok run on
  every protocol only), then mean +- std over those seeds.
* Rows: erm, asyirm, mmsd, rise, then any other method; published rows last, never bold.
* Bold: the best mean per column among our rows at the printed precision (ties all bold):
  lowest for HTER, highest for AUC and TPR@FPR=1%.
* (k/N): only k of the N seeds of the table have an ok run in this cell. "—": none. A letter
  points to a note counting the cell's failed, diverged, running and missing runs.
* Dagger: RiSe's gain over ERM in that column is not significant (``analysis.stats``: one-sided
  exact sign-flip test, p >= 0.05) or cannot be tested (no paired ERM runs).
* Stores: made for ablation stores (one setting per method). On a sweep store (many settings
  per method) a row is the method's setting with the most ok runs, then the lowest mean
  source-val HTER, and the caption says how many settings there were.
"""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field

import numpy as np

from analysis import published as published_mod
from analysis import runs as runs_mod
from analysis.runs import AVG
from analysis.stats import ALPHA, PairedTest, paired_test
from rise_dist.metrics import AUC, HTER, ORACLE, SOURCE_VAL, TEST_EER, TPR_AT_FPR_1PCT, VAL_THRESHOLD

FORMATS = ("md", "latex", "csv", "html")
LOWER_IS_BETTER = {HTER: True, AUC: False, TPR_AT_FPR_1PCT: False}
METRIC_LABEL = {HTER: "HTER", AUC: "AUC", TPR_AT_FPR_1PCT: "TPR@FPR=1%"}
METHOD_LABEL = {"erm": "ERM", "asyirm": "AsyIRM", "mmsd": "MMSD", "rise": "RiSe"}
SELECTION_TEXT = {SOURCE_VAL: "source_val (lowest sources' validation HTER)",
                  ORACLE: "oracle (lowest target test HTER: an upper bound, not deployable)"}
THRESHOLD_TEXT = {TEST_EER: "test_eer (EER threshold of the target's own test scores)",
                  VAL_THRESHOLD: "val_threshold (sources' validation EER threshold on the target)"}
DIGITS = 2
DAGGER = "†"
DASH = "—"


@dataclass
class Entry:
    mean: float = math.nan
    std: float = math.nan
    n: int = 0
    expected: int = 0
    bold: bool = False
    dagger: bool = False
    note: str = ""  # footnote letter

    @property
    def empty(self) -> bool:
        return self.n == 0 or not math.isfinite(self.mean)


@dataclass
class Row:
    label: str
    method: str
    entries: list[Entry]
    published: bool = False
    source: str = ""


@dataclass
class Table:
    metric: str
    selection: str
    threshold_rule: str
    columns: list[str]
    rows: list[Row]
    caption: str
    notes: list[str] = field(default_factory=list)
    tests: dict[str, PairedTest] = field(default_factory=dict)
    seeds: list = field(default_factory=list)


def build(results_dir, selection: str = SOURCE_VAL, metric: str = HTER, threshold_rule: str = TEST_EER,
          published: bool = False) -> Table:
    runs = runs_mod.load_runs(results_dir, selection, threshold_rule, metric)
    return from_runs(runs, selection, metric, threshold_rule, published)


def from_runs(runs, selection: str, metric: str, threshold_rule: str, published: bool = False) -> Table:
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"unknown metric {metric!r}; one of {sorted(LOWER_IS_BETTER)}")
    g = runs_mod.grid(runs)
    columns = [*g.protocols, AVG]
    notes, rows, letters = [], [], iter("abcdefghijklmnopqrstuvwxyz")
    for m in g.methods:
        entries = []
        for col in columns:
            c = g.cells[m, col]
            e = Entry(c.mean, c.std, c.n, c.expected)
            bad = {k: v for k, v in c.counts.items() if v}
            if bad:
                e.note = next(letters, "*")
                what = ", ".join(f"{v} {k}" for k, v in bad.items())
                notes.append(f"{e.note}: {METHOD_LABEL.get(m, m)} on {col}: {what} "
                             f"(of {c.expected} seed(s)); not in the mean.")
            entries.append(e)
        rows.append(Row(METHOD_LABEL.get(m, m), m, entries))

    _bold(rows, metric)
    tests = _daggers(g, rows, columns, metric)
    for col, t in tests.items():
        if t.n:
            notes.append(f"Paired test RiSe vs ERM on {col}: {t.n} pair(s), mean gain "
                         f"{t.mean_gain:+.2f} points, t = {_t(t.t)}, p = {t.p:.3g}.")
    n_seeds = len(g.seeds)
    parts = [f"Target test {METRIC_LABEL[metric]} (%), mean ± std over {n_seeds} seed(s) "
             f"({', '.join(map(str, g.seeds))}).",
             f"Epoch selection: {SELECTION_TEXT[selection]}.",
             f"Threshold: {THRESHOLD_TEXT[threshold_rule]}.",
             f"Bold: best of our rows per column ({'lower' if LOWER_IS_BETTER[metric] else 'higher'} "
             "is better). (k/N): k of N seeds ok; —: no ok run; letters: see notes.",
             f"{DAGGER}: RiSe's gain over ERM not significant (one-sided exact sign-flip test "
             f"over seeds paired by seed and protocol, p ≥ {ALPHA}; Avg pairs every (seed, protocol)) "
             "or not testable."]
    multi = {m: k for m, k in g.settings_per_method.items() if k > 1}
    if multi:
        parts.append("Several settings per method in this store (a sweep): each row is the method's "
                     "setting with the most ok runs, then the lowest mean source-val HTER ("
                     + ", ".join(f"{METHOD_LABEL.get(m, m)}: best of {k}" for m, k in multi.items()) + ").")
    if g.duplicates:
        notes.append(f"{g.duplicates} run(s) repeating a (method, protocol, seed) of the same setting "
                     "were set aside (one run per seed kept, an ok one first).")
    if published:
        _published_rows(rows, notes, parts, metric, g)
    return Table(metric, selection, threshold_rule, columns, rows, " ".join(parts), notes, tests, g.seeds)


def _t(t: float) -> str:
    return f"{t:.2f}" if math.isfinite(t) else "n/a (no spread)"


def _bold(rows: list[Row], metric: str) -> None:
    for j in range(len(rows[0].entries) if rows else 0):
        vals = [round(r.entries[j].mean, DIGITS) for r in rows if not r.entries[j].empty]
        if not vals:
            continue
        best = min(vals) if LOWER_IS_BETTER[metric] else max(vals)
        for r in rows:
            e = r.entries[j]
            e.bold = not e.empty and round(e.mean, DIGITS) == best


def _daggers(g, rows: list[Row], columns: list[str], metric: str) -> dict[str, PairedTest]:
    if "rise" not in g.methods:
        return {}
    rise_row = next(r for r in rows if r.method == "rise")
    tests = {}
    for j, col in enumerate(columns):
        rise, erm = runs_mod.pairs(g, "rise", "erm", col) if "erm" in g.methods else (np.zeros(0), np.zeros(0))
        gains = (erm - rise) if LOWER_IS_BETTER[metric] else (rise - erm)
        t = paired_test(gains)
        tests[col] = t
        e = rise_row.entries[j]
        e.dagger = not e.empty and not t.significant
    return tests


def _published_rows(rows, notes, parts, metric, g) -> None:
    pub = published_mod.rows(metric, g.protocols)
    if not pub:
        notes.append(f"No published {METRIC_LABEL[metric]} numbers for these protocols in "
                     "analysis/published.csv.")
        return
    for p in pub:
        entries = [Entry(p.values.get(col, math.nan), n=1 if col in p.values else 0, expected=1)
                   for col in [*g.protocols, AVG]]
        rows.append(Row(f"{p.method} (published, real benchmark: {p.source})", p.method, entries,
                        published=True, source=p.source))
        for ref in p.references:
            note = f"{p.method}, {p.source}: {ref}."
            if note not in notes:
                notes.append(note)
    if g.data == "synthetic":
        parts.append("Published rows: numbers papers report on the real benchmark (CASIA-CeFA, "
                     "PADISI-Face, CASIA-SURF, WMCA); this store is the synthetic benchmark, so they "
                     "are context, not comparable with our rows, and never bold.")
    else:
        parts.append("Published rows: the papers' own numbers with their own models and training, "
                     "not re-run here; never bold.")


# -- rendering --------------------------------------------------------------------------------

def _number(e: Entry) -> str:
    s = f"{e.mean:.{DIGITS}f}"
    if math.isfinite(e.std):
        s += f" ± {e.std:.{DIGITS}f}"
    return s


def _count(e: Entry) -> str:
    return f" ({e.n}/{e.expected})" if 0 < e.n < e.expected else ""


def cell_text(e: Entry, fmt: str) -> str:
    if fmt == "latex":
        if e.empty:
            body = "---"
        else:
            body = _number(e).replace("±", "$\\pm$")
            body = f"\\textbf{{{body}}}" if e.bold else body
            body += "$^\\dagger$" if e.dagger else ""
        body += _count(e) + (f"$^{{{e.note}}}$" if e.note else "")
        return body
    if fmt == "html":
        if e.empty:
            body = DASH
        else:
            body = html.escape(_number(e))
            body = f"<b>{body}</b>" if e.bold else body
            body += DAGGER if e.dagger else ""
        return body + _count(e) + (f"<sup>{e.note}</sup>" if e.note else "")
    body = DASH if e.empty else (f"**{_number(e)}**" if e.bold else _number(e)) + (DAGGER if e.dagger else "")
    return body + _count(e) + (f" [{e.note}]" if e.note else "")


_LATEX = {"_": "\\_", "%": "\\%", "&": "\\&", "±": "$\\pm$", "†": "$^\\dagger$", "≥": "$\\geq$",
          "—": "---"}


def _latex(s: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in s)


def render(t: Table, fmt: str = "md") -> str:
    if fmt == "md":
        lines = [f"**Table.** {t.caption}", "", "| Method | " + " | ".join(t.columns) + " |",
                 "|---|" + "---:|" * len(t.columns)]
        lines += [f"| {r.label} | " + " | ".join(cell_text(e, "md") for e in r.entries) + " |" for r in t.rows]
        return "\n".join(lines + ([""] + t.notes if t.notes else [])) + "\n"
    if fmt == "latex":
        lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_latex(t.caption)}}}",
                 "\\begin{tabular}{l" + "c" * len(t.columns) + "}", "\\toprule",
                 "Method & " + " & ".join(_latex(c) for c in t.columns) + " \\\\", "\\midrule"]
        for i, r in enumerate(t.rows):
            if r.published and (i == 0 or not t.rows[i - 1].published):
                lines.append("\\midrule")
            cells = " & ".join(cell_text(e, "latex") for e in r.entries)
            lines.append(f"{_latex(r.label)} & {cells} \\\\")
        lines += ["\\bottomrule", "\\end{tabular}"]
        if t.notes:
            lines += ["\\par\\footnotesize"] + [_latex(n) + "\\\\" for n in t.notes]
        return "\n".join(lines + ["\\end{table}"]) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["method", "label", "column", "metric", "selection", "threshold_rule", "mean", "std",
                    "n", "expected", "bold", "dagger", "p_value", "note", "published", "source"])
        for r in t.rows:
            for col, e in zip(t.columns, r.entries, strict=True):
                p = t.tests.get(col).p if (r.method == "rise" and not r.published and col in t.tests) else ""
                w.writerow([r.method, r.label, col, t.metric, t.selection, t.threshold_rule,
                            "" if e.empty else round(e.mean, 6),
                            round(e.std, 6) if math.isfinite(e.std) else "",
                            e.n, e.expected, int(e.bold), int(e.dagger), p, e.note, int(r.published), r.source])
        return buf.getvalue()
    if fmt == "html":
        head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
        body = "".join(
            ("<tr class=\"published\">" if r.published else "<tr>")
            + f"<th scope=\"row\">{html.escape(r.label)}</th>"
            + "".join(f"<td>{cell_text(e, 'html')}</td>" for e in r.entries) + "</tr>" for r in t.rows)
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in t.notes)
        return (f"<table class=\"results\"><caption>{html.escape(t.caption)}</caption>"
                f"<thead><tr><th>Method</th>{head}</tr></thead><tbody>{body}</tbody></table>"
                + (f"<ul class=\"notes\">{notes}</ul>" if notes else ""))
    raise ValueError(f"unknown format {fmt!r}; one of {FORMATS}")
