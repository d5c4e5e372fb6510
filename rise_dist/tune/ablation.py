"""Ablations on Ray Tune: the grid method x protocol x seed, or one weight's values x protocol x
seed, with the loss weights a sweep found or given ones.

Conventions:
- One Tune trial = one run: one method (or one value of the swept weight), one protocol, one
  seed. The grid is Tune's ``BasicVariantGenerator`` over ``tune.grid_search`` axes (no Optuna,
  no ASHA: an ablation runs every trial to its last epoch), so it spreads over every CPU.
- The chosen weights (``Weights``) are the point RiSe runs at: ``lambda_asyirm`` = λa*,
  ``lambda_mmsd`` = λm*, and the sweep's other searched values (``asyirm.margin``,
  ``asyirm.warmup_epochs``, ``mmsd.temperature``, ``lr``) when known. They come from a
  weights file, from the best trial of a sweep (``best_of``), or from
  ``rise_dist.config.METHOD_WEIGHTS``; where each value came from is printed and saved in
  ``<out>/ablation.json``.
- Methods are which terms are on: erm = (0, 0), asyirm = (λa*, 0), mmsd = (0, λm*), rise =
  (λa*, λm*); every other value is the chosen one for all methods, so they differ only in the
  terms. A chosen weight of 0 (a sweep whose best trial turned a term off) cannot stand for its
  term: the ``METHOD_WEIGHTS`` value replaces it, and the source says so.
- ``sensitivity``: instead of the methods, the values of one numeric TrainConfig field (flat
  name as in the results store, e.g. ``lambda_asyirm``), every other value at the chosen point.
- Seed s of the grid (0-based) trains with ``TrainConfig.seed = seed + s``.
- Every epoch of every run is a row of the results store under ``out`` (``trial_id``, ``method``,
  ``seed``, ``protocol``, the weights and every config field), as in the sweep; a failing trial's
  runs are ``failed`` with the reason and the grid goes on; ``--resume`` restores the Tune
  experiment (``Tuner.restore``) and no epoch is trained or written twice.
- The summary: test HTER (%) mean ± std over seeds of each (method or value, protocol) at the
  epoch the ``source_val`` rule selects, from completed runs only; a cell with fewer runs than
  seeds says how many it has.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from rise_dist import results
from rise_dist.config import METHOD_WEIGHTS, METHODS, ConfigError, TrainConfig, to_dict
from rise_dist.metrics import HTER, SOURCE_VAL
from rise_dist.tune import spaces, trial
from rise_dist.tune.ray_setup import TuneSettings, init_ray, open_tuner

EXPERIMENT = "ablation"
SETTINGS_FILE = "ablation.json"
FAIL_ENV = "RISE_DIST_ABLATION_FAIL_TRIAL"
BEST_OF = "best-of:"
DEFAULTS = "rise_dist.config.METHOD_WEIGHTS"
# The values a weights file or a sweep's best trial may give: the sweep's searched names.
WEIGHT_NAMES = tuple(spaces.search_space(gates=False))
# Each term's weight, and its METHOD_WEIGHTS value (the method that has only that term).
TERM_WEIGHTS = {"asyirm": ("lambda_asyirm", METHOD_WEIGHTS["asyirm"][0]),
                "mmsd": ("lambda_mmsd", METHOD_WEIGHTS["mmsd"][1])}
METHOD_TERMS = {"erm": (), "asyirm": ("asyirm",), "mmsd": ("mmsd",), "rise": ("asyirm", "mmsd")}
# Grid axes or run settings, not values to sweep.
NOT_SWEEPABLE = ("protocol", "seed", "epochs", "data")
TEST_HTER, VAL_HTER = results.column("test", HTER), results.column("val", HTER)


# ------------------------------------------------------------------------- choosing weights

@dataclass(frozen=True)
class Weights:
    """The chosen point: flat names -> values, and where each value came from."""

    values: dict
    sources: dict


def read_weights_file(path: Path) -> dict:
    """A YAML or JSON mapping of flat names (``WEIGHT_NAMES``, gates ``use_asyirm`` /
    ``use_mmsd`` allowed and applied) to numbers."""
    try:
        d = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ConfigError(f"--weights {path}: cannot read it: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"--weights {path}: not YAML/JSON: {str(e).splitlines()[0]}") from e
    if not isinstance(d, dict) or not d:
        raise ConfigError(f"--weights {path}: must be a mapping of names to values, e.g. "
                          "{lambda_asyirm: 1.0, lambda_mmsd: 0.1}")
    gates = set(spaces.GATES.values())
    for k, v in d.items():
        if k not in WEIGHT_NAMES and k not in gates:
            raise ConfigError(f"--weights {path}: unknown name {k!r}; known: "
                              f"{', '.join(WEIGHT_NAMES + tuple(sorted(gates)))}")
        if k in gates and not isinstance(v, bool):
            raise ConfigError(f"--weights {path}: {k} = {v!r} must be true or false")
        if k not in gates and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ConfigError(f"--weights {path}: {k} = {v!r} is not a number")
    return spaces.flat_weights(d)


def best_of(sweep_dir) -> tuple[dict, str]:
    """The searched values of a sweep's best trial, and a description of it.

    Best = lowest mean over protocols of the ``source_val``-selected val HTER, among trials
    whose runs all completed every epoch (ties: the smaller trial id). The values are read from
    the rows, which hold what was trained (gates applied)."""
    sweep_dir = Path(sweep_dir)
    try:
        df = results.load(sweep_dir)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"--weights {BEST_OF}{sweep_dir}: {e}") from e
    if df.empty or "trial_id" not in df or df["trial_id"].isna().all():
        raise ConfigError(f"--weights {BEST_OF}{sweep_dir}: no sweep trials in that results store")
    scored = []
    for tid, g in df.dropna(subset=["trial_id"]).groupby("trial_id"):
        last = g.sort_values("epoch").groupby("run_id").tail(1)
        if not ((last["status"] == "completed") & (last["epoch"] >= last["epochs"])).all():
            continue
        sel = results.select(g, SOURCE_VAL)
        if len(sel) != g["run_id"].nunique():
            continue
        scored.append((float(sel[VAL_HTER].mean()), str(tid), g))
    if not scored:
        raise ConfigError(f"--weights {BEST_OF}{sweep_dir}: no trial of that sweep completed "
                          "every epoch of every run")
    score, tid, g = min(scored, key=lambda t: (t[0], t[1]))
    row = g.iloc[0]
    # The config as trained: the ``lr`` column is the schedule's rate after the epoch, not the
    # configured one (docs/results.md); stores without a ``config`` column give columns only.
    trained = results.flatten(json.loads(row["config"])) if "config" in g else {}
    values = {k: _plain(trained.get(k, row.get(k))) for k in WEIGHT_NAMES if k in trained or k in g}
    protocols = ",".join(sorted(g["protocol"].unique()))
    return values, (f"{BEST_OF}{sweep_dir} (trial {tid} of {len(scored)} complete, mean source_val "
                    f"val HTER {100 * score:.2f}% over {protocols})")


def _plain(v):
    """numpy scalars (from pandas) as plain Python values (settings go to JSON)."""
    return v.item() if hasattr(v, "item") else v


def choose_weights(spec: str | None) -> Weights:
    """The chosen point from ``--weights`` (None: METHOD_WEIGHTS; ``best-of:DIR``; a file).
    A term whose chosen weight is missing or 0 gets its METHOD_WEIGHTS value (module doc)."""
    if spec is None:
        values, origin = {}, DEFAULTS
    elif spec.startswith(BEST_OF):
        values, origin = best_of(spec[len(BEST_OF):])
    else:
        values, origin = read_weights_file(Path(spec)), str(Path(spec).resolve())
    sources = {k: origin for k in values}
    for term, (name, default) in TERM_WEIGHTS.items():
        if name in values and values[name] == 0:  # a negative one fails TrainConfig's check
            sources[name] = (f"{DEFAULTS} ({origin} has {name} = 0, which cannot stand for "
                             f"{term}: its default is used)")
        elif name not in values:
            sources[name] = DEFAULTS
        else:
            continue
        values[name] = default
    for k in values:
        if k == "asyirm.warmup_epochs":
            values[k] = int(values[k])
    return Weights(values, sources)


def parse_sensitivity(spec: str) -> tuple[str, list]:
    """``NAME=v1,v2,...`` -> (NAME, values typed as the TrainConfig field: int or float)."""
    name, eq, vals = spec.partition("=")
    name = name.strip()
    if not eq or not name:
        raise ConfigError(f"--sensitivity {spec!r}: expected NAME=v1,v2,... e.g. "
                          "lambda_asyirm=0,0.01,0.1,1")
    flat = results.flatten(to_dict(TrainConfig()))
    if name not in flat:
        raise ConfigError(f"--sensitivity {name}: not a TrainConfig field; flat names as in the "
                          f"results store, e.g. {', '.join(WEIGHT_NAMES)}")
    default = flat[name]
    if name in NOT_SWEEPABLE or isinstance(default, bool) or not isinstance(default, (int, float)):
        raise ConfigError(f"--sensitivity {name}: not a numeric value to sweep (protocol and seed "
                          "are grid axes already)")
    kind = int if isinstance(default, int) else float
    out = []
    for v in (x.strip() for x in vals.split(",")):
        try:
            out.append(kind(v))
        except ValueError:
            raise ConfigError(f"--sensitivity {name}: {v!r} is not {'an int' if kind is int else 'a number'}"
                              ) from None
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"--sensitivity {name}: give distinct values, e.g. {name}=0,0.1,1")
    return name, out


# ---------------------------------------------------------------------------------- settings

@dataclass
class Settings(TuneSettings):
    """Everything an ablation needs, as plain values (saved to ``<out>/ablation.json``;
    ``--resume`` reads it back). ``weights``/``weight_sources``: the chosen point
    (``Weights``). ``sensitivity``/``values``: the swept field and its values (None: the
    ``methods`` grid). ``seed``: the first seed; ``seeds``: how many."""

    EXPERIMENT: ClassVar[str] = EXPERIMENT
    SETTINGS_FILE: ClassVar[str] = SETTINGS_FILE

    methods: list[str] = field(default_factory=lambda: list(METHODS))
    seeds: int = 3
    seed: int = 0
    weights: dict = field(default_factory=dict)
    weight_sources: dict = field(default_factory=dict)
    sensitivity: str | None = None
    values: list = field(default_factory=list)

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"ablation methods {self.methods}: give distinct methods among "
                              f"{', '.join(METHODS)}" + (f" (unknown: {unknown})" if unknown else ""))
        if not (isinstance(self.seeds, int) and self.seeds >= 1):
            raise ConfigError(f"ablation seeds = {self.seeds!r}: must be an int >= 1")
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ConfigError(f"ablation seed = {self.seed!r}: must be an int >= 0")
        if self.sensitivity is not None and not self.values:
            raise ConfigError(f"ablation sensitivity {self.sensitivity}: no values")
        for key in self.keys:  # every grid point is a valid TrainConfig, before Ray starts
            spaces.configs_for(self.point(key), self.base, self.protocols[:1])

    @property
    def axis(self) -> str:
        """The grid's first axis: ``method`` or the swept field's name."""
        return self.sensitivity or "method"

    @property
    def keys(self) -> list:
        return list(self.values) if self.sensitivity else list(self.methods)

    @property
    def seed_list(self) -> list[int]:
        return [self.seed + s for s in range(self.seeds)]

    @property
    def n_trials(self) -> int:
        return len(self.keys) * len(self.protocols) * self.seeds

    def point(self, key) -> dict:
        """The flat values one method (or one value of the swept field) trains with."""
        p = dict(self.weights)
        if self.sensitivity:
            p[self.sensitivity] = key
            return p
        for term, (name, _) in TERM_WEIGHTS.items():
            if term not in METHOD_TERMS[key]:
                p[name] = 0.0
        return p

    def config_for(self, trial_config: dict) -> TrainConfig:
        """The TrainConfig of one trial of the grid (``param_space``)."""
        base = {**self.base, "seed": int(trial_config["seed"])}
        return spaces.configs_for(self.point(trial_config[self.axis]), base,
                                  [trial_config["protocol"]])[0]

    def param_space(self) -> dict:
        from ray import tune

        return {self.axis: tune.grid_search(self.keys),
                "protocol": tune.grid_search(list(self.protocols)),
                "seed": tune.grid_search(self.seed_list)}


# ---------------------------------------------------------------------------------- the grid

def trainable(config: dict, settings: dict) -> None:
    """A Tune function trainable: one run of the grid (``trial.run`` with one config)."""
    s = Settings(**settings)
    trial.run([s.config_for(config)], s)


def build_tuner(s: Settings):
    import ray.tune

    return ray.tune.Tuner(
        trial.with_resources(trainable, s),
        param_space=s.param_space(),
        tune_config=ray.tune.TuneConfig(num_samples=1, max_concurrent_trials=s.max_concurrent,
                                        # An in-process trial's actor runs the next trial, so the
                                        # worker start-up (torch import) is paid once per slot:
                                        # the 16-trial smoke grid took 127 s without, 38 s with.
                                        # A Train driver's actor is not reused (its worker group
                                        # is torn down with it).
                                        reuse_actors=not s.uses_train),
        run_config=ray.tune.RunConfig(
            name=EXPERIMENT, storage_path=s.storage, verbose=1,
            failure_config=ray.tune.FailureConfig(max_failures=s.trial_max_failures),
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=2)),
    )


def describe(s: Settings) -> str:
    lines = [f"ablation: {s.axis} {','.join(map(str, s.keys))} x protocols {','.join(s.protocols)} x "
             f"seeds {','.join(map(str, s.seed_list))} = {s.n_trials} trials, {s.epochs} epochs"]
    lines.append("chosen weights:")
    by_source: dict[str, list[str]] = {}
    for k in sorted(s.weights):
        by_source.setdefault(s.weight_sources.get(k, "?"), []).append(f"{k}={s.weights[k]:g}")
    for source, items in by_source.items():
        lines.append(f"  {', '.join(items)}  from {source}")
    if not s.sensitivity:
        for m in s.methods:
            p = s.point(m)
            lines.append(f"  {m:<7} lambda_asyirm = {p['lambda_asyirm']:g}, lambda_mmsd = {p['lambda_mmsd']:g}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- the summary

def summarize(s: Settings) -> dict:
    """Per (method or value, protocol): the selected test HTERs of the completed runs, and how
    many runs of the cell completed, failed or did neither."""
    df = results.load(s.out)
    cells: dict = {}
    counts = {"completed": 0, "failed": 0, "other": 0}
    if df.empty:
        return {"cells": cells, "counts": counts}
    last = df.sort_values("epoch").groupby("run_id").tail(1)
    done = set(last.loc[last["status"] == "completed", "run_id"])
    sel = results.select(df[df["run_id"].isin(done)], SOURCE_VAL).set_index("run_id")
    for _, r in last.iterrows():
        key = (_plain(r[s.axis]), r["protocol"])
        c = cells.setdefault(key, {"test_hter": [], "failed": 0, "other": 0})
        if r["run_id"] in sel.index:
            c["test_hter"].append(float(sel.loc[r["run_id"], TEST_HTER]))
            counts["completed"] += 1
        elif r["status"] == "failed":
            c["failed"] += 1
            counts["failed"] += 1
        else:
            c["other"] += 1
            counts["other"] += 1
    return {"cells": cells, "counts": counts}


def _mean_std(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0
    return m, sd


def format_summary(s: Settings, summary: dict) -> str:
    c = summary["counts"]
    lines = [f"ablation: {s.n_trials} trials planned; runs {c['completed']} completed, "
             f"{c['failed']} failed" + (f", {c['other']} neither" if c["other"] else ""),
             f"test HTER (%), mean ± std over {s.seeds} seed(s), epoch selected by {SOURCE_VAL} "
             f"(lowest sources' val HTER); 'avg' = mean over protocols"]
    width = 15
    lines.append(f"  {s.axis:<14}" + "".join(f"{p:>{width}}" for p in s.protocols) + f"{'avg':>{width}}")
    for key in s.keys:
        row, means = [], []
        for p in s.protocols:
            cell = summary["cells"].get((key, p), {"test_hter": [], "failed": 0, "other": 0})
            xs = cell["test_hter"]
            if not xs:
                row.append("failed" if cell["failed"] else "missing")
                continue
            m, sd = _mean_std([100 * x for x in xs])
            means.append(m)
            text = f"{m:.2f}±{sd:.2f}" if len(xs) > 1 else f"{m:.2f}"
            row.append(text + (f" ({len(xs)}/{s.seeds})" if len(xs) < s.seeds else ""))
        avg = f"{sum(means) / len(means):.2f}" if len(means) == len(s.protocols) else "-"
        label = f"{key:g}" if isinstance(key, float) else str(key)
        lines.append(f"  {label:<14}" + "".join(f"{t:>{width}}" for t in row) + f"{avg:>{width}}")
    lines.append(f"results store: {Path(s.out).resolve()}  (rise_dist.results.load)")
    lines.append(f"settings: {Path(s.out).resolve() / SETTINGS_FILE}")
    lines.append(f"Tune experiment: {s.experiment_path}  (resume with --resume --out {s.out})")
    return "\n".join(lines)


def run_ablation(s: Settings, *, resume: bool = False, address: str | None = None,
                 num_cpus: int | None = None) -> dict:
    """Start or resume an ablation; return the summary (also printed)."""
    import ray

    t0 = time.perf_counter()
    print(describe(s), flush=True)
    init_ray(s, address, num_cpus)
    try:
        tuner = open_tuner(s, resume, trial.with_resources(trainable, s), lambda: build_tuner(s),
                           "an ablation")
        grid = list(tuner.fit())
        trial.reconcile(s, grid)
        summary = summarize(s)
        summary["trials"] = len(grid)
        summary["errors"] = sum(r.error is not None for r in grid)
        summary["wall_s"] = time.perf_counter() - t0
        print(format_summary(s, summary), flush=True)
        print(f"wall time {summary['wall_s']:.1f}s", flush=True)
        return summary
    finally:
        ray.shutdown()
