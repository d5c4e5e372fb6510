"""Paper figures from the results store, PNG (150 dpi) and PDF, each drawn only when the store has
its data; ``make_all`` says what it wrote and what it skipped and why.

Figures (file stem: what it shows):

* ``ablation``: test HTER (%) per protocol and Avg, one bar per method (each method's chosen
  setting, ``analysis.runs``), error bars = std over seeds (none for one seed).
* ``sensitivity_<weight>``: test and val HTER (%) against one loss weight, from settings that
  differ in that weight only (at least 3 values); mean over protocols and seeds; symlog x so 0
  shows.
* ``weights_map``: lambda_asyirm x lambda_mmsd, one point per setting (a sweep's trial), colour =
  objective (mean over protocols of the selected epoch's sources' val HTER, %); at least 5
  settings. Both axes symlog: a weight gated off is 0.
* ``roc_<protocol>``: target test ROC (live accepted vs spoofs accepted) per method, from the
  scores files (the run's last epoch, lowest seed), AUC in the legend.
* ``radius_<protocol>``: histograms of the fused feature's norm for live and spoof, per domain
  (sources' val splits and the target's test split), one row per method: AsyIRM's spherical
  boundary wants the lives compact at one radius and the spoofs spread outside.
* ``training``: per protocol, loss/total and val/test HTER (%) per epoch, mean over seeds.
* ``history``: a sweep's objective per trial and the best so far, at least 3 trials, mostly with their
  own setting, in the order the trials started (their first epoch's ``epoch_started_at``; stores
  from before that column existed fall back to ``trial_id`` order, and the axis says so).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analysis import runs as runs_mod
from analysis.runs import AVG, SETTING_COLUMNS
from analysis.tables import METHOD_LABEL
from rise_dist import results
from rise_dist.metrics import AUC, HTER, SOURCE_VAL, TEST_EER, evaluate

DPI = 150
STYLE = {"font.size": 11, "axes.titlesize": 11, "axes.labelsize": 11, "legend.fontsize": 9,
         "xtick.labelsize": 10, "ytick.labelsize": 10}
WEIGHTS = ("lambda_asyirm", "lambda_mmsd")
LOSS = "loss/total"
STARTED = "epoch_started_at"  # Unix time of an epoch's first training step (docs/results.md)
COLORS = {"erm": "#4d4d4d", "asyirm": "#1f77b4", "mmsd": "#ff7f0e", "rise": "#d62728"}


@dataclass
class Made:
    name: str
    paths: list[Path] = field(default_factory=list)
    reason: str = ""


def _new(w: float, h: float) -> Figure:
    import matplotlib as mpl
    with mpl.rc_context(STYLE):
        fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
        FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path, stem: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=DPI)
    return paths


def _label(m: str) -> str:
    return METHOD_LABEL.get(m, m)


def _color(m: str):
    return COLORS.get(m)


def make_all(results_dir, out, selection: str = SOURCE_VAL, threshold_rule: str = TEST_EER) -> list[Made]:
    import matplotlib as mpl
    out = Path(out)
    cols = [*runs_mod.IDENTITY, "trial_id", *SETTING_COLUMNS, "data",
            *runs_mod.metric_columns(HTER, threshold_rule), LOSS, STARTED]
    df = runs_mod.read(results_dir, list(dict.fromkeys(cols)))
    runs = runs_mod.runs_of(df, selection, threshold_rule, HTER)
    chosen, _ = runs_mod.choose_settings(runs)
    scores = {p.stem: p for p in Path(results_dir).rglob(f"{results.SCORES_SUBDIR}/*.parquet")
              if not p.name.startswith(".")}
    made = []
    with mpl.rc_context(STYLE):
        made.append(ablation(runs, out, selection, threshold_rule))
        made += sensitivity(runs, out)
        made.append(weights_map(runs, out))
        made += roc(chosen, scores, out)
        made += radius(chosen, scores, out)
        made.append(training(df, chosen, out, threshold_rule))
        made.append(history(runs, df, out))
    return made


def ablation(runs: pd.DataFrame, out: Path, selection: str, threshold_rule: str) -> Made:
    if runs.empty or not runs["ok"].any():
        return Made("ablation", reason="no run with a finished epoch")
    g = runs_mod.grid(runs)
    cols = [*g.protocols, AVG]
    fig = _new(max(6.0, 1.3 * len(cols) + 2), 4.0)
    ax = fig.add_subplot()
    width = 0.8 / len(g.methods)
    x = np.arange(len(cols))
    for i, m in enumerate(g.methods):
        cells = [g.cells[m, c] for c in cols]
        mean = [c.mean for c in cells]
        err = [c.std if np.isfinite(c.std) else 0.0 for c in cells]
        ax.bar(x + (i - (len(g.methods) - 1) / 2) * width, mean, width, yerr=err, capsize=3,
               label=_label(m), color=_color(m))
    ax.set_xticks(x, cols)
    ax.set_xlabel("protocol (sources_target)")
    ax.set_ylabel("test HTER (%)")
    ax.set_title(f"Ablation: mean ± std over {len(g.seeds)} seed(s); {selection}, {threshold_rule}")
    ax.legend(ncols=min(4, len(g.methods)))
    ax.grid(axis="y", alpha=0.3)
    return Made("ablation", _save(fig, out, "ablation"))


def _setting_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setting: its columns, mean selected test HTER and val HTER over ok runs (percent)."""
    ok = runs[runs["ok"]]
    return (ok.groupby("setting").agg(**{c: (c, "first") for c in SETTING_COLUMNS},
                                       test=("value", "mean"), val=("val_objective", "mean"),
                                       n=("run_id", "size"), trial=("trial_id", "first"))
            .reset_index())


