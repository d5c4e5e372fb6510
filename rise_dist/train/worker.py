"""The one place the plain loop (``train/loop.py``) meets Ray Train; also the lockstep trial logic
that a sweep trial uses in its own process (``tune/sweep.py``).

A sweep trial trains one weight setting on several protocols: it opens one ``Run`` per protocol
and steps them in lockstep (one epoch of each), then reports each protocol's metrics and their
mean (``trial_metrics``). Two ways to run that:

- in the trial's own process (one CPU worker, no GPU: ``tune/sweep.py`` calls ``lockstep``
  directly; launching a Ray Train worker group costs ~30 s per trial on a laptop);
- on a Ray Train worker group (``fit_trial``): a ``TorchTrainer`` with ``num_workers`` DDP
  ranks, each running every protocol's ``Run`` with its rank and world size, so each rank trains
  on its own shard of every global batch. Gradients of the model *and* of the Objective's own
  parameters (the AsyIRM radius R, the heads, which live outside the model) are averaged over
  ranks after every backward pass (``GradSync``: what DDP does, done by hand so the Objective's
  parameters are included and no parameter can be missed), and the loss's finiteness is agreed
  on by all ranks so a diverged run stops every rank together. Rank 0 writes the results store
  rows, the run checkpoints, and reports ``ray.train.report(metrics, checkpoint)`` every epoch;
  ``TuneReportCallback`` forwards rank 0's metrics to the Tune trial. ``FailureConfig``
  restarts a lost worker group; the restarted ranks reopen their Runs with ``resume=True``
  (each Run reads its own checkpoint under the results directory, which every node must see)
  and ``ray.train.get_checkpoint()`` says which epochs Tune has already seen.

Ray is imported lazily, so ``lockstep``/``trial_metrics`` work without it.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import torch

from rise_dist import results
from rise_dist.config import TrainConfig
from rise_dist.metrics import AUC, HTER, ORACLE, SOURCE_VAL, TPR_AT_FPR_1PCT, VAL_THRESHOLD
from rise_dist.train.loop import Run

# What a trial reports instead of NaN (Optuna's tell() fails on NaN): HTER 1.0 is worse than any
# classifier can do by chance (0.5), so a diverged trial is clearly bad but still finite.
BAD_SCORE = 1.0
OBJECTIVES = {SOURCE_VAL: "source_val_hter", ORACLE: "oracle_test_hter"}
EPOCH_FILE = "trial_epoch.json"


class GradSync:
    """Averages gradients over the ranks of the default torch.distributed process group.

    ``average(params)``: all-reduce every gradient (a parameter without one counts as zeros, and
    gets a gradient only if some rank had one, so optimizers skip the same parameters on every
    rank). ``all_finite(loss)``: True only if the loss is finite on every rank.
    """

    def __init__(self, world_size: int, device: torch.device | str = "cpu"):
        import torch.distributed as dist

        self.dist, self.world_size, self.device = dist, world_size, torch.device(device)

    def all_finite(self, loss: torch.Tensor) -> bool:
        bad = torch.tensor([0.0 if bool(torch.isfinite(loss.detach())) else 1.0], device=loss.device)
        self.dist.all_reduce(bad)
        return bad.item() == 0

    def mean_values(self, values: dict[str, float]) -> dict[str, float]:
        """The mean over ranks of each value (same keys on every rank, e.g. loss sums)."""
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.device)
        self.dist.all_reduce(t)
        return {k: v / self.world_size for k, v in zip(keys, t.cpu().tolist(), strict=True)}

    def average(self, params) -> None:
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        dev = params[0].device
        has = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=dev)
        flat = torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1).float()
                          for p in params])
        self.dist.all_reduce(has)
        self.dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p, h in zip(params, has.tolist(), strict=True):
            n = p.numel()
            if h > 0:
                p.grad = flat[offset:offset + n].view_as(p).to(p.dtype).clone()
            offset += n


def open_runs(cfgs: list[TrainConfig], out_dir, trial_id: str, **kw) -> list[Run]:
    """One resumable Run per protocol. ``resume=True`` always: a trial restarted by Tune (driver
    restore, trial retry) or by Train (worker loss) continues each run from its own checkpoint,
    so no epoch is trained or written twice."""
    return [Run(c, Path(out_dir).resolve(), resume=True, trial_id=trial_id, progress=False, **kw)
            for c in cfgs]


def _row_at(run: Run, epoch: int) -> dict:
    for row in run.rows:
        if int(row["epoch"]) == epoch:
            return row
    raise KeyError(f"run {run.run_id} has no row for epoch {epoch}")


def lockstep(runs: list[Run], reported: int = 0) -> Iterator[tuple[int, list[Run]]]:
    """Step ``runs`` one epoch each, in lockstep; yield ``(epoch, diverged)`` for every epoch all
    runs have finished and that is past ``reported`` (epochs already seen by Tune). Runs restored
    at different epochs first catch up to the furthest one. ``diverged`` is the list of runs
    that diverged at that epoch; after a divergence the generator ends."""
    its = [iter(r) for r in runs]
    while True:
        common = min(r.epoch for r in runs)
        diverged = [r for r in runs if r.status == "diverged"]
        for e in range(reported + 1, common + 1):
            yield e, [r for r in diverged if r.epoch == e]
        reported = max(reported, common)
        if diverged or all(r.epoch >= r.cfg.epochs for r in runs):
            return
        for r, it in zip(runs, its, strict=True):
            if r.epoch == common and r.epoch < r.cfg.epochs:
                next(it, None)


def finite_or_none(x) -> float | None:
    """``float(x)`` when it is a finite number, else None (NaN, inf, None, non-numbers)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def trial_metrics(runs: list[Run], epoch: int, objective: str = SOURCE_VAL) -> dict:
    """The per-epoch report of a trial: every protocol's metrics at ``epoch``
    (``"<protocol>/val_hter"`` etc.), their means (``val_hter``, ``test_hter``), the mean over
    protocols of each run's selected epoch so far (``source_val_hter``: the lowest sources' val
    HTER; ``source_val_test_hter``: the test HTER at that epoch; ``oracle_test_hter``: the lowest
    test HTER), and ``objective`` (one of the two, named by ``objective_name``). Never NaN: a
    missing or non-finite value counts as ``BAD_SCORE`` and sets ``diverged``."""
    out: dict = {"epoch": epoch, "objective_name": OBJECTIVES[objective], "diverged": False}
    cols = {"val_hter": results.column("val", HTER), "test_hter": results.column("test", HTER),
            "test_auc": results.column("test", AUC),
            "test_tpr_at_fpr_1pct": results.column("test", TPR_AT_FPR_1PCT),
            "test_hter@val_threshold": results.column("test", HTER, VAL_THRESHOLD)}
    sums: dict[str, list[float]] = {}

    def put(key: str, p: str, value) -> None:
        v = finite_or_none(value)
        if v is None:
            out["diverged"] = True
            v = BAD_SCORE if "auc" not in key and "tpr" not in key else 0.0
        out[f"{p}/{key}"] = v
        sums.setdefault(key, []).append(v)

    for r in runs:
        p = r.cfg.protocol
        row = _row_at(r, epoch)
        for key, col in cols.items():
            put(key, p, row.get(col))
        hist = pd.DataFrame([x for x in r.rows if int(x["epoch"]) <= epoch])
        sv, orc = results.select(hist, SOURCE_VAL), results.select(hist, ORACLE)
        put("source_val_hter", p, sv[cols["val_hter"]].iloc[0] if len(sv) else None)
        put("source_val_test_hter", p, sv[cols["test_hter"]].iloc[0] if len(sv) else None)
        put("oracle_test_hter", p, orc[cols["test_hter"]].iloc[0] if len(orc) else None)
    for key, vals in sums.items():
        out[key] = sum(vals) / len(vals)
    out["objective"] = BAD_SCORE if out["diverged"] else out[OBJECTIVES[objective]]
    return out


