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


def train(cfg: TrainConfig, out_dir, *, resume: bool = False, report: Report | None = None,
          device=None, trial_id: str | None = None, rank: int = 0, world_size: int = 1,
          wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
          progress: bool = True, cache=None) -> RunResult:
    """Train ``cfg`` and write its rows, scores and checkpoints under ``out_dir``.

    ``rank``/``world_size``/``wrap_model`` let a DDP worker (``train/worker.py``) run the same
    loop: each rank trains on its slice of every global batch and only rank 0 writes.
    """
    out_dir = Path(out_dir).resolve()
    device = _device(device)
    run_id = run_id_of(cfg, trial_id)
    ckpt_path = out_dir / "checkpoints" / run_id / CHECKPOINT_NAME
    writer = rank == 0
    amp = cfg.amp and device.type == "cuda"

    existing = results.read_run(out_dir, run_id)
    if existing is not None and not resume and writer:
        raise RunExistsError(f"{out_dir} already holds run {run_id} ({len(existing)} epochs); "
                             "pass --resume to continue it or choose another --out")

    _seed_everything(cfg.seed)
    cache = cache or open_data(cfg)
    protocol = get_protocol(cfg.protocol)
    data = ProtocolData.from_cache(cache, protocol, cfg.batch_size, cfg.seed, rank, world_size)
    model = RiSeModel(cfg.model, data.image_size).to(device)
    objective = Objective(cfg, model.feature_dim, len(protocol.sources)).to(device)
    # The loss terms' own parameters (boundary radius, heads) get no weight decay: decay would
    # pull the radius R towards a constant that has nothing to do with the data.
    opt = _optimizer(cfg, [
        {"params": [p for p in model.parameters() if p.requires_grad]},
        {"params": [p for p in objective.parameters() if p.requires_grad], "weight_decay": 0.0}])
    sched = _scheduler(cfg, opt)

    start, rows = 0, []
    if resume and ckpt_path.exists():
        state = checkpoint.load(ckpt_path, map_location=device)
        try:
            model.load_state_dict(state["model"])
            objective.load_state_dict(state["objective"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except (RuntimeError, KeyError, ValueError) as e:
            raise checkpoint.CheckpointError(
                f"checkpoint {ckpt_path} does not fit this model and config (was the code "
                f"changed since?): {str(e).splitlines()[0]}") from e
        for group, base_lr in zip(opt.param_groups, sched.base_lrs, strict=True):
            group["lr"] = base_lr * sched.lr_lambdas[0](sched.last_epoch)  # for the new total
        start = int(state["epoch"])
        if existing is not None:  # rows past the checkpoint were never checkpointed: redo them
            rows = existing[existing["epoch"] <= start].to_dict("records")
    train_model = wrap_model(model) if wrap_model else model

    base = {"run_id": run_id, "trial_id": trial_id, "protocol": cfg.protocol,
            "method": cfg.method, "seed": cfg.seed, **results.flatten(to_dict(cfg)),
            "code_version": code_version(), "environment": json.dumps(environment()),
            "config": json.dumps(to_dict(cfg), sort_keys=True)}
    status, reason = "completed", ""
    for epoch in range(start + 1, cfg.epochs + 1):
        t0 = time.perf_counter()
        torch.manual_seed(_epoch_seed(cfg.seed, epoch))
        gen = torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch) + 1)
        model.train()
        objective.train()
        sums: dict[str, float] = {}
        steps = data.train.epoch(epoch)
        bar = tqdm(steps, total=len(data.train), desc=f"{cfg.protocol} {cfg.method} epoch {epoch}",
                   disable=not (progress and writer), leave=False)
        for step, batch in enumerate(bar, 1):
            x = to_float(batch, device)
            labels, domains = batch["label"].to(device), batch["domain"].to(device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = train_model(x)
                loss, logs = objective(out, labels, domains, model, epoch, generator=gen)
            if not torch.isfinite(loss):
                bad = [k for k, v in logs.items() if not math.isfinite(v)] or ["loss/total"]
                status = "diverged"
                reason = f"{', '.join(bad)} not finite at epoch {epoch}, step {step}"
                break
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
        if status == "diverged":
            row = {**base, "epoch": epoch, **_nan_metrics(), "epoch_seconds": time.perf_counter() - t0}
            rows.append(row)
            break
        sched.step()
        val = score(model, objective, data.val, cfg.batch_size * 2, device, amp)
        test = score(model, objective, data.test, cfg.batch_size * 2, device, amp)
        row = {**base, "epoch": epoch, **_metrics(val, test, data, cfg.video_average),
               **{k: v / len(data.train) for k, v in sums.items()},
               "lr": opt.param_groups[0]["lr"], "epoch_seconds": time.perf_counter() - t0}
        rows.append(row)
        if writer:
            for r in rows:
                r.update(status="running", status_reason="")
            results.write_run(out_dir, run_id, rows)
            checkpoint.save(ckpt_path, {
                "epoch": epoch, "model": model.state_dict(), "objective": objective.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "torch_rng": torch.get_rng_state(), "config": json.dumps(to_dict(cfg)),
                "run_id": run_id})
            _write_scores(out_dir, run_id, epoch, data, val, test)
            if progress:
                print(f"{cfg.protocol} {cfg.method} epoch {epoch}/{cfg.epochs}  "
                      f"loss {row.get('loss/total', math.nan):.4f}  "
                      f"val HTER {100 * row['val_hter']:.2f}%  test HTER {100 * row['test_hter']:.2f}%  "
                      f"({row['epoch_seconds']:.1f}s)", flush=True)
        if report is not None:
            report(row, ckpt_path)

    frame = pd.DataFrame(rows)
    if writer and rows:
        for r in rows:
            r.update(status=status, status_reason=reason)
        results.write_run(out_dir, run_id, rows)
        frame = pd.DataFrame(rows)
    return RunResult(run_id, status, frame, summarize(frame) if len(frame) else {})


def _write_scores(out_dir: Path, run_id: str, epoch: int, data: ProtocolData, val: dict,
                  test: dict) -> None:
    frames = []
    for split, table, s in (("val", data.val.table, val), ("test", data.test.table, test)):
        frames.append(table[["domain", "split", "label", "video", "attack"]].assign(
            set=split, score=s["score"], radius=s["radius"]))
    results.write_scores(out_dir, run_id, pd.concat(frames, ignore_index=True).assign(epoch=epoch))