def _symlog(ax, axis: str, values) -> None:
    pos = np.asarray([v for v in values if v > 0])
    lin = float(pos.min()) if len(pos) else 1e-3
    (ax.set_xscale if axis == "x" else ax.set_yscale)("symlog", linthresh=lin)


def sensitivity(runs: pd.DataFrame, out: Path) -> list[Made]:
    s = _setting_means(runs) if not runs.empty else pd.DataFrame()
    made = []
    for w in WEIGHTS:
        others = [c for c in SETTING_COLUMNS if c != w]
        best = None
        if not s.empty:
            for _, fam in s.fillna({c: -1.0 for c in others}).groupby(others):
                if fam[w].nunique() >= 3 and (best is None or fam[w].nunique() > best[w].nunique()):
                    best = fam
        if best is None:
            made.append(Made(f"sensitivity_{w}", reason=f"no 3 settings differing only in {w}"))
            continue
        best = best.sort_values(w)
        fig = _new(5.5, 4.0)
        ax = fig.add_subplot()
        ax.plot(best[w], best["test"], "o-", label="target test HTER")
        ax.plot(best[w], best["val"], "s--", label="sources' val HTER")
        _symlog(ax, "x", best[w])
        ax.set_xlabel(f"{w} (symlog scale, 0 shown)")
        ax.set_ylabel("HTER (%)")
        ax.set_title(f"Sensitivity to {w}: mean over protocols and seeds")
        ax.legend()
        ax.grid(alpha=0.3)
        made.append(Made(f"sensitivity_{w}", _save(fig, out, f"sensitivity_{w}")))
    return made


def weights_map(runs: pd.DataFrame, out: Path) -> Made:
    s = _setting_means(runs) if not runs.empty else pd.DataFrame()
    if s.empty or len(s.drop_duplicates(list(WEIGHTS))) < 5 or s[list(WEIGHTS)].isna().any().any():
        return Made("weights_map", reason="fewer than 5 (lambda_asyirm, lambda_mmsd) settings (not a sweep)")
    fig = _new(5.5, 4.5)
    ax = fig.add_subplot()
    pts = ax.scatter(s["lambda_asyirm"], s["lambda_mmsd"], c=s["val"], cmap="viridis_r", s=60,
                     edgecolors="k", linewidths=0.5)
    best = s.loc[s["val"].idxmin()]
    ax.scatter([best["lambda_asyirm"]], [best["lambda_mmsd"]], marker="*", s=250, c="red", label="best")
    _symlog(ax, "x", s["lambda_asyirm"])
    _symlog(ax, "y", s["lambda_mmsd"])
    ax.set_xlabel("lambda_asyirm (symlog, 0 = off)")
    ax.set_ylabel("lambda_mmsd (symlog, 0 = off)")
    ax.set_title(f"Sweep objective over the loss weights ({len(s)} settings)")
    fig.colorbar(pts, ax=ax, label="mean sources' val HTER (%)")
    ax.legend(loc="best")
    return Made("weights_map", _save(fig, out, "weights_map"))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every distinct threshold, from (0, 0) to (1, 1): a sample is accepted as
    live when score >= threshold; TPR = lives accepted / lives, FPR = spoofs accepted / spoofs."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    s, live = np.asarray(scores, float)[order], np.asarray(labels)[order] == 1
    last = np.r_[np.diff(s) != 0, True]  # the last sample of each tie group
    tp, fp = np.cumsum(live)[last], np.cumsum(~live)[last]
    return np.r_[0.0, fp / max(1, (~live).sum())], np.r_[0.0, tp / max(1, live.sum())]


