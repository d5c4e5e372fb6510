"""Ray Tune + Optuna sweep of the RiSe loss weights over leave-one-out protocols.

One trial = one point of the search space (``spaces.py``) trained and evaluated on every
protocol given (default: the four leave-one-out ones). Its Runs step in lockstep; after each
epoch the trial reports every protocol's metrics and their mean (``worker.trial_metrics``).
The objective Optuna minimizes is the mean over protocols of the source-validation HTER of each
run's selected epoch (``source_val_hter``); the oracle (``oracle_test_hter``: lowest target test
HTER) is reported beside it and optimized only with ``objective="oracle"``, which every output
then names.

Pieces:
- ``OptunaSearch`` with a seeded ``TPESampler``, ``max_concurrent_trials`` from the resources,
  and ``PartialAwareOptunaSearch``: Ray tells Optuna that a trial ASHA stopped is COMPLETE with
  its last, partial score, which biases TPE towards short trials' noisy numbers. Here such a
  trial (last reported epoch < planned epochs, no error) is told as PRUNED instead, after its
  per-epoch values were reported as intermediate values: exactly what an Optuna pruner would
  have produced, and TPE ranks pruned trials by their intermediate values below complete ones.
- ASHA on the per-epoch report (``training_iteration`` = epoch).
- A trial trains in its own process when it has one CPU worker and no GPU; otherwise it is a
  Ray Train driver (``train/worker.py: fit_trial``) and takes a ``driver_slot`` custom resource
  instead of a CPU (a 2-worker trial on 2 CPUs would otherwise never start).
- Result rows go to the results store under ``out`` with ``trial_id`` and the weights as
  columns. At the end (``reconcile``) runs whose trial was stopped by ASHA get
  ``stopped_early`` and runs of a trial that errored get ``failed`` if the trial itself could not
  record it (a trainable that raises records ``failed`` with the reason before re-raising).
- The Optuna study: the searcher's own study lives in memory inside Tune's searcher state (it
  is pickled with the experiment, so ``Tuner.restore`` brings it back intact). After every
  sweep, also after a resumed one, ``write_study`` rebuilds ``<out>/optuna.db`` (SQLite) from
  Tune's results: every trial with its parameters, per-epoch intermediate values and state
  (COMPLETE, PRUNED for ASHA-stopped, FAIL). ``optuna-dashboard sqlite:///<out>/optuna.db``
  works on it. A live RDB storage inside the searcher was avoided: the searcher is pickled on
  every experiment checkpoint, and a driver killed between asking a trial and checkpointing
  leaves the database and the restored searcher disagreeing.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import optuna

from rise_dist import results
from rise_dist.config import to_dict
from rise_dist.data.protocols import parse_protocols
from rise_dist.metrics import AUC, HTER, ORACLE, SOURCE_VAL, TPR_AT_FPR_1PCT, VAL_THRESHOLD
from rise_dist.train import worker
from rise_dist.tune import spaces, trial
from rise_dist.tune.ray_setup import (
    SMOKE_BATCH,
    SYNTHETIC_SIZES,
    SetupError,
    TuneSettings,
    check_address,
    init_ray,
    open_tuner,
    plan_concurrency,
)
from rise_dist.tune.trial import reconcile

EXPERIMENT = "sweep"
SETTINGS_FILE = "sweep.json"
STUDY_FILE = "optuna.db"
STUDY_NAME = "rise-sweep"
FAIL_ENV = "RISE_DIST_SWEEP_FAIL_TRIAL"

# The name the sweep's callers know for "cannot start as asked" (shared with the ablation).
SweepError = SetupError


@dataclass
class Settings(TuneSettings):
    """Everything a sweep needs, as plain values (saved to ``<out>/sweep.json``; ``--resume``
    reads it back so the restored sweep is the one that was started). The fields every Tune
    command shares are ``TuneSettings``'."""

    EXPERIMENT: ClassVar[str] = EXPERIMENT
    SETTINGS_FILE: ClassVar[str] = SETTINGS_FILE

    trials: int = 8
    seed: int = 0
    space: str = "rise"
    gates: bool = True
    grace_period: int = 1
    reduction_factor: float = 2.0
    asha: bool = True
    stop_after: int | None = None  # test hook: Tune stops every trial after this many epochs

    @property
    def n_trials(self) -> int:
        return self.trials


