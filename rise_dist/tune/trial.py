"""One Tune trial of any of the project's commands, and the clean-up after a Tune run.

A command's trainable turns its trial config into validated ``TrainConfig``s (one per protocol
the trial trains: every protocol for a sweep trial, one for an ablation trial) and hands them to
``run``, which trains them in lockstep and reports to Tune after each epoch
(``worker.trial_metrics``), with a checkpoint recording the epoch so a restored trial reports no
epoch twice. A trial whose runs raise records them ``failed`` with the reason and re-raises, so
Tune records the error and the other trials go on. ``reconcile`` gives the runs of trials Tune
stopped or killed (the trainable could not) their final status.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from rise_dist import results
from rise_dist.config import TrainConfig
from rise_dist.train import worker
from rise_dist.tune.ray_setup import TuneSettings


def run(cfgs: list[TrainConfig], s: TuneSettings) -> None:
    """Train ``cfgs`` as the current Tune trial: in this process (one CPU worker, no GPU), or as
    a Ray Train driver (``worker.fit_trial``)."""
    import ray
    import ray.tune
    import torch

    ctx = ray.tune.get_context()
    trial_id, number = ctx.get_trial_id(), worker.trial_number(ctx.get_trial_dir())
    if s.data_root:
        os.environ["RISE_DIST_DATA"] = s.data_root
    if s.uses_train:
        worker.fit_trial(cfgs, out_dir=s.out, trial_id=trial_id, objective=s.objective,
                         num_workers=s.workers_per_trial, gpus_per_worker=s.gpus_per_worker,
                         storage_path=s.storage, max_failures=s.train_max_failures,
                         fail_trial=s.fail_trial, data_root=s.data_root,
                         trial_number=number)
        return
    torch.set_num_threads(max(1, s.cpus_per_trial))
    reported = worker.read_epoch(ray.tune.get_checkpoint())
    runs: list = []
    try:
        runs = worker.open_runs(cfgs, s.out, trial_id, device="cpu")
        for epoch, _diverged in worker.lockstep(runs, reported):
            metrics = worker.trial_metrics(runs, epoch, s.objective)
            metrics["node_id"] = ray.get_runtime_context().get_node_id()
            worker.injected_failure(number, s.fail_trial, epoch)
            with tempfile.TemporaryDirectory() as d:
                worker.write_epoch(d, epoch)
                ray.tune.report(metrics, checkpoint=ray.tune.Checkpoint.from_directory(d))
        worker.finish_runs(runs)
    except Exception as e:
        worker.fail_runs(runs, e)
        raise


def with_resources(fn, s: TuneSettings):
    """``fn(config, settings=...)`` as a Tune trainable with the resources one trial takes."""
    import ray.tune

    fn = ray.tune.with_parameters(fn, settings=asdict(s))
    if s.uses_train:  # the trial is a Train driver: no CPU of its own (notes §0.3)
        return ray.tune.with_resources(fn, {"cpu": 0, "driver_slot": 1})
    return ray.tune.with_resources(fn, {"cpu": s.cpus_per_trial})


def status_of(result, epochs: int) -> str:
    """A finished Tune trial's status in the results store's words."""
    if result.error is not None:
        return "failed"
    it = int((result.metrics or {}).get("training_iteration", 0) or 0)
    return "completed" if it >= epochs else "stopped_early"


def trial_id_of(result) -> str | None:
    """The trial id of a Tune result: from its metrics, else from its directory
    ``<trainable>_<id>_<n>_<tag>`` (a trial that errored before its first report has no
    metrics to carry it)."""
    tid = (result.metrics or {}).get("trial_id")
    if tid:
        return tid
    parts = Path(str(result.path)).name.split("_")
    return parts[1] if len(parts) > 1 else None


def reconcile(s: TuneSettings, grid) -> None:
    """Give every run still marked ``running`` its trial's final status (the trainable cannot
    do it for a trial that Tune stopped or killed)."""
    by_trial = {trial_id_of(r): r for r in grid}
    root = Path(s.out) / results.RESULTS_SUBDIR
    if not root.exists():
        return
    for f in sorted(root.glob("*.parquet")):
        df = pd.read_parquet(f)
        if df.empty or "trial_id" not in df or not (df["status"] == "running").any():
            continue
        r = by_trial.get(df["trial_id"].iloc[0])
        if r is None:
            continue
        status = status_of(r, s.epochs)
        if status == "completed" and int(df["epoch"].max()) < s.epochs:
            status = "stopped_early"
        last = int(df["epoch"].max())
        reason = {"failed": f"trial errored: {str(r.error)[:500]}",
                  "stopped_early": f"trial stopped by Tune (ASHA or a stop rule) after epoch {last}",
                  "completed": ""}[status]
        df["status"], df["status_reason"] = status, reason
        results.write_run(s.out, f.stem, df.to_dict("records"))