def _first_scored(chosen: pd.DataFrame, scores: dict) -> pd.DataFrame:
    """One run per (protocol, method): the lowest seed whose scores file exists."""
    have = chosen[chosen["run_id"].isin(scores.keys())]
    return have.sort_values(["protocol", "method", "seed"]).groupby(["protocol", "method"]).head(1)


def roc(chosen: pd.DataFrame, scores: dict, out: Path) -> list[Made]:
    pick = _first_scored(chosen, scores) if not chosen.empty else chosen
    if pick.empty:
        return [Made("roc", reason="no scores files (scores/<run_id>.parquet)")]
    made = []
    for p in runs_mod.protocol_order(pick["protocol"].unique()):
        fig = _new(4.8, 4.5)
        ax = fig.add_subplot()
        here = pick[pick["protocol"] == p]
        for m in runs_mod.method_order(here["method"]):
            r = here[here["method"] == m].iloc[0]
            sc = pd.read_parquet(scores[r["run_id"]], columns=["set", "label", "score"])
            sc = sc[sc["set"] == "test"]
            if sc["label"].nunique() < 2:
                continue
            fpr, tpr = roc_curve(sc["score"].to_numpy(), sc["label"].to_numpy())
            auc = 100 * evaluate(sc["score"].to_numpy(), sc["label"].to_numpy())[AUC]
            ax.plot(100 * fpr, 100 * tpr, label=f"{_label(m)} (AUC {auc:.1f}%)", color=_color(m))
        ax.plot([0, 100], [0, 100], ":", color="grey", lw=1)
        ax.set_xlabel("spoofs accepted, FPR (%)")
        ax.set_ylabel("lives accepted, TPR (%)")
        ax.set_title(f"ROC on {p}'s target test split (last epoch)")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        made.append(Made(f"roc_{p}", _save(fig, out, f"roc_{p}")))
    return made


def radius(chosen: pd.DataFrame, scores: dict, out: Path) -> list[Made]:
    pick = _first_scored(chosen, scores) if not chosen.empty else chosen
    if pick.empty:
        return [Made("radius", reason="no scores files (scores/<run_id>.parquet)")]
    made = []
    for p in runs_mod.protocol_order(pick["protocol"].unique()):
        here = pick[pick["protocol"] == p]
        methods = runs_mod.method_order(here["method"])
        frames = {m: pd.read_parquet(scores[here[here["method"] == m].iloc[0]["run_id"]],
                                     columns=["domain", "set", "label", "radius"]) for m in methods}
        frames = {m: f[np.isfinite(f["radius"].astype(float))] for m, f in frames.items()}
        panels = sorted({(d, s) for f in frames.values() for d, s in zip(f["domain"], f["set"], strict=True)},
                        key=lambda ds: (ds[1] == "test", ds[0]))
        if not panels:
            made.append(Made(f"radius_{p}", reason="scores files have no finite radius"))
            continue
        fig = _new(2.8 * len(panels) + 0.5, 2.4 * len(methods) + 0.6)
        axes = fig.subplots(len(methods), len(panels), squeeze=False, sharex=True)
        lo = min(float(f["radius"].min()) for f in frames.values() if len(f))
        hi = max(float(f["radius"].max()) for f in frames.values() if len(f))
        bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 40)
        for i, m in enumerate(methods):
            f = frames[m]
            for j, (d, s) in enumerate(panels):
                ax = axes[i, j]
                part = f[(f["domain"] == d) & (f["set"] == s)]
                for lab, name, col in ((1, "live", "#2ca02c"), (0, "spoof", "#d62728")):
                    ax.hist(part.loc[part["label"] == lab, "radius"], bins=bins, alpha=0.5, label=name,
                            histtype="stepfilled", color=col, density=True)  # one polygon: fast
                ax.set_title(f"{_label(m)}: {d} ({'target test' if s == 'test' else 'source val'})")
                if i == len(methods) - 1:
                    ax.set_xlabel("feature radius ‖z‖")
                if j == 0:
                    ax.set_ylabel("density")
        axes[0, 0].legend()
        made.append(Made(f"radius_{p}", _save(fig, out, f"radius_{p}")))
    return made