def the_space(s: Settings) -> dict:
    return spaces.SPACES[s.space](s.gates)


# ------------------------------------------------------------------------------- the trial

def trainable(config: dict, settings: dict) -> None:
    """A Tune function trainable: one trial, every protocol, in lockstep (``trial.run``)."""
    s = Settings(**settings)
    sample = {k: config[k] for k in the_space(s) if k in config}
    trial.run(spaces.configs_for(sample, s.base, s.protocols), s)


def _partial_aware_searcher(space, seed: int, epochs: int, metric: str):
    from ray.tune.search.optuna import OptunaSearch

    class PartialAwareOptunaSearch(OptunaSearch):
        """OptunaSearch that tells Optuna an ASHA-stopped trial is PRUNED (see module doc)."""

        def on_trial_complete(self, trial_id, result=None, error=False):
            if (result and not error and trial_id not in self._completed_trials
                    and int(result.get("training_iteration", epochs)) < epochs):
                ot_trial = self._ot_trials[trial_id]
                try:
                    self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
                except Exception as exc:  # noqa: BLE001 - as Ray's own on_trial_complete
                    print(f"optuna tell(PRUNED) failed for {trial_id}: {exc}", file=sys.stderr)
                self._completed_trials.add(trial_id)
                return
            super().on_trial_complete(trial_id, result, error)

    return PartialAwareOptunaSearch(space=spaces.DefineByRun(space), metric=metric, mode="min",
                                    sampler=optuna.samplers.TPESampler(seed=seed))


def _wrapped_trainable(s: Settings):
    return trial.with_resources(trainable, s)


def build_tuner(s: Settings, callbacks: list | None = None):
    """The Tuner of a fresh sweep; ``callbacks``: extra Tune callbacks (benchmarks use one)."""
    import ray.tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    searcher = _partial_aware_searcher(the_space(s), s.seed, s.epochs, "objective")
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric="objective", mode="min",
                               max_t=s.epochs, grace_period=min(s.grace_period, s.epochs),
                               reduction_factor=s.reduction_factor)
                 if s.asha else FIFOScheduler())
    return ray.tune.Tuner(
        _wrapped_trainable(s),
        tune_config=ray.tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                        num_samples=s.trials, max_concurrent_trials=s.max_concurrent,
                                        # An in-process trial's actor runs the next trial: no new
                                        # worker process importing torch (~8 s a trial here).
                                        # A Train driver's actor is not reused (its worker group
                                        # is torn down with it).
                                        reuse_actors=not s.uses_train,
                                        **({} if s.asha else {"metric": "objective", "mode": "min"})),
        run_config=ray.tune.RunConfig(
            name=EXPERIMENT, storage_path=s.storage, verbose=1,
            stop={"training_iteration": s.stop_after} if s.stop_after else None,
            failure_config=ray.tune.FailureConfig(max_failures=s.trial_max_failures),
            checkpoint_config=ray.tune.CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )


# ----------------------------------------------------------------------- after the sweep

_status_of = trial.status_of