def finish_runs(runs: list[Run]) -> None:
    """Close a trial's runs at its normal end: completed, or, when some diverged, the others
    stopped early with the reason."""
    diverged = [r for r in runs if r.status == "diverged"]
    if diverged:
        why = "trial ended: " + ", ".join(f"{r.cfg.protocol} diverged ({r.reason})" for r in diverged)
        for r in runs:
            r.finish("stopped_early" if r.status != "diverged" else "diverged", why)
    else:
        for r in runs:
            r.finish("completed")


def fail_runs(runs: list[Run], exc: BaseException) -> None:
    reason = f"{type(exc).__name__}: {exc}".strip()[:2000]
    for r in runs:
        try:
            r.finish("failed", reason)
        except Exception:  # noqa: BLE001 - recording a failure must not hide the original one
            pass


def trial_number(trial_dir) -> int | None:
    """Tune's 1-based trial counter, from the trial directory ``<trainable>_<id>_<n>_<tag>``."""
    parts = Path(str(trial_dir)).name.split("_")
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        return None


def injected_failure(number: int | None, fail_trial: int | None, epoch: int) -> None:
    """Test hook: a Tune command's ``fail_trial`` setting (env RISE_DIST_SWEEP_FAIL_TRIAL=k for the
    sweep, RISE_DIST_ABLATION_FAIL_TRIAL=k for the ablation) makes
    the k-th trial (Tune's 1-based counter) raise after its first epoch's rows are written."""
    if fail_trial is not None and epoch == 1 and number == fail_trial:
        raise RuntimeError(f"injected failure in trial number {number} (fail_trial test hook)")


