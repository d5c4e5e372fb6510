"""The RiSe training loop: plain PyTorch in one process. No Ray, no Optuna.

One call trains one protocol with one config and seed:

    result = train(TrainConfig(protocol="CPS_W", lambda_asyirm=1.0), out_dir="runs/x")

Every epoch it trains on domain-balanced batches of the sources, evaluates the sources' val
split and the target's test split, appends one row to the results store, writes a checkpoint
and calls ``report(row, checkpoint_path)``: the one seam through which Ray Tune or Ray Train
(``train/worker.py``, ``tune/``) see the run. A loss that turns NaN or infinite ends the run
with status ``diverged``, the epoch and the step, not with a crash or a silent number.

Reproducibility on CPU: batches are a function of (seed, epoch) and the torch RNG is reseeded at
the start of every epoch from (seed, epoch), so a resumed run repeats exactly what an
uninterrupted one would have done.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from rise_dist import results
from rise_dist.config import TrainConfig, to_dict
from rise_dist.data.cache import open_cache
from rise_dist.data.loaders import EvalSet, ProtocolData, to_float
from rise_dist.data.protocols import get_protocol
from rise_dist.data.synthetic import synthetic_cache
from rise_dist.losses.objective import Objective
from rise_dist.metrics import (
    APCER,
    AUC,
    BPCER,
    HTER,
    METRICS,
    ORACLE,
    SOURCE_VAL,
    TEST_EER,
    THRESHOLD,
    TPR_AT_FPR_1PCT,
    VAL_THRESHOLD,
    evaluate,
)
from rise_dist.model.rise import RiSeModel
from rise_dist.provenance import code_version, environment
from rise_dist.train import checkpoint

Report = Callable[[dict, Path], None]
CHECKPOINT_NAME = "last.pt"


class RunExistsError(RuntimeError):
    """The run already has results in this directory and ``resume`` was not asked for."""


@dataclass
class RunResult:
    run_id: str
    status: str
    rows: pd.DataFrame
    summary: dict  # {selection rule: {threshold rule: {metric: value}, "epoch": int}}


def run_id_of(cfg: TrainConfig, trial_id: str | None = None) -> str:
    """Stable id of a run: protocol, method, seed and a hash of everything but ``epochs`` (so a
    resumed run asked for more epochs is the same run)."""
    d = to_dict(cfg)
    d.pop("epochs")
    h = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    prefix = f"{trial_id}-" if trial_id else ""
    return f"{prefix}{cfg.protocol}-{cfg.method}-s{cfg.seed}-{h}"


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _epoch_seed(seed: int, epoch: int) -> int:
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def _device(device) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def open_data(cfg: TrainConfig):
    """The cache a config names: ``synthetic`` (built on first use) or a cache directory."""
    path = synthetic_cache(cfg.synthetic) if cfg.data == "synthetic" else cfg.data
    return open_cache(path)


def _optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)


def _lr_factor(schedule: str, epochs: int) -> Callable[[int], float]:
    """The learning-rate factor after ``e`` finished epochs, in closed form: a resumed run asked
    for more epochs recomputes its schedule for the new total from the epoch alone."""
    if schedule == "cosine":
        return lambda e: 0.5 * (1 + math.cos(math.pi * min(e, epochs) / epochs))
    if schedule == "step":
        return lambda e: 0.1 ** (e // max(1, epochs // 3))
    return lambda e: 1.0


def _scheduler(cfg: TrainConfig, opt) -> torch.optim.lr_scheduler.LRScheduler:
    # Stepped once per epoch, so its whole state is the epoch count.
    return torch.optim.lr_scheduler.LambdaLR(opt, _lr_factor(cfg.schedule, cfg.epochs))


@torch.no_grad()
def score(model, objective, evalset: EvalSet, batch_size: int, device, amp: bool) -> dict:
    """P(live) and |fused feature| for every sample of ``evalset``, in its table's order."""
    model.eval()
    probs, radius = np.empty(len(evalset), np.float64), np.empty(len(evalset), np.float64)
    for batch in evalset.batches(batch_size):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(to_float(batch, device, evalset.absent), absent=evalset.absent)
            logit = objective.live_logit(out)
        rows = batch["row"].numpy()
        probs[rows] = torch.sigmoid(logit.float()).cpu().numpy()
        radius[rows] = out.fused.float().norm(dim=1).cpu().numpy()
    return {"score": probs, "radius": radius}