def write_study(s: Settings, grid) -> Path:
    """Rebuild ``<out>/optuna.db`` from Tune's results (see module doc)."""
    path = Path(s.out).resolve() / STUDY_FILE
    url = f"sqlite:///{path}"
    try:
        optuna.delete_study(study_name=STUDY_NAME, storage=url)
    except KeyError:
        pass
    study = optuna.create_study(study_name=STUDY_NAME, storage=url, direction="minimize")
    study.set_user_attr("objective", worker.OBJECTIVES[s.objective])
    study.set_user_attr("protocols", list(s.protocols))
    study.set_user_attr("epochs", s.epochs)
    space = the_space(s)
    for r in sorted(grid, key=lambda r: str((r.metrics or {}).get("trial_id", r.path))):
        cfg = r.config or {}
        params = {k: cfg[k] for k in space if k in cfg}  # a gated-off weight is absent
        if not params:
            continue
        m = r.metrics or {}
        inter = {}
        df = r.metrics_dataframe
        if df is not None and "objective" in df:
            for it, v in zip(df["training_iteration"], df["objective"], strict=True):
                if _finite(v):
                    inter[int(it)] = float(v)
        status = _status_of(r, s.epochs)
        state = {"completed": optuna.trial.TrialState.COMPLETE,
                 "stopped_early": optuna.trial.TrialState.PRUNED,
                 "failed": optuna.trial.TrialState.FAIL}[status]
        value = m.get("objective") if state == optuna.trial.TrialState.COMPLETE else None
        if state == optuna.trial.TrialState.COMPLETE and not _finite(value):
            state, value = optuna.trial.TrialState.FAIL, None
        attrs = {"tune_trial_id": m.get("trial_id"), "objective_name": worker.OBJECTIVES[s.objective]}
        for k in ("source_val_hter", "source_val_test_hter", "oracle_test_hter"):
            if _finite(m.get(k)):
                attrs[k] = float(m[k])
        if r.error is not None:
            attrs["error"] = str(r.error)[:500]
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: space[k] for k in params}, value=value, state=state,
            intermediate_values=inter, user_attrs=attrs))
    return path


def _finite(v) -> bool:
    return worker.finite_or_none(v) is not None


def summarize(s: Settings, grid) -> dict:
    """The best trial (lowest objective among those that ran every epoch; if none did, among
    all that reported) with its weights and per-protocol table from the results store."""
    done = [r for r in grid if r.error is None and _status_of(r, s.epochs) == "completed"
            and _finite((r.metrics or {}).get("objective"))]
    pool = done or [r for r in grid if _finite((r.metrics or {}).get("objective"))]
    counts = {st: sum(_status_of(r, s.epochs) == st for r in grid)
              for st in ("completed", "stopped_early", "failed")}
    out = {"trials": len(grid), "counts": counts, "best": None}
    if not pool:
        return out
    best = min(pool, key=lambda r: r.metrics["objective"])
    m = best.metrics
    tid = m["trial_id"]
    df = results.load(s.out)
    df = df[df["trial_id"] == tid]
    table = []
    for rule in (SOURCE_VAL, ORACLE):
        for _, row in results.select(df, rule).iterrows():
            table.append({"selection": rule, "protocol": row["protocol"], "epoch": int(row["epoch"]),
                          "val_hter": row[results.column("val", HTER)],
                          "test_hter": row[results.column("test", HTER)],
                          "test_auc": row[results.column("test", AUC)],
                          "test_tpr_at_fpr_1pct": row[results.column("test", TPR_AT_FPR_1PCT)],
                          "test_hter@val_threshold": row[results.column("test", HTER, VAL_THRESHOLD)]})
    sample = {k: best.config[k] for k in the_space(s) if k in best.config}
    out["best"] = {"trial_id": tid, "weights": spaces.flat_weights(sample),
                   "objective": m["objective"], "objective_name": m.get("objective_name"),
                   "source_val_hter": m.get("source_val_hter"),
                   "oracle_test_hter": m.get("oracle_test_hter"),
                   "complete": bool(done), "table": table}
    out["world_size"] = int(m.get("world_size", 1))
    return out


