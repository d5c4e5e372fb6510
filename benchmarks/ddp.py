"""DDP on CPU: 2 Ray Train workers (gloo) vs the plain loop in one process, same global batch.

    python benchmarks/ddp.py [--quick] [--json FILE]

Both sides train the same ERM config (GroupNorm, no dropout: the setting in which N ranks
compute exactly the 1-process gradient, docs/distributed.md) with one thread per process, and
write the results store. Reported, measured in this one run:
- the loss curve's largest relative difference between the two (target: <= 1e-3);
- the training throughput ratio, 2 workers / 1 process: samples per second of the training
  steps alone (``train_seconds`` of the rows, the first epoch left out as warm-up). Each rank
  also evaluates the whole val and test sets, which is not parallel and not counted here.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

FULL = {"n_train": 400, "n_val": 100, "n_test": 100, "epochs": 3}
QUICK = {"n_train": 160, "n_val": 40, "n_test": 40, "epochs": 2}


def measure(quick: bool = False) -> list[dict]:
    import ray
    import torch

    from rise_dist import results
    from rise_dist.config import ModelConfig, SyntheticConfig, TrainConfig
    from rise_dist.data.synthetic import synthetic_cache
    from rise_dist.metrics import SOURCE_VAL
    from rise_dist.train import loop, worker

    plan = QUICK if quick else FULL
    syn = SyntheticConfig(n_train=plan["n_train"], n_val=plan["n_val"], n_test=plan["n_test"])
    cfg = TrainConfig(protocol="CPS_W", epochs=plan["epochs"], batch_size=48, synthetic=syn, amp=False,
                      lambda_asyirm=0.0, lambda_mmsd=0.0, model=ModelConfig(norm="group", dropout=0.0))
    torch.set_num_threads(1)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["RISE_DIST_DATA"] = str(tmp / "data")
        synthetic_cache(syn)
        loop.train(cfg, tmp / "one", progress=False)
        ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"RISE_DIST_DATA": str(tmp / "data")}})
        try:
            worker.trainer([cfg], out_dir=tmp / "two", trial_id="ddp", objective=SOURCE_VAL,
                           num_workers=2, gpus_per_worker=0, storage_path=str(tmp / "train"),
                           max_failures=0).fit()
        finally:
            ray.shutdown()
        one = results.load(tmp / "one").sort_values("epoch")
        two = results.load(tmp / "two").sort_values("epoch")
    loss1, loss2 = one["loss/ce"].to_numpy(), two["loss/ce"].to_numpy()
    diff = float(np.max(np.abs(loss2 - loss1) / np.abs(loss1)))
    later = slice(1, None) if len(one) > 1 else slice(None)
    speed = float(one["train_seconds"].iloc[later].sum() / two["train_seconds"].iloc[later].sum())
    print(f"loss/ce per epoch: 1 process {np.round(loss1, 5).tolist()}, 2 workers "
          f"{np.round(loss2, 5).tolist()}; largest relative difference {diff:.2e} (target <= 1e-3)")
    print(f"training throughput, 2 workers / 1 process: {speed:.2f}x (train seconds "
          f"{one['train_seconds'].iloc[later].sum():.1f} vs {two['train_seconds'].iloc[later].sum():.1f}, "
          f"one thread per process, {os.cpu_count()} cores)")
    return [figure("ddp_loss_curve_max_rel_diff", diff, "", "<= 1e-3", diff <= 1e-3),
            figure("ddp_2_workers_throughput_ratio", speed, "x")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    figures = measure(args.quick)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
