"""Run every benchmark and print one table of figures.

    python benchmarks/run.py [--quick] [--json FILE] [--only NAME,...] [--python PY]

Each script of ``SCRIPTS`` runs in its own process (so Ray start-ups, thread settings and peak
memory do not leak between them) with ``--json``, and its figures are gathered: a JSON list of
``{"name", "value", "unit", "target", "met"}`` (benchmarks/report.py). ``--quick`` passes
``--quick`` to each: a reduced version of every measurement, a few minutes in all. A script
that fails is listed with its exit status and the end of its output; the others still run.
docs/performance.md records the latest figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import figure, table, write_json  # benchmarks/ is on sys.path: scripts run from it

HERE = Path(__file__).resolve().parent
# what each script measures (issue 6's targets), in the order they run
SCRIPTS = {
    "train_step": "RiSe vs ERM step; loader vs step",
    "data_io": "synthetic generation; cache read vs JPEG decode (all cores)",
    "ddp": "2 gloo workers vs 1 process: loss curve, throughput",
    "memory": "peak RSS of a training process per backbone",
    "orchestration": "sweep vs plain loop overhead; trial start latency",
    "tables": "analysis tables from a 1M-row results store",
    "search_efficiency": "TPE+ASHA vs full grid over the two loss weights",
}


def run_script(name: str, quick: bool, python: str) -> tuple[list[dict], float]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [python, str(HERE / f"{name}.py"), "--json", str(out)] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        p = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        sys.stdout.write(p.stdout[-4000:])
        if p.returncode != 0 or not out.exists():
            tail = (p.stderr.strip().splitlines() or ["no output"])[-1][:300]
            print(f"{name}: FAILED (exit {p.returncode}): {tail}", flush=True)
            return [figure(f"{name}_failed", float(p.returncode), "exit", "== 0", False, note=tail)], wall
        return json.loads(out.read_text()), wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a reduced version of each, minutes in all")
    ap.add_argument("--json", help="write every figure as one JSON list")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(SCRIPTS)}")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the scripts")
    args = ap.parse_args()
    names = args.only.split(",") if args.only else list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {', '.join(SCRIPTS)}")
    figures = []
    for name in names:
        print(f"\n== {name}: {SCRIPTS[name]}", flush=True)
        got, wall = run_script(name, args.quick, args.python)
        for f in got:
            f["script"] = name
        figures += got
        print(f"({name}: {wall:.0f} s)", flush=True)
    print(f"\n{platform.node()}: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, python {platform.python_version()}"
          f"{', --quick' if args.quick else ''}")
    print(table(figures))
    if args.json:
        write_json(figures, args.json)
    return 0 if all(f["met"] for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
