"""Search efficiency: Optuna TPE with ASHA against a full grid over the two loss weights.

    python benchmarks/search_efficiency.py [--quick] [--trials N] [--workers N] [--reuse-grid]
        [--out DIR] [--json FILE]

Both sides search (lambda_asyirm, lambda_mmsd) on the synthetic benchmark with the same data,
protocols, epochs and training seed, and score a weight setting the way the sweep does: the mean
over protocols of the sources'-validation HTER of each run's ``source_val``-selected epoch.

- Grid: every point of {0, 1e-2, 1e-1, 1, 10}^2 (``--quick``: {0, 1e-2, 1e-1, 1}^2), each
  trained on every protocol for every epoch by the plain loop (``rise_dist.train.loop.train``,
  no Ray), ``--workers`` points at a time in spawned processes of one thread each.
- TPE + ASHA: ``run_sweep`` with ``space="weights"`` (log-uniform 1e-3..10 with on/off gates,
  so 0 is reachable), ASHA on, ``--trials`` trials, one trial at a time (an embedded Ray with one
  CPU: the run is then reproducible and its timeline is the trial order).

Compute is counted in protocol-epochs trained, read from each side's results store (one row =
one protocol-epoch; deterministic), and also as epoch-seconds (the sum of ``epoch_seconds``, one
thread each; wall time of each epoch, so it carries the machine's load: the grid trains two
points at a time, the sweep one trial). A TPE trial counts towards "best so far" once it has run
every epoch (as the sweep's own summary does); ASHA-stopped trials count only as compute spent.

Target (issue 6): TPE + ASHA gets within 1 HTER point of the grid's best using at most a quarter
of the grid's protocol-epochs. Reported: the TPE run's best once a quarter of the grid's compute
is spent and its gap to the grid's best (target <= 1 point), and the compute at which the TPE
curve first gets within 1 point, as a fraction of the grid's (target <= 0.25; the grid's own in
row-major and mean random order beside it). ``--trials`` is set so the run goes past a quarter.
Both sides are reproducible: the plain loop is seeded, and the sweep runs one trial at a time
with a seeded sampler. ``--reuse-grid`` reads back an earlier grid of the same plan.

The figure (PNG + PDF under ``--out``, default runs/bench/search_efficiency) shows the best
objective so far against protocol-epochs spent for the TPE run, the grid in row-major order and
the grid's mean over random orders, and in a second panel the target test HTER of the incumbent
(at its selected epochs). ``curves.json`` holds the numbers behind it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from itertools import product
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

from rise_dist import results
from rise_dist.data.protocols import LEAVE_ONE_OUT
from rise_dist.metrics import HTER, ORACLE, SOURCE_VAL

# --quick: the tiny synthetic benchmark of every Tune command's --smoke; full: a bit larger.
QUICK = {"synthetic": {"n_train": 48, "n_val": 16, "n_test": 24, "size": [16, 16]}, "batch_size": 24,
         "epochs": 4, "protocols": list(LEAVE_ONE_OUT), "grid": [0.0, 1e-2, 1e-1, 1.0], "trials": 8}
FULL = {"synthetic": {"n_train": 96, "n_val": 32, "n_test": 48, "size": [16, 16]}, "batch_size": 32,
        "epochs": 6, "protocols": list(LEAVE_ONE_OUT), "grid": [0.0, 1e-2, 1e-1, 1.0, 10.0], "trials": 14}
SEED = 0
GAP_TARGET = 1.0  # HTER points
COMPUTE_TARGET = 0.25  # fraction of the grid's protocol-epochs
BAD_SCORE = 1.0  # a diverged setting's objective, as the sweep's (worker.BAD_SCORE)
RANDOM_ORDERS = 1000
VAL, TEST = results.column("val", HTER), results.column("test", HTER)


def base_config(plan: dict) -> dict:
    return {"epochs": plan["epochs"], "seed": SEED, "data": "synthetic", "amp": False,
            "synthetic": plan["synthetic"], "batch_size": plan["batch_size"]}


# ------------------------------------------------------------------------------ scoring

def score(rows: pd.DataFrame, protocols: list[str]) -> dict:
    """One weight setting's rows (all its protocols' epochs) -> the sweep's objective
    (mean source_val-selected val HTER), the test HTER at those epochs, the oracle test HTER."""
    sv, orc = results.select(rows, SOURCE_VAL), results.select(rows, ORACLE)
    bad = (sorted(sv["protocol"]) != sorted(protocols) or (rows["status"] == "diverged").any()
           or not np.isfinite(rows[VAL].astype(float)).all())
    epochs = int(json.loads(rows["config"].iloc[0])["epochs"]) if len(rows) else 0
    last = rows.groupby("run_id")["epoch"].max()
    return {"objective": BAD_SCORE if bad else float(sv[VAL].mean()),
            "test_hter": BAD_SCORE if bad else float(sv[TEST].mean()),
            "oracle_test_hter": BAD_SCORE if bad else float(orc[TEST].mean()),
            "protocol_epochs": int(len(rows)), "cpu_s": float(rows["epoch_seconds"].sum()),
            "complete": bool(len(last) == len(protocols) and (last >= epochs).all())}


def best_so_far(points: list[dict]) -> list[dict]:
    """Curve points (compute, best objective so far, the incumbent's test/oracle HTER) after
    each event; ``points`` in order, each with ``compute`` (cumulative) and maybe a score."""
    out, best = [], None
    for p in points:
        if p.get("objective") is not None and (best is None or p["objective"] < best["objective"]):
            best = p
        out.append({"compute": p["compute"], "cpu_s": p["cpu_s"],
                    "best": None if best is None else best["objective"],
                    "test_hter": None if best is None else best["test_hter"],
                    "oracle_test_hter": None if best is None else best["oracle_test_hter"]})
    return out


def reach(curve: list[dict], level: float) -> float | None:
    """Compute spent when the curve first gets to ``level`` or below (None: never)."""
    for p in curve:
        if p["best"] is not None and p["best"] <= level + 1e-12:
            return p["compute"]
    return None


# --------------------------------------------------------------------------------- grid

def _grid_point(args: tuple) -> float:
    """Train one grid point on every protocol (a spawned worker: one thread)."""
    import torch

    from rise_dist.train.loop import train
    from rise_dist.tune import spaces

    tag, weights, base, protocols, out = args
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    for cfg in spaces.configs_for(weights, base, protocols):
        train(cfg, out, trial_id=tag, progress=False, device="cpu")
    return time.perf_counter() - t0


def run_grid(plan: dict, out: Path, workers: int, reuse: bool = False) -> tuple[list[dict], float]:
    """Train every grid point (or, with ``reuse``, read back a grid this script trained earlier
    under ``out`` with the same plan: the plain-loop side is deterministic)."""
    values = plan["grid"]
    points = [{"tag": f"grid{i:02d}", "lambda_asyirm": a, "lambda_mmsd": m}
              for i, (a, m) in enumerate(product(values, values))]  # row-major
    saved = out / "plan.json"
    if reuse and saved.exists() and json.loads(saved.read_text())["plan"] == _grid_plan(plan):
        wall = float(json.loads(saved.read_text())["wall_s"])
        print(f"  grid reused from {out} (same plan; trained in {wall:.0f}s)", flush=True)
    else:
        shutil.rmtree(out, ignore_errors=True)
        jobs = [(p["tag"], {"lambda_asyirm": p["lambda_asyirm"], "lambda_mmsd": p["lambda_mmsd"]},
                 base_config(plan), plan["protocols"], str(out)) for p in points]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as ex:
            for p, w in zip(points, ex.map(_grid_point, jobs), strict=True):
                print(f"  grid point {p['tag']} (lambda_asyirm={p['lambda_asyirm']:g}, "
                      f"lambda_mmsd={p['lambda_mmsd']:g}) trained in {w:.1f}s", flush=True)
        wall = time.perf_counter() - t0
        saved.write_text(json.dumps({"plan": _grid_plan(plan), "wall_s": wall, "workers": workers}))
    df = results.load(out)
    for p in points:
        p.update(score(df[df["trial_id"] == p["tag"]], plan["protocols"]))
    return points, wall


def _grid_plan(plan: dict) -> dict:
    return {k: v for k, v in plan.items() if k != "trials"}


def grid_curves(points: list[dict], level: float) -> tuple[list[dict], list[dict], float]:
    """Row-major curve; the mean curve over random orders; the mean compute to reach ``level``."""
    cum, cpu, ordered = 0, 0.0, []
    for p in points:
        cum, cpu = cum + p["protocol_epochs"], cpu + p["cpu_s"]
        ordered.append({**p, "compute": cum, "cpu_s": cpu})
    row_major = best_so_far(ordered)
    rng = np.random.default_rng(SEED)
    obj = np.array([p["objective"] for p in points])
    cost = np.array([p["protocol_epochs"] for p in points])
    bests, computes, reached = [], [], []
    for _ in range(RANDOM_ORDERS):
        order = rng.permutation(len(points))
        b = np.minimum.accumulate(obj[order])
        c = np.cumsum(cost[order])
        bests.append(b)
        computes.append(c)
        reached.append(c[np.argmax(b <= level + 1e-12)])
    mean = [{"compute": float(c), "best": float(b)}
            for c, b in zip(np.mean(computes, 0), np.mean(bests, 0), strict=True)]
    return row_major, mean, float(np.mean(reached))


# ---------------------------------------------------------------------------------- TPE

def run_tpe(plan: dict, out: Path, trials: int, grace_period: int = 1) -> tuple[list[dict], list[dict], float]:
    from rise_dist.tune.sweep import Settings, run_sweep

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    s = Settings(out=str(out), storage=str(out / "tune"), base=base_config(plan),
                 protocols=plan["protocols"], trials=trials, seed=SEED, space="weights", gates=True,
                 asha=True, grace_period=grace_period, reduction_factor=2.0, cpus_per_trial=1, max_concurrent=1,
                 data_root=os.environ.get("RISE_DIST_DATA"))
    t0 = time.perf_counter()
    run_sweep(s, num_cpus=1)  # one trial at a time: reproducible, and trial order is the timeline
    wall = time.perf_counter() - t0
    df = results.load(out)
    number = _trial_numbers(out / "tune")
    trials_ = []
    for tid, rows in df.groupby("trial_id"):
        w = rows.iloc[0]
        trials_.append({"trial_id": tid, "lambda_asyirm": float(w["lambda_asyirm"]),
                        "lambda_mmsd": float(w["lambda_mmsd"]),
                        "epochs_trained": int(rows["epoch"].max()), **score(rows, plan["protocols"])})
    # the timeline: rows in the order they were trained (epoch start time where the store has
    # it, else Tune's trial counter); a trial's score is known once its last row is written
    key = (["epoch_started_at"] if "epoch_started_at" in df else []) + ["_n", "epoch", "protocol"]
    df = df.assign(_n=df["trial_id"].map(number)).sort_values(key).reset_index(drop=True)
    last = df.groupby("trial_id").tail(1).index
    by_id = {t["trial_id"]: t for t in trials_}
    events, cpu = [], 0.0
    for i, r in df.iterrows():
        cpu += float(r["epoch_seconds"])
        t = by_id[r["trial_id"]]
        done = i in last and t["complete"]
        events.append({"compute": i + 1, "cpu_s": cpu, **({k: t[k] for k in (
            "objective", "test_hter", "oracle_test_hter")} if done else {})})
    trials_.sort(key=lambda t: number.get(t["trial_id"], 0))
    return trials_, best_so_far(events), wall


def _trial_numbers(storage: Path) -> dict[str, int]:
    """Tune's 1-based trial counter by trial id, from the trial directories
    ``<trainable>_<id>_<n>_<tag>`` of the experiment."""
    out = {}
    for d in storage.glob("*/*_*_*"):
        parts = d.name.split("_")
        if d.is_dir() and parts[2].isdigit():
            out[parts[1]] = int(parts[2])
    return out


# ------------------------------------------------------------------------------- figure

def plot(curves: dict, grid_total: int, grid_best: float, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def xy(curve, key="best"):
        """The points where the curve changes, and its end (a step plot needs no more)."""
        pts = [(p["compute"] / grid_total, 100 * p[key]) for p in curve if p.get(key) is not None]
        keep = [q for i, q in enumerate(pts) if i == 0 or i == len(pts) - 1 or q[1] != pts[i - 1][1]]
        return [x for x, _ in keep], [y for _, y in keep]

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    styles = {"tpe_asha": ("TPE + ASHA (completed trials)", "C0", "-"),
              "grid_row_major": ("grid, row-major order", "C1", "-"),
              "grid_random_mean": ("grid, mean over random orders", "C1", ":")}
    for name, (label, color, ls) in styles.items():
        xs, ys = xy(curves[name])
        axes[0].step(xs, ys, where="post", color=color, ls=ls, label=label, marker="." if ls == "-" else None)
        if name != "grid_random_mean":
            xs, ys = xy(curves[name], "test_hter")
            axes[1].step(xs, ys, where="post", color=color, ls=ls, label=label, marker=".")
    axes[0].axhspan(100 * grid_best, 100 * grid_best + GAP_TARGET, color="C2", alpha=0.15,
                    label=f"grid best + {GAP_TARGET:g} HTER point")
    for ax in axes:
        ax.axvline(COMPUTE_TARGET, color="grey", ls="--", lw=1, label="1/4 of the grid's compute")
        ax.set_xlabel("compute spent (fraction of the full grid's protocol-epochs)")
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best objective so far: mean source-val HTER (%)")
    axes[1].set_ylabel("incumbent's target test HTER (%)\n(at its source_val-selected epochs)")
    axes[0].legend(fontsize=8)
    axes[0].set_title("search: best objective vs compute", fontsize=10)
    axes[1].set_title("the incumbent on the held-out targets", fontsize=10)
    fig.tight_layout()
    paths = [out / "search_efficiency.png", out / "search_efficiency.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


# ------------------------------------------------------------------------------ measure

def _at(curve: list[dict], compute: float) -> dict | None:
    """The curve's last point with at most ``compute`` spent (None: nothing known by then)."""
    pts = [p for p in curve if p["compute"] <= compute + 1e-9 and p["best"] is not None]
    return pts[-1] if pts else None


def measure(quick: bool = False, out: str | os.PathLike = "runs/bench/search_efficiency",
            trials: int | None = None, workers: int = 2, reuse_grid: bool = False,
            grace_period: int = 1) -> list[dict]:
    """Run both searches; print the comparison; write the figure and ``curves.json`` under
    ``out``; return the figures (``{"name", "value", "unit", "target", "met", ...}``)."""
    from rise_dist.config import SyntheticConfig, from_dict
    from rise_dist.data.synthetic import synthetic_cache

    plan = dict(QUICK if quick else FULL)
    plan["trials"] = trials or plan["trials"]
    out = Path(out).resolve()
    shutil.rmtree(out / "tpe", ignore_errors=True)  # this script's own output of an earlier run
    out.mkdir(parents=True, exist_ok=True)
    synthetic_cache(from_dict(SyntheticConfig, plan["synthetic"]))  # built once, before either side

    n_grid = len(plan["grid"]) ** 2
    print(f"search efficiency ({'quick' if quick else 'full'}): {len(plan['protocols'])} protocols "
          f"({','.join(plan['protocols'])}), {plan['epochs']} epochs, synthetic {plan['synthetic']}, "
          f"batch {plan['batch_size']}; grid {len(plan['grid'])}x{len(plan['grid'])} over "
          f"{plan['grid']}; TPE + ASHA {plan['trials']} trials", flush=True)
    grid, grid_wall = run_grid(plan, out / "grid", workers, reuse_grid)
    tpe, tpe_curve, tpe_wall = run_tpe(plan, out / "tpe", plan["trials"], grace_period)

    grid_best_pt = min(grid, key=lambda p: p["objective"])
    grid_best, grid_total = grid_best_pt["objective"], sum(p["protocol_epochs"] for p in grid)
    grid_cpu = sum(p["cpu_s"] for p in grid)
    level = grid_best + GAP_TARGET / 100
    budget = COMPUTE_TARGET * grid_total
    row_major, random_mean, random_reach = grid_curves(grid, level)
    done = [t for t in tpe if t["complete"]]
    tpe_total, tpe_cpu = sum(t["protocol_epochs"] for t in tpe), sum(t["cpu_s"] for t in tpe)
    end = _at(tpe_curve, float("inf"))
    at_budget = _at(tpe_curve, budget)
    tpe_best = end["best"] if end else float("nan")
    budget_best = at_budget["best"] if at_budget else BAD_SCORE
    gap = 100 * (budget_best - grid_best)
    tpe_reach, row_reach = reach(tpe_curve, level), reach(row_major, level)
    reach_frac = (tpe_reach if tpe_reach is not None else tpe_total) / grid_total
    partial = min((t for t in tpe if not t["complete"]), key=lambda t: t["objective"], default=None)
    effective = [(t["lambda_asyirm"], t["lambda_mmsd"]) for t in tpe]
    repeats = len(effective) - len(set(effective))

    print("\ngrid, row-major (objective = mean source-val HTER of the source_val-selected epochs; "
          "test = target test HTER at those epochs; oracle = lowest test HTER):")
    print(f"  {'lambda_asyirm':>13} {'lambda_mmsd':>11} {'objective':>9} {'test':>7} {'oracle':>7} "
          f"{'p-epochs':>8} {'epoch s':>7}")
    for p in grid:
        print(f"  {p['lambda_asyirm']:>13g} {p['lambda_mmsd']:>11g} {100 * p['objective']:>8.2f}% "
              f"{100 * p['test_hter']:>6.2f}% {100 * p['oracle_test_hter']:>6.2f}% "
              f"{p['protocol_epochs']:>8} {p['cpu_s']:>7.1f}")
    print("TPE + ASHA trials, in Tune's order (weights with the gates applied):")
    for t in tpe:
        print(f"  {t['trial_id']:<9} lambda_asyirm={t['lambda_asyirm']:<9.4g} "
              f"lambda_mmsd={t['lambda_mmsd']:<9.4g} epochs {t['epochs_trained']}/{plan['epochs']}  "
              f"objective {100 * t['objective']:6.2f}%{'' if t['complete'] else ' (ASHA-stopped, so far)'}  "
              f"test {100 * t['test_hter']:6.2f}%  p-epochs {t['protocol_epochs']}")
    ok_gap, ok_frac = bool(gap <= GAP_TARGET), bool(tpe_reach is not None and tpe_reach <= budget)
    print(f"\ngrid best: {100 * grid_best:.2f}% (lambda_asyirm={grid_best_pt['lambda_asyirm']:g}, "
          f"lambda_mmsd={grid_best_pt['lambda_mmsd']:g}; "
          f"its test HTER {100 * grid_best_pt['test_hter']:.2f}%); "
          f"{grid_total} protocol-epochs, {grid_cpu:.0f} epoch-seconds, {grid_wall:.0f} s wall "
          f"({workers} points at a time)")
    print(f"TPE + ASHA, whole run: best {100 * tpe_best:.2f}% ({len(done)}/{len(tpe)} trials ran every "
          f"epoch; {repeats} repeated an earlier trial's weights), {tpe_total} protocol-epochs = "
          f"{tpe_total / grid_total:.3f} of the grid, {tpe_cpu:.0f} epoch-seconds = "
          f"{tpe_cpu / grid_cpu:.3f} of the grid's, {tpe_wall:.0f} s wall (one trial at a time, "
          "Ray start-up included)")
    if partial is not None:
        print(f"  (best ASHA-stopped trial: {100 * partial['objective']:.2f}% after "
              f"{partial['epochs_trained']} epochs; stopped trials count as compute only)")
    print(f"TPE + ASHA within {COMPUTE_TARGET:g} of the grid's compute ({budget:.0f} protocol-epochs): best "
          + (f"{100 * budget_best:.2f}% (its test HTER {100 * at_budget['test_hter']:.2f}%)"
             if at_budget else "none (no trial had finished)"))
    print(f"gap to the grid's best at that budget: {gap:+.2f} HTER points (target <= {GAP_TARGET:g}: "
          f"{'met' if ok_gap else f'MISSED by {gap - GAP_TARGET:.2f}'})")
    fmt = lambda c: "never" if c is None else f"{c / grid_total:.3f}"  # noqa: E731
    print(f"compute to get within {GAP_TARGET:g} HTER point of the grid's best, as a fraction of the "
          f"grid's: TPE + ASHA {fmt(tpe_reach)}"
          f"{'' if tpe_reach is not None else f' (not within this run of {tpe_total / grid_total:.3f})'}, "
          f"grid row-major {fmt(row_reach)}, grid in random order (mean) {random_reach / grid_total:.3f} "
          f"(target <= {COMPUTE_TARGET:g} for TPE: {'met' if ok_frac else 'MISSED'})")
    print(f"target {'MET' if ok_gap and ok_frac else 'MISSED'}")

    curves = {"tpe_asha": tpe_curve, "grid_row_major": row_major, "grid_random_mean": random_mean}
    (out / "curves.json").write_text(json.dumps(
        {"plan": plan, "grid": grid, "tpe": tpe, "curves": curves, "grid_total": grid_total,
         "grid_best": grid_best, "tpe_best": tpe_best, "tpe_best_at_budget": budget_best}, indent=1))
    for path in plot(curves, grid_total, grid_best, out):
        print(f"figure: {path}")
    common = {"quick": quick, "grid_points": n_grid, "protocols": len(plan["protocols"]),
              "epochs": plan["epochs"], "tpe_trials": len(tpe)}
    return [
        figure("search_grid_best_hter", 100 * grid_best, "% HTER", protocol_epochs=grid_total,
               epoch_seconds=grid_cpu, wall_s=grid_wall, **common),
        figure("search_tpe_asha_best_hter", 100 * budget_best, "% HTER", at_compute_fraction=COMPUTE_TARGET,
               whole_run_best=100 * tpe_best, whole_run_protocol_epochs=tpe_total,
               whole_run_epoch_seconds=tpe_cpu, wall_s=tpe_wall, repeated_trials=repeats, **common),
        figure("search_tpe_asha_gap_hter_points", gap, "HTER points",
               f"<= {GAP_TARGET:g} at {COMPUTE_TARGET:g} of the grid's compute", ok_gap, **common),
        figure("search_tpe_asha_compute_fraction", reach_frac, "x grid protocol-epochs",
               f"<= {COMPUTE_TARGET:g} to get within {GAP_TARGET:g} point", ok_frac,
               reached=tpe_reach is not None,
               grid_row_major=None if row_reach is None else row_reach / grid_total,
               grid_random_order_mean=random_reach / grid_total,
               whole_run_fraction=tpe_total / grid_total, epoch_seconds_fraction=tpe_cpu / grid_cpu, **common),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4x4 grid on the tiny --smoke data, 4 epochs")
    ap.add_argument("--trials", type=int, help="TPE trials (default 14; --quick 8)")
    ap.add_argument("--workers", type=int, default=2, help="grid points trained at once")
    ap.add_argument("--reuse-grid", action="store_true",
                    help="read back the grid of an earlier run under --out with the same plan")
    ap.add_argument("--grace-period", type=int, default=1, help="ASHA grace period of the TPE side (epochs)")
    ap.add_argument("--out", default="runs/bench/search_efficiency")
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    t0 = time.perf_counter()
    figures = measure(args.quick, args.out, args.trials, args.workers, args.reuse_grid, args.grace_period)
    print(f"wall time {time.perf_counter() - t0:.0f}s")
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
