"""Orchestration overhead and trial start latency of a local sweep, both sides in this one run.

    python benchmarks/orchestration.py [--quick] [--trials K] [--json FILE]

- Overhead: the wall time of a local sweep of K short trials (embedded Ray started and shut
  down inside the timing, Optuna proposing, one trial at a time, no ASHA) against the same K
  trials (the configs the sweep ran, read back from its results store) run by the plain loop
  one after another in this process. Both sides train with one thread. Target: <= 1.15x for
  trials of about 30 s.
- Trial start latency: from Tune's launch of a trial (its ``on_trial_start`` callback event) to
  its first training step (the ``epoch_started_at`` of its first epoch in the results store);
  the median over trials. Trials reuse their actor (``reuse_actors``), so only the first pays
  for a new worker process.

The synthetic data is generated once before either side is timed.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

# Trials of about 30 s on one core: one protocol, 4 epochs of a 400-per-domain benchmark.
FULL = {"synthetic": {"n_train": 400, "n_val": 150, "n_test": 150}, "epochs": 4, "trials": 4}
QUICK = {"synthetic": {"n_train": 160, "n_val": 60, "n_test": 60}, "epochs": 2, "trials": 3}
PROTOCOLS = ["CPS_W"]
TARGET = 1.15


def _launch_recorder():
    from ray.tune import Callback

    class LaunchTimes(Callback):
        """Wall-clock time at which Tune starts each trial (its ``on_trial_start`` event)."""

        def __init__(self):
            self.at: dict[str, float] = {}

        def on_trial_start(self, iteration, trials, trial, **info):
            self.at.setdefault(trial.trial_id, time.time())

    return LaunchTimes()


def _sweep(out: Path, plan: dict, trials: int) -> tuple[float, dict[str, float]]:
    from rise_dist.tune.sweep import Settings, run_sweep

    s = Settings(out=str(out), storage=str(out / "tune"), protocols=PROTOCOLS, trials=trials,
                 space="weights", asha=False, max_concurrent=1,
                 base={"epochs": plan["epochs"], "amp": False, "synthetic": plan["synthetic"]})
    launches = _launch_recorder()
    t0 = time.perf_counter()
    run_sweep(s, num_cpus=1, callbacks=[launches])  # one CPU: one trial at a time, as the plain side
    return time.perf_counter() - t0, launches.at


def _plain(out: Path, sweep_rows: pd.DataFrame) -> float:
    """The sweep's trials again, in trial order, with the plain lockstep loop (no Ray)."""
    from rise_dist.config import TrainConfig, from_dict
    from rise_dist.train import worker

    firsts = sweep_rows.sort_values("epoch_started_at").drop_duplicates("run_id")
    t0 = time.perf_counter()
    for trial_id, g in firsts.groupby("trial_id", sort=False):
        cfgs = [from_dict(TrainConfig, json.loads(c)) for c in g["config"]]
        runs = worker.open_runs(cfgs, out, trial_id, device="cpu")
        for _ in worker.lockstep(runs):
            pass
        worker.finish_runs(runs)
    return time.perf_counter() - t0


def launch_latencies(launched: dict[str, float], rows: pd.DataFrame) -> list[float]:
    """Seconds from each trial's launch by Tune to its first training step."""
    first_step = rows.groupby("trial_id")["epoch_started_at"].min()
    return [float(first_step[t] - at) for t, at in launched.items() if t in first_step.index]


def measure(quick: bool = False, trials: int | None = None) -> list[dict]:
    import torch

    from rise_dist import results
    from rise_dist.config import SyntheticConfig, from_dict
    from rise_dist.data.synthetic import synthetic_cache

    plan = QUICK if quick else FULL
    k = trials or plan["trials"]
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RISE_DIST_DATA"] = str(tmp / "data")
        synthetic_cache(from_dict(SyntheticConfig, plan["synthetic"]))
        sweep_s, launched = _sweep(tmp / "sweep", plan, k)
        rows = results.load(tmp / "sweep")
        plain_s = _plain(tmp / "plain", rows)
        lat = launch_latencies(launched, rows)
        per_trial = plain_s / max(1, rows["trial_id"].nunique())
    ratio = sweep_s / plain_s
    print(f"{k} trials of ~{per_trial:.0f} s ({len(PROTOCOLS)} protocol, {plan['epochs']} epochs): "
          f"sweep {sweep_s:.1f} s (Ray start-up and shutdown included), plain loop {plain_s:.1f} s, "
          f"ratio {ratio:.3f}x (target <= {TARGET}x for ~30 s trials)")
    print(f"trial start latency (Tune launch -> first training step): median "
          f"{np.median(lat):.2f} s over {len(lat)} trials ({', '.join(f'{x:.2f}' for x in lat)})")
    return [figure("sweep_overhead_ratio", ratio, "x", f"<= {TARGET}", ratio <= TARGET,
                   trial_seconds=per_trial, sweep_s=sweep_s, plain_s=plain_s, trials=k),
            figure("trial_start_latency_median", float(np.median(lat)) if lat else float("nan"), "s",
                   latencies=lat)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 trials of ~8 s")
    ap.add_argument("--trials", type=int)
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    figures = measure(args.quick, args.trials)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