def training(df: pd.DataFrame, chosen: pd.DataFrame, out: Path, threshold_rule: str) -> Made:
    test_col = results.column("test", HTER, threshold_rule)
    val_col = results.column("val", HTER)
    if chosen.empty or LOSS not in df or df[LOSS].isna().all():
        return Made("training", reason=f"no per-epoch {LOSS} in the store")
    rows = df[df["run_id"].isin(chosen["run_id"])]
    protocols = runs_mod.protocol_order(rows["protocol"].unique())
    fig = _new(3.2 * len(protocols) + 0.5, 5.5)
    axes = fig.subplots(2, len(protocols), squeeze=False, sharex=True)
    for j, p in enumerate(protocols):
        here = rows[rows["protocol"] == p]
        for m in runs_mod.method_order(here["method"].unique()):
            per = here[here["method"] == m].groupby("epoch")[[LOSS, val_col, test_col]].mean()
            axes[0, j].plot(per.index, per[LOSS], "o-", color=_color(m), label=_label(m))
            axes[1, j].plot(per.index, 100 * per[test_col], "o-", color=_color(m), label=f"{_label(m)} test")
            axes[1, j].plot(per.index, 100 * per[val_col], "x--", color=_color(m), label=f"{_label(m)} val")
        axes[0, j].set_title(p)
        axes[1, j].set_xlabel("epoch")
    axes[0, 0].set_ylabel("training loss (total)")
    axes[1, 0].set_ylabel("HTER (%)")
    axes[0, 0].legend()
    axes[1, 0].legend(fontsize=7)
    return Made("training", _save(fig, out, "training"))


def history(runs: pd.DataFrame, df: pd.DataFrame, out: Path) -> Made:
    if runs.empty or "trial_id" not in runs or runs["trial_id"].isna().all():
        return Made("history", reason="no trial_id in the store (not a sweep)")
    per = (runs.dropna(subset=["trial_id"]).groupby("trial_id")
           .agg(objective=("val_objective", "mean"), setting=("setting", "first")))
    started = df.groupby("trial_id")[STARTED].min() if STARTED in df else pd.Series(dtype=float)
    per["started"] = started.reindex(per.index)
    in_time_order = bool(per["started"].notna().all())
    per = per.sort_values("started") if in_time_order else per.sort_index()
    per = per[np.isfinite(per["objective"])]
    # A sweep may draw one setting twice (a gated-off weight makes many draws ERM), an ablation
    # repeats a few settings over protocols and seeds: mostly distinct settings mark a sweep.
    if len(per) < 3 or per["setting"].nunique() < max(3, len(per) / 2):
        return Made("history", reason="fewer than 3 trials, or mostly repeated settings (not a sweep)")
    fig = _new(6.0, 4.0)
    ax = fig.add_subplot()
    x = np.arange(1, len(per) + 1)
    ax.plot(x, per["objective"], "o", label="trial objective")
    best = np.minimum.accumulate(per["objective"].to_numpy())
    ax.step(x, best, where="post", color="red", label="best so far")
    ax.set_xlabel("trial, in start order" if in_time_order
                  else "trial (trial_id order: this store records no start times)")
    ax.set_ylabel("mean sources' val HTER (%)")
    ax.set_title(f"Sweep optimization history ({len(per)} trials)")
    ax.legend()
    ax.grid(alpha=0.3)
    return Made("history", _save(fig, out, "history"))