def write_epoch(directory, epoch: int) -> None:
    Path(directory, EPOCH_FILE).write_text(json.dumps({"epoch": epoch}))


def read_epoch(checkpoint) -> int:
    """The last epoch a Tune/Train checkpoint of ours records (0 for None)."""
    if checkpoint is None:
        return 0
    with checkpoint.as_directory() as d:
        f = Path(d, EPOCH_FILE)
        return int(json.loads(f.read_text())["epoch"]) if f.exists() else 0


# ---------------------------------------------------------------- Ray Train (DDP worker group)

def _worker_loop(config: dict) -> None:
    """Runs on every Ray Train rank."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    if config.get("data_root"):
        os.environ["RISE_DIST_DATA"] = config["data_root"]
    device = ray.train.torch.get_device()
    sync = GradSync(world, device) if world > 1 else None
    reported = read_epoch(ray.train.get_checkpoint())
    runs: list[Run] = []
    try:
        runs = open_runs(config["cfgs"], config["out"], config["trial_id"], rank=rank,
                         world_size=world, device=device, grad_sync=sync)
        for epoch, _diverged in lockstep(runs, reported):
            metrics = trial_metrics(runs, epoch, config["objective"])
            metrics["world_size"] = world
            metrics["node_id"] = ray.get_runtime_context().get_node_id()
            injected_failure(config.get("trial_number"), config.get("fail_trial"), epoch)
            with tempfile.TemporaryDirectory() as d:
                ckpt = None
                if rank == 0:
                    write_epoch(d, epoch)
                    ckpt = ray.train.Checkpoint.from_directory(d)
                ray.train.report(metrics, checkpoint=ckpt)  # a barrier: every rank, every epoch
        finish_runs(runs)
    except Exception as e:
        fail_runs(runs, e)
        raise


def trainer(cfgs: list[TrainConfig], *, out_dir, trial_id: str, objective: str, num_workers: int,
            gpus_per_worker: float, storage_path: str, max_failures: int = 2,
            fail_trial: int | None = None, data_root: str | None = None,
            trial_number: int | None = None, callbacks: list | None = None):
    """The ``TorchTrainer`` that trains ``cfgs`` (one per protocol) in lockstep on ``num_workers``
    DDP ranks. ``fit_trial`` runs it inside a Tune trial; tests and benchmarks run it bare."""
    import ray.train
    from ray.train.torch import TorchTrainer

    use_gpu = gpus_per_worker > 0
    per_worker = {"CPU": 1, **({"GPU": gpus_per_worker} if use_gpu else {})}
    return TorchTrainer(
        _worker_loop,
        train_loop_config={"cfgs": cfgs, "out": str(Path(out_dir).resolve()), "trial_id": trial_id,
                           "objective": objective, "fail_trial": fail_trial,
                           "trial_number": trial_number,
                           "data_root": data_root},
        scaling_config=ray.train.ScalingConfig(num_workers=num_workers, use_gpu=use_gpu,
                                               resources_per_worker=per_worker),
        run_config=ray.train.RunConfig(
            name=f"train-{trial_id}",  # deterministic: a restored trial finds its Train run
            storage_path=storage_path,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # controller_failure_limit: a worker group that cannot start (starved resources)
            # fails the trial instead of retrying forever (the 2.60 default, -1).
            failure_config=ray.train.FailureConfig(max_failures=max_failures,
                                                   controller_failure_limit=2),
            callbacks=callbacks or []),
    )


def fit_trial(cfgs: list[TrainConfig], **kw) -> None:
    """Train a trial's protocols on a Ray Train worker group, from inside a Tune function
    trainable (Ray 2.60 Train V2: ``Tuner(TorchTrainer)`` is gone; the trial is the Train
    driver and ``TuneReportCallback`` forwards rank 0's reports to Tune). ``kw``: ``trainer``'s."""
    from ray.tune.integration.ray_train import TuneReportCallback

    trainer(cfgs, callbacks=[TuneReportCallback()], **kw).fit()