def _metrics(val: dict, test: dict, data: ProtocolData, video_average: bool) -> dict:
    vt, tt = data.val.table, data.test.table
    vv = vt["video"].to_numpy() if video_average else None
    tv = tt["video"].to_numpy() if video_average else None
    m_val = evaluate(val["score"], vt["label"].to_numpy(), video_ids=vv)
    m_test = evaluate(test["score"], tt["label"].to_numpy(), video_ids=tv)
    m_test_v = evaluate(test["score"], tt["label"].to_numpy(), threshold=m_val[THRESHOLD],
                        video_ids=tv)
    row = {results.column("val", k): m_val[k] for k in METRICS}
    row.update({results.column("test", k, TEST_EER): m_test[k] for k in METRICS})
    row.update({results.column("test", k, VAL_THRESHOLD): m_test_v[k] for k in METRICS})
    return row


def _nan_metrics() -> dict:
    cols = [results.column(s, k, r) for s, r in (("val", TEST_EER), ("test", TEST_EER),
                                                  ("test", VAL_THRESHOLD)) for k in METRICS]
    return dict.fromkeys(cols, math.nan)


def summarize(rows: pd.DataFrame) -> dict:
    """Test HTER/AUC/TPR@FPR=1% (both threshold rules) at the epoch each selection rule picks."""
    out = {}
    for rule in (SOURCE_VAL, ORACLE):
        sel = results.select(rows, rule)
        if sel.empty:
            continue
        r = sel.iloc[0]
        out[rule] = {"epoch": int(r["epoch"])}
        for trule in (TEST_EER, VAL_THRESHOLD):
            out[rule][trule] = {k: float(r[results.column("test", k, trule)])
                                for k in (HTER, AUC, TPR_AT_FPR_1PCT, APCER, BPCER)}
    return out


def format_summary(run_id: str, status: str, summary: dict) -> str:
    lines = [f"run {run_id}: {status}"]
    for rule, s in summary.items():
        for trule in (TEST_EER, VAL_THRESHOLD):
            m = s[trule]
            lines.append(f"  selection {rule:<10} epoch {s['epoch']:>3}  threshold {trule:<13} "
                         f"HTER {100 * m[HTER]:6.2f}%  AUC {100 * m[AUC]:6.2f}%  "
                         f"TPR@FPR=1% {100 * m[TPR_AT_FPR_1PCT]:6.2f}%")
    return "\n".join(lines)


