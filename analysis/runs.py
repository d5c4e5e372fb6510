"""From the results store to one row per run, and from runs to table cells.

Conventions (every table and figure goes through here):

* A run is one ``run_id`` (one protocol, one config, one seed). Its value is the target test
  metric, in percent, at the epoch the selection rule picks (``rise_dist.results.select``:
  ``source_val`` or ``oracle``), under a threshold rule (``test_eer`` or ``val_threshold``).
* A run counts (is "ok") when its status is ``completed`` or ``stopped_early`` and that value is
  finite. ``failed``, ``diverged`` and ``running`` runs never enter a mean; they are counted and
  named in the table's notes, as are expected runs with no row at all ("missing").
* A setting is a method's weights and the other searched values (``SETTING_COLUMNS``). An
  ablation store has one setting per method; a sweep store has many. A table shows, per method,
  the setting with the most ok runs, ties to the lowest mean source-val HTER (the sweep's own
  objective, whatever the selection rule): never chosen on test numbers. The caption says so
  whenever a method had more than one setting.
* Expected runs: every (method, protocol, seed) whose method, protocol and seed appear anywhere
  in the chosen settings. A cell with fewer ok runs than seeds is marked (k/N).

Reads only the store, through ``rise_dist.results``; imports neither torch nor Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from rise_dist import results
from rise_dist.data.protocols import LEAVE_ONE_OUT, PROTOCOLS
from rise_dist.metrics import HTER, SOURCE_VAL, TEST_EER

METHOD_ORDER = ("erm", "asyirm", "mmsd", "rise")
OK_STATUSES = ("completed", "stopped_early")
NOT_OK_STATUSES = ("failed", "diverged", "running")
# Config values a sweep searches: two runs with equal values here are the same setting. ``lr`` is
# left out: in the store its column is the learning rate after the epoch, not the config's.
SETTING_COLUMNS = ("lambda_asyirm", "lambda_mmsd", "asyirm.margin", "asyirm.warmup_epochs",
                   "mmsd.temperature")
IDENTITY = ("run_id", "protocol", "method", "seed", "epoch", "status")
AVG = "Avg"


def read(results_dir, columns: list[str]) -> pd.DataFrame:
    """``results.load`` of only ``columns`` (what keeps a million-row store fast). A store whose
    files do not all have every column (written by older code) is read whole and reindexed, so
    an absent column reads as NaN instead of failing."""
    try:
        return results.load(results_dir, columns=list(columns))
    except ValueError:
        return results.load(results_dir).reindex(columns=list(columns))


def metric_columns(metric: str, threshold_rule: str) -> list[str]:
    cols = [results.column("val", HTER), results.column("test", metric, threshold_rule),
            results.column("test", HTER, threshold_rule)]
    return list(dict.fromkeys(cols))


def load_runs(results_dir, selection: str = SOURCE_VAL, threshold_rule: str = TEST_EER,
              metric: str = HTER, extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """One row per run: identity, setting columns, ``value`` (selected test metric, percent),
    ``val_objective`` (sources' val HTER at the source_val epoch, percent), ``ok``."""
    cols = [*IDENTITY, *SETTING_COLUMNS, "data", *metric_columns(metric, threshold_rule), *extra]
    df = read(results_dir, list(dict.fromkeys(cols)))
    return runs_of(df, selection, threshold_rule, metric)


def runs_of(df: pd.DataFrame, selection: str, threshold_rule: str, metric: str) -> pd.DataFrame:
    if df.empty:
        return pd.DataFrame(columns=[*IDENTITY, *SETTING_COLUMNS, "value", "val_objective", "ok", "setting"])
    # Speed on a million rows: run_id as a categorical (sorts and groups as integers), and the
    # selection rules run on a narrow frame (their sort moves every column it is given).
    df = df.assign(run_id=df["run_id"].astype("category"))
    last = df.loc[df.groupby("run_id", observed=True)["epoch"].idxmax()]
    last = last.drop(columns=[c for c in last.columns if c.startswith(("val_", "test_"))])
    test_col = results.column("test", metric, threshold_rule)
    narrow = df[["run_id", "epoch", *metric_columns(metric, threshold_rule)]]
    picked_full = results.select(narrow, selection, threshold_rule)
    picked = picked_full[["run_id", "epoch", test_col]].rename(columns={"epoch": "selected_epoch",
                                                                        test_col: "value"})
    val_col = results.column("val", HTER)
    honest = (picked_full if selection == SOURCE_VAL else results.select(narrow, SOURCE_VAL))
    honest = honest[["run_id", val_col]].rename(columns={val_col: "val_objective"})
    out = last.merge(picked, on="run_id", how="left").merge(honest, on="run_id", how="left")
    out["value"] = 100.0 * out["value"].astype(float)
    out["val_objective"] = 100.0 * out["val_objective"].astype(float)
    out["ok"] = out["status"].isin(OK_STATUSES) & np.isfinite(out["value"])
    for c in SETTING_COLUMNS:
        if c not in out:
            out[c] = np.nan
    # Rounded so float noise does not split a setting; NaN (a column older stores lack) -> -1 so
    # that it equals itself (every real value here is >= 0).
    vals = out[list(SETTING_COLUMNS)].astype(float).round(9).fillna(-1.0)
    out["setting"] = list(vals.itertuples(index=False, name=None))
    out["run_id"] = out["run_id"].astype(str)
    return out.reset_index(drop=True)


def method_order(methods) -> list[str]:
    known = [m for m in METHOD_ORDER if m in set(methods)]
    return known + sorted(set(methods) - set(METHOD_ORDER))


def protocol_order(protocols) -> list[str]:
    canon = [*LEAVE_ONE_OUT, *(p for p in PROTOCOLS if p not in LEAVE_ONE_OUT)]
    known = [p for p in canon if p in set(protocols)]
    return known + sorted(set(protocols) - set(canon))


def choose_settings(runs: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """Each method's chosen setting's runs, and how many settings each method had."""
    if runs.empty:
        return runs, {}
    per = (runs.assign(ok_objective=runs["val_objective"].where(runs["ok"]))
           .groupby(["method", "setting"], sort=False)
           .agg(n_ok=("ok", "sum"), objective=("ok_objective", "mean"))
           .reset_index())
    per["objective"] = per["objective"].fillna(np.inf)
    best = (per.sort_values(["method", "n_ok", "objective"], ascending=[True, False, True])
            .groupby("method").head(1))
    keep = set(zip(best["method"], best["setting"], strict=True))
    mask = [(m, s) in keep for m, s in zip(runs["method"], runs["setting"], strict=True)]
    counts = per.groupby("method").size().to_dict()
    return runs[mask].reset_index(drop=True), counts


@dataclass
class Cell:
    """One (method, column) of a table: values of the ok runs, by seed (or (seed, protocol))."""
    values: dict = field(default_factory=dict)  # pairing key -> value (percent)
    expected: int = 0
    counts: dict = field(default_factory=dict)  # failed/diverged/running/missing -> n

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else float("nan")

    @property
    def std(self) -> float:
        v = list(self.values.values())
        return float(np.std(v, ddof=1)) if len(v) >= 2 else float("nan")


@dataclass
class Grid:
    """Cells for methods x (protocols + Avg) from one store under one rule set."""
    methods: list[str]
    protocols: list[str]
    seeds: list
    cells: dict  # (method, column) -> Cell
    settings_per_method: dict[str, int]
    duplicates: int
    data: str | None


def grid(runs: pd.DataFrame) -> Grid:
    """Cells of each method's chosen setting; the Avg column averages each seed over protocols
    (only seeds with an ok run on every protocol) and pairs by seed; protocol cells pair by seed."""
    chosen, nsettings = choose_settings(runs)
    # The same (method, protocol, seed) twice in one setting (e.g. a sensitivity grid repeating
    # the base point): keep one, the ok one first, and say how many were set aside.
    chosen = chosen.sort_values(["ok", "run_id"], ascending=[False, True])
    dedup = chosen.drop_duplicates(["method", "protocol", "seed"])
    methods = method_order(dedup["method"].unique())
    protocols = protocol_order(dedup["protocol"].unique())
    seeds = sorted(dedup["seed"].unique().tolist())
    cells = {}
    for m in methods:
        mine = dedup[dedup["method"] == m]
        for p in protocols:
            here = mine[mine["protocol"] == p]
            c = Cell(expected=len(seeds))
            ok = here[here["ok"]]
            c.values = dict(zip(ok["seed"].tolist(), ok["value"].tolist(), strict=True))
            for st in NOT_OK_STATUSES:
                c.counts[st] = int((~here["ok"] & (here["status"] == st)).sum())
            # completed/stopped_early with no finite epoch: every epoch NaN
            c.counts["no finite epoch"] = int((~here["ok"] & here["status"].isin(OK_STATUSES)).sum())
            c.counts["missing"] = len(seeds) - len(here)
            cells[m, p] = c
        avg = Cell(expected=len(seeds))
        for s in seeds:
            vals = [cells[m, p].values.get(s) for p in protocols]
            if all(v is not None for v in vals):
                avg.values[s] = float(np.mean(vals))
        cells[m, AVG] = avg
    data = None
    if "data" in runs and runs["data"].notna().any():
        data = str(runs["data"].dropna().iloc[0])
    return Grid(methods, protocols, seeds, cells, nsettings, len(chosen) - len(dedup), data)


def pairs(g: Grid, a: str, b: str, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Paired values of methods ``a`` and ``b`` in a column: by seed in a protocol column, by
    (seed, protocol) in the Avg column (every protocol's runs, as independent pairs)."""
    cols = g.protocols if column == AVG else [column]
    xa, xb = [], []
    for p in cols:
        ca, cb = g.cells.get((a, p)), g.cells.get((b, p))
        if ca is None or cb is None:
            continue
        for s in sorted(set(ca.values) & set(cb.values)):
            xa.append(ca.values[s])
            xb.append(cb.values[s])
    return np.asarray(xa, float), np.asarray(xb, float)
