"""One self-contained HTML page for a results directory: a header (store path, runs, statuses,
code versions seen), the HTER and AUC tables as real ``<table>`` elements (best cells bold),
and every figure ``analysis.figures`` can draw, embedded as base64 PNG. No external file,
script or style sheet: the page opens offline, from anywhere.
"""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from analysis import figures, tables
from analysis import runs as runs_mod
from rise_dist.metrics import AUC, HTER, SOURCE_VAL, TEST_EER

CSS = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table.results { border-collapse: collapse; margin: 1em 0; }
table.results caption { caption-side: top; text-align: left; font-size: 0.9em; margin-bottom: 0.5em; }
table.results th, table.results td { border-bottom: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
table.results th[scope=row] { text-align: left; }
tr.published { color: #666; font-style: italic; }
ul.notes { font-size: 0.85em; color: #444; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
"""


def header(results_dir) -> str:
    df = runs_mod.read(results_dir, ["run_id", "epoch", "status", "code_version"])
    last = df.sort_values("epoch").groupby("run_id").tail(1) if len(df) else df
    statuses = last["status"].value_counts().to_dict() if len(last) else {}
    versions = sorted(str(v) for v in df["code_version"].dropna().unique()) if len(df) else []
    items = [("results store", str(Path(results_dir).resolve())), ("runs", str(len(last))),
             ("rows (run x epoch)", str(len(df))),
             ("statuses", ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items())) or "none"),
             ("code versions", ", ".join(versions) or "not recorded")]
    return "<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items) + "</dl>"


def write(results_dir, out, selection: str = SOURCE_VAL, threshold_rule: str = TEST_EER,
          published: bool = False, figures_dir=None) -> Path:
    out = Path(out)
    parts = [f"<h1>rise-dist results: {html.escape(Path(results_dir).name)}</h1>", header(results_dir)]
    for metric in (HTER, AUC):
        t = tables.build(results_dir, selection, metric, threshold_rule, published)
        parts.append(f"<h2>{tables.METRIC_LABEL[metric]}</h2>")
        parts.append(tables.render(t, "html") if t.rows else "<p>No runs.</p>")
    with tempfile.TemporaryDirectory() as tmp:
        made = figures.make_all(results_dir, figures_dir or tmp, selection, threshold_rule)
        parts.append("<h2>Figures</h2>")
        for m in made:
            png = next((p for p in m.paths if p.suffix == ".png"), None)
            if png is None:
                why = f"{html.escape(m.name)}: not drawn ({html.escape(m.reason)})"
                parts.append(f"<p class=\"skipped\">{why}</p>")
                continue
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            parts.append(f"<figure><img alt=\"{html.escape(m.name)}\" src=\"data:image/png;base64,{data}\">"
                         f"<figcaption>{html.escape(m.name)}</figcaption></figure>")
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>rise-dist results</title><style>{CSS}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