class Run:
    """One protocol's training, stepped one epoch at a time.

    ``for row in run`` trains and evaluates one epoch per iteration, writes the row, the scores
    and the checkpoint, and yields the row; ``run.finish()`` records the final status. A sweep
    trial steps several protocols' runs in lockstep this way and reports their mean per epoch.

    ``rank``/``world_size``/``wrap_model`` let a DDP worker (``train/worker.py``) run the same
    loop: each rank trains on its slice of every global batch and only rank 0 writes.
    """

    def __init__(self, cfg: TrainConfig, out_dir, *, resume: bool = False, device=None,
                 trial_id: str | None = None, rank: int = 0, world_size: int = 1,
                 wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                 progress: bool = True, cache=None, grad_sync=None):
        self.cfg, self.progress = cfg, progress
        self.grad_sync = grad_sync  # train/worker.py: averages grads (model + objective) over ranks
        self.out_dir = Path(out_dir).resolve()
        self.device = _device(device)
        self.run_id = run_id_of(cfg, trial_id)
        self.ckpt_path = self.out_dir / "checkpoints" / self.run_id / CHECKPOINT_NAME
        self.writer = rank == 0
        self.amp = cfg.amp and self.device.type == "cuda"
        self.status, self.reason = "running", ""

        existing = results.read_run(self.out_dir, self.run_id)
        if existing is not None and not resume and self.writer:
            raise RunExistsError(f"{self.out_dir} already holds run {self.run_id} "
                                 f"({len(existing)} epochs); pass --resume to continue it or "
                                 "choose another --out")

        _seed_everything(cfg.seed)
        cache = cache or open_data(cfg)
        protocol = get_protocol(cfg.protocol)
        self.data = ProtocolData.from_cache(cache, protocol, cfg.batch_size, cfg.seed, rank,
                                            world_size)
        self.model = RiSeModel(cfg.model, self.data.image_size).to(self.device)
        if world_size > 1 and self.device.type == "cuda":
            # One set of batch statistics over the global batch, as one GPU would compute. gloo
            # (CPU) has no SyncBatchNorm: there each rank uses its slice's (ModelConfig.norm).
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.objective = Objective(cfg, self.model.feature_dim, len(protocol.sources)).to(self.device)
        # The loss terms' own parameters (boundary radius, heads) get no weight decay: decay would
        # pull the radius R towards a constant that has nothing to do with the data.
        self.opt = _optimizer(cfg, [
            {"params": [p for p in self.model.parameters() if p.requires_grad]},
            {"params": [p for p in self.objective.parameters() if p.requires_grad],
             "weight_decay": 0.0}])
        self.sched = _scheduler(cfg, self.opt)

        self.epoch, self.rows = 0, []
        if resume and self.ckpt_path.exists():
            self._restore(existing)
        self.train_model = wrap_model(self.model) if wrap_model else self.model
        self.base = {"run_id": self.run_id, "trial_id": trial_id, "protocol": cfg.protocol,
                     "method": cfg.method, "seed": cfg.seed, **results.flatten(to_dict(cfg)),
                     "code_version": code_version(), "environment": json.dumps(environment()),
                     "config": json.dumps(to_dict(cfg), sort_keys=True)}

    def _restore(self, existing: pd.DataFrame | None) -> None:
        state = checkpoint.load(self.ckpt_path, map_location=self.device)
        try:
            self.model.load_state_dict(state["model"])
            self.objective.load_state_dict(state["objective"])
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"checkpoint {self.ckpt_path} does not fit this model and config (was the code "
                f"changed since?): {str(e).splitlines()[0]}") from e
        for group, base_lr in zip(self.opt.param_groups, self.sched.base_lrs, strict=True):
            group["lr"] = base_lr * self.sched.lr_lambdas[0](self.sched.last_epoch)  # new total
        self.epoch = int(state["epoch"])
        if existing is not None:  # rows past the checkpoint were never checkpointed: redo them
            self.rows = existing[existing["epoch"] <= self.epoch].to_dict("records")

    def __iter__(self):
        while self.epoch < self.cfg.epochs and self.status == "running":
            row = self._train_epoch(self.epoch + 1)
            self.epoch += 1
            if self.status == "diverged":
                if self.writer:
                    self._write("diverged", self.reason)
                return
            yield row

    def _train_epoch(self, epoch: int) -> dict:
        cfg, model, objective, device = self.cfg, self.model, self.objective, self.device
        t0, started_at = time.perf_counter(), time.time()
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 1)
        model.train()
        objective.train()
        sums: dict[str, float] = {}
        bar = tqdm(self.data.train.epoch(epoch), total=len(self.data.train),
                   desc=f"{cfg.protocol} {cfg.method} epoch {epoch}",
                   disable=not (self.progress and self.writer), leave=False)
        for step, batch in enumerate(bar, 1):
            x = to_float(batch, device)
            labels, domains = batch["label"].to(device), batch["domain"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.amp):
                out = self.train_model(x)
                loss, logs = objective(out, labels, domains, model, epoch, generator=gen)
            finite = (bool(torch.isfinite(loss)) if self.grad_sync is None
                      else self.grad_sync.all_finite(loss))  # every rank stops together
            if not finite:
                bad = [k for k, v in logs.items() if not math.isfinite(v)] or ["loss/total"]
                self.status = "diverged"
                self.reason = f"{', '.join(bad)} not finite at epoch {epoch}, step {step}"
                row = {**self.base, "epoch": epoch, **_nan_metrics(),
                       "epoch_seconds": time.perf_counter() - t0}
                self.rows.append(row)
                return row
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            if self.grad_sync is not None:
                self.grad_sync.average([*model.parameters(), *objective.parameters()])
            self.opt.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        self.sched.step()
        train_seconds = time.perf_counter() - t0
        if self.grad_sync is not None:  # the row gives the global batch's losses, not rank 0's
            sums = self.grad_sync.mean_values(sums)
        bs = cfg.batch_size * 2
        val = score(model, objective, self.data.val, bs, device, self.amp)
        test = score(model, objective, self.data.test, bs, device, self.amp)
        row = {**self.base, "epoch": epoch, **_metrics(val, test, self.data, cfg.video_average),
               **{k: v / len(self.data.train) for k, v in sums.items()},
               "epoch_lr": self.opt.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0,
               "train_seconds": train_seconds, "epoch_started_at": started_at}
        self.rows.append(row)
        if self.writer:
            self._write("running", "")
            checkpoint.save(self.ckpt_path, {
                "epoch": epoch, "model": model.state_dict(), "objective": objective.state_dict(),
                "optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "config": json.dumps(to_dict(cfg)),
                "run_id": self.run_id})
            _write_scores(self.out_dir, self.run_id, epoch, self.data, val, test)
            if self.progress:
                print(f"{cfg.protocol} {cfg.method} epoch {epoch}/{cfg.epochs}  "
                      f"loss {row.get('loss/total', math.nan):.4f}  "
                      f"val HTER {100 * row['val_hter']:.2f}%  "
                      f"test HTER {100 * row['test_hter']:.2f}%  ({row['epoch_seconds']:.1f}s)",
                      flush=True)
        return row

    def _write(self, status: str, reason: str) -> None:
        for r in self.rows:
            r.update(status=status, status_reason=reason)
        results.write_run(self.out_dir, self.run_id, self.rows)

    def finish(self, status: str = "completed", reason: str = "") -> RunResult:
        """Record the run's final status (``completed``, ``stopped_early``, ``failed``,
        ``diverged``) on all its rows and return them with the selection summary."""
        if status not in results.STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {results.STATUSES}")
        if self.status != "diverged":  # divergence is what happened, whatever ends the run
            self.status, self.reason = status, reason
        if self.writer and self.rows:
            self._write(self.status, self.reason)
        frame = pd.DataFrame(self.rows)
        return RunResult(self.run_id, self.status, frame, summarize(frame) if len(frame) else {})


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, report: Report | None = None,
          **kw) -> RunResult:
    """Train ``cfg`` to its last epoch, calling ``report(row, checkpoint_path)`` after each;
    keyword arguments as ``Run``'s."""
    run = Run(cfg, out_dir, resume=resume, **kw)
    for row in run:
        if report is not None:
            report(row, run.ckpt_path)
    return run.finish()


def _write_scores(out_dir: Path, run_id: str, epoch: int, data: ProtocolData, val: dict,
                  test: dict) -> None:
    frames = []
    for split, table, s in (("val", data.val.table, val), ("test", data.test.table, test)):
        frames.append(table[["domain", "split", "label", "video", "attack"]].assign(
            set=split, score=s["score"], radius=s["radius"]))
    results.write_scores(out_dir, run_id, pd.concat(frames, ignore_index=True).assign(epoch=epoch))