def format_summary(s: Settings, summary: dict, study_path: Path) -> str:
    obj = worker.OBJECTIVES[s.objective]
    counts = ", ".join(f"{v} {k}" for k, v in summary["counts"].items())
    lines = [f"sweep: {summary['trials']} trials ({counts}); "
             f"protocols {','.join(s.protocols)}; objective {obj} (mean over protocols, minimized)"
             + ("  [ORACLE: selected on the target test set, an optimistic upper bound]"
                if s.objective == ORACLE else "")]
    b = summary["best"]
    if b is None:
        lines.append("no trial reported a score")
    else:
        w = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                      for k, v in sorted(b["weights"].items()))
        lines.append(f"best trial {b['trial_id']}{'' if b['complete'] else ' (no trial ran every epoch)'}: "
                     f"{obj} {100 * b['objective']:.2f}%  (mean source-val HTER "
                     f"{100 * b['source_val_hter']:.2f}%, oracle mean test HTER "
                     f"{100 * b['oracle_test_hter']:.2f}%)")
        lines.append(f"  weights: {w}")
        lines.append(f"  {'selection':<10} {'protocol':<8} {'epoch':>5} {'val HTER':>9} {'test HTER':>10} "
                     f"{'AUC':>7} {'TPR@1%':>7} {'HTER@val_thr':>12}")
        for t in b["table"]:
            lines.append(f"  {t['selection']:<10} {t['protocol']:<8} {t['epoch']:>5} "
                         f"{100 * t['val_hter']:>8.2f}% {100 * t['test_hter']:>9.2f}% "
                         f"{100 * t['test_auc']:>6.2f}% {100 * t['test_tpr_at_fpr_1pct']:>6.2f}% "
                         f"{100 * t['test_hter@val_threshold']:>11.2f}%")
        for rule in (SOURCE_VAL, ORACLE):
            rows = [t for t in b["table"] if t["selection"] == rule]
            if rows:
                mean = sum(t["test_hter"] for t in rows) / len(rows)
                lines.append(f"  mean test HTER, {rule} selection: {100 * mean:.2f}%")
    lines.append(f"results store: {Path(s.out).resolve()}  (rise_dist.results.load)")
    lines.append(f"Optuna study:  {study_path}  (optuna-dashboard sqlite:///{study_path}, "
                 f"study {STUDY_NAME!r})")
    lines.append(f"Tune experiment: {s.experiment_path}  (resume with --resume --out {s.out})")
    return "\n".join(lines)


def run_sweep(s: Settings, *, resume: bool = False, address: str | None = None,
              num_cpus: int | None = None, callbacks: list | None = None) -> dict:
    """Start or resume a sweep; return the summary (also printed). ``callbacks``: extra Tune
    callbacks of a fresh sweep (a restored one keeps its saved run config)."""
    import ray

    t0 = time.perf_counter()
    init_ray(s, address, num_cpus)
    try:
        tuner = open_tuner(s, resume, _wrapped_trainable(s), lambda: build_tuner(s, callbacks),
                           "a sweep")
        grid = tuner.fit()
        trials = list(grid)
        reconcile(s, trials)
        study_path = write_study(s, trials)
        summary = summarize(s, trials)
        summary["wall_s"] = time.perf_counter() - t0
        print(format_summary(s, summary, study_path), flush=True)
        print(f"wall time {summary['wall_s']:.1f}s", flush=True)
        return summary
    finally:
        ray.shutdown()


def protocols_of(spec: str) -> list[str]:
    return [p.name for p in parse_protocols(spec)]


def base_from(epochs: int, seed: int, backbone: str | None, data: str, synthetic: dict | None,
              batch_size: int | None = None) -> dict:
    base: dict = {"epochs": epochs, "seed": seed, "data": data}
    if backbone:
        base["model"] = {"backbone": backbone}
    if synthetic:
        base["synthetic"] = synthetic
    if batch_size:
        base["batch_size"] = batch_size
    # validated once here, so a bad flag fails before Ray starts
    spaces.configs_for({}, base, ["CPS_W"])
    return base


def base_from_args(args, epochs: int) -> dict:
    """The fixed TrainConfig fields that a Tune command's flags give (``--seed``, ``--backbone``,
    ``--data``, ``--synthetic``, ``--smoke``, ``--no-amp``); shared by the sweep and the ablation."""
    size = "smoke" if args.smoke else args.synthetic or ("default" if args.cluster else "small")
    synthetic = None if size == "default" else to_dict(SYNTHETIC_SIZES[size])
    base = base_from(epochs, args.seed, args.backbone, args.data, synthetic,
                     SMOKE_BATCH if args.smoke else None)
    if args.smoke or args.no_amp:
        base["amp"] = False
    return base


__all__ = ["Settings", "SweepError", "run_sweep", "build_tuner", "reconcile", "write_study",
           "summarize", "to_dict", "check_address", "init_ray", "plan_concurrency"]
