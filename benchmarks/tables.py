"""Tables from a million-row results store: ``python -m analysis tables`` on 2 cores in <= 3 s.

    python benchmarks/tables.py [--quick] [--keep DIR]

Writes a store of 1,000,000 rows (``--quick``: 100,000) with the columns real runs write (every
flattened config field, the 18 metric columns, losses, provenance JSON): 200 files of 5,000 rows,
each file 100 runs x 50 epochs (a real run writes one file per run; fewer, larger files keep the
write side of this benchmark short, the rows read are the same). Methods erm/asyirm/mmsd/rise x
the four leave-one-out protocols x 3 seeds x many settings, some runs failed. Then times, in this
process, what the command does: ``analysis.tables.build`` (which reads only the columns it needs)
and rendering the Markdown table. Prints e.g. ``tables_1m_rows_s 1.84 s (target <= 3 s) met``.
``measure(quick)`` returns the same as ``[{"name", "value", "unit", "target", "met"}]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

from analysis import tables
from rise_dist import results
from rise_dist.data.protocols import LEAVE_ONE_OUT
from rise_dist.metrics import METRICS

TARGET_S = 3.0
FILES, RUNS_PER_FILE, EPOCHS = 200, 100, 50
METHODS = {"erm": (0.0, 0.0), "asyirm": (0.3, 0.0), "mmsd": (0.0, 0.7), "rise": (0.3, 0.7)}
CONFIG = {"data": "synthetic", "epochs": EPOCHS, "batch_size": 96, "weight_decay": 1e-4, "optimizer": "adamw",
          "schedule": "cosine", "video_average": False, "amp": True, "model.backbone": "cnn",
          "model.feature_dim": 128, "model.pretrained": None, "model.vit_frozen_blocks": 8,
          "model.adapter_dim": 64, "model.missing": "zero_input", "model.dropout": 0.1, "asyirm.tau": 1.0,
          "asyirm.margin": 1.0, "asyirm.irm_weight": 1.0, "asyirm.warmup_epochs": 2,
          "asyirm.spread_weight": 0.1, "asyirm.domain_head_weight": 0.1, "asyirm.per_modality": True,
          "mmsd.variant": "slot", "mmsd.temperature": 0.1, "mmsd.label_weight": 1.0, "synthetic.seed": 0,
          "synthetic.size": "[32, 32]", "synthetic.n_train": 1200, "synthetic.n_val": 400,
          "synthetic.n_test": 800, "synthetic.frames_per_video": 4, "synthetic.live_fraction": 0.3,
          "synthetic.asymmetry": 1.0, "synthetic.camera_shift": 1.0, "synthetic.spurious": 0.7,
          "synthetic.intrinsic": 1.0, "code_version": "0.1.0+gbench",
          "environment": json.dumps({"python": "3.11", "numpy": "2", "torch": "2.13", "ray": "2.60"})}


def write_store(root: Path, files: int) -> int:
    rng = np.random.default_rng(0)
    n = RUNS_PER_FILE * EPOCHS
    epoch = np.tile(np.arange(1, EPOCHS + 1), RUNS_PER_FILE)
    for f in range(files):
        run = np.repeat(np.arange(RUNS_PER_FILE), EPOCHS)
        g = f * RUNS_PER_FILE + run  # global run number
        method = np.array(list(METHODS))[g % 4]
        protocol = np.array(LEAVE_ONE_OUT)[(g // 4) % 4]
        seed = (g // 16) % 3
        setting = g // 48  # 48 runs (4 methods x 4 protocols x 3 seeds) per setting
        la = np.array([w[0] for w in METHODS.values()])[g % 4] * (1 + setting % 7)
        lm = np.array([w[1] for w in METHODS.values()])[g % 4] * (1 + setting % 5)
        run_id = np.char.add(np.char.add(protocol, "-"),
                             np.char.add(method, np.char.add("-s", seed.astype(str))))
        run_id = np.char.add(run_id, np.char.add("-", g.astype(str)))
        df = pd.DataFrame({"run_id": run_id, "trial_id": np.char.add("t", setting.astype(str)),
                           "protocol": protocol, "method": method, "seed": seed, **CONFIG,
                           "lr": 1e-3, "lambda_asyirm": la, "lambda_mmsd": lm, "epoch": epoch})
        for split, suffix in (("val", ""), ("test", ""), ("test", "@val_threshold")):
            for m in METRICS:
                df[f"{split}_{m}{suffix}"] = rng.uniform(0.05, 0.5, n)
        for k in ("loss/ce", "loss/asyirm", "loss/mmsd", "loss/total", "epoch_seconds"):
            df[k] = rng.uniform(0, 2, n)
        df["config"] = json.dumps({"note": "the full config as JSON", **CONFIG})
        df["status"] = np.where(g % 97 == 0, "failed", "completed")
        df["status_reason"] = np.where(g % 97 == 0, "worker died", "")
        path = results.run_path(root, f"part{f:04d}")
        path.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(path, index=False)
    return files * n


def measure(quick: bool = False, keep: Path | None = None) -> list[dict]:
    files = FILES // 10 if quick else FILES
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep or tmp)
        rows = write_store(root, files)
        t0, c0 = time.perf_counter(), time.process_time()
        table = tables.build(root)
        text = tables.render(table, "md")
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert "RiSe" in text and len(table.rows) == 4
    name = "tables_100k_rows_s" if quick else "tables_1m_rows_s"
    return [figure(name, round(seconds, 2), "s", f"<= {TARGET_S:g}", seconds <= TARGET_S, rows=rows,
                   cpu_s=round(cpu, 2))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100,000 rows instead of 1,000,000")
    ap.add_argument("--keep", type=Path, help="write the store here and keep it")
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    figures = measure(args.quick, args.keep)
    if args.json:
        write_json(figures, args.json)
    for m in figures:
        print(f"{m['name']} {m['value']:.2f} {m['unit']} (target {m['target']}) "
              f"{'met' if m['met'] else 'NOT met'}  [{m['rows']:,} rows; {m['value'] / TARGET_S:.2f} of the "
              f"target; process CPU {m['cpu_s']:.2f} s: wall time counts other load on the machine]")


if __name__ == "__main__":
    main()
