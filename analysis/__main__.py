"""``python -m analysis tables|figures|report``: the results store to tables, figures, a page.

    python -m analysis tables  --results DIR [--format md|latex|csv] [--selection source_val|oracle]
                               [--metric hter|auc|tpr_at_fpr_1pct] [--threshold test_eer|val_threshold]
                               [--published]
    python -m analysis figures --results DIR --out FIGDIR [--selection ...] [--threshold ...]
    python -m analysis report  --results DIR --out FILE.html [--figures FIGDIR] [--published]

Exit status 2 for a results directory that does not exist or holds no run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rise_dist.metrics import AUC, HTER, SELECTION_RULES, SOURCE_VAL, TEST_EER, THRESHOLD_RULES, TPR_AT_FPR_1PCT


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", required=True, type=Path, help="results directory (searched recursively)")
    p.add_argument("--selection", choices=SELECTION_RULES, default=SOURCE_VAL)
    p.add_argument("--threshold", choices=THRESHOLD_RULES, default=TEST_EER)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tables", help="the methods x protocols table")
    _common(t)
    t.add_argument("--format", choices=("md", "latex", "csv"), default="md")
    t.add_argument("--metric", choices=(HTER, AUC, TPR_AT_FPR_1PCT), default=HTER)
    t.add_argument("--published", action="store_true", help="append published real-benchmark rows")
    f = sub.add_parser("figures", help="PNG and PDF figures")
    _common(f)
    f.add_argument("--out", required=True, type=Path)
    r = sub.add_parser("report", help="one self-contained HTML page")
    _common(r)
    r.add_argument("--out", required=True, type=Path)
    r.add_argument("--published", action="store_true")
    args = ap.parse_args(argv)

    if not args.results.is_dir():
        print(f"results directory {args.results} does not exist", file=sys.stderr)
        return 2
    if args.command == "tables":
        from analysis import tables
        table = tables.build(args.results, args.selection, args.metric, args.threshold, args.published)
        if not table.rows:
            print(f"no runs under {args.results}", file=sys.stderr)
            return 2
        sys.stdout.write(tables.render(table, args.format))
    elif args.command == "figures":
        from analysis import figures
        made = figures.make_all(args.results, args.out, args.selection, args.threshold)
        for m in made:
            print(f"wrote   {m.name}: {', '.join(str(p) for p in m.paths)}" if m.paths
                  else f"skipped {m.name}: {m.reason}")
    else:
        from analysis import report
        path = report.write(args.results, args.out, args.selection, args.threshold, args.published)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
