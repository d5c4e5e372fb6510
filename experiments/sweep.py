"""Sweep the RiSe loss weights with Ray Tune + Optuna over the leave-one-out protocols.

    python experiments/sweep.py [--cluster] [--address ADDR] [--storage URI] [--trials N]
        [--protocols all|CPS_W,...] [--backbone cnn|resnet18|vit_b16] [--epochs N]
        [--workers-per-trial N] [--gpus-per-worker G] [--seed S] [--smoke] [--resume]
        [--objective source_val|oracle] [--out DIR]

One trial = one weight setting trained on every protocol; the objective is the mean over
protocols of the source-validation HTER (``--objective oracle``: the target test HTER, said in
every output). Without --cluster an embedded Ray runs on 127.0.0.1; with it the sweep joins the
cluster at --address or RAY_ADDRESS. Results go to the results store under --out, the Optuna
study to OUT/optuna.db, Tune's experiment to --storage (default OUT/tune). docs/distributed.md.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rise_dist.config import ConfigError
from rise_dist.metrics import ORACLE, SOURCE_VAL
from rise_dist.tune import spaces
from rise_dist.tune.ray_setup import add_tune_arguments, parse_tune_args, resolve_storage
from rise_dist.tune.sweep import FAIL_ENV, Settings, SweepError, base_from_args, protocols_of, run_sweep


def build_settings(args) -> Settings:
    out = Path(args.out).resolve()
    storage = resolve_storage(out, args.storage, args.cluster)
    # Locally the default fits a laptop (minutes on 2 cores); on a cluster, a real search.
    epochs = args.epochs if args.epochs is not None else (2 if args.smoke else 10 if args.cluster else 4)
    trials = args.trials if args.trials is not None else (2 if args.smoke else 32 if args.cluster else 8)
    base = base_from_args(args, epochs)
    fail = os.environ.get(FAIL_ENV)
    cpus = os.cpu_count() or 1
    return Settings(
        out=str(out), storage=storage, base=base, protocols=protocols_of(args.protocols),
        trials=trials, seed=args.seed, space=args.space, gates=not args.no_gates,
        objective=args.objective, workers_per_trial=args.workers_per_trial,
        gpus_per_worker=args.gpus_per_worker, cpus_per_trial=1,
        grace_period=args.grace_period, asha=not args.no_asha,
        trial_max_failures=args.max_failures if args.max_failures is not None else (2 if args.cluster else 0),
        fail_trial=int(fail) if fail not in (None, "") else None,
        data_root=os.environ.get("RISE_DIST_DATA"), cluster=args.cluster,
        max_concurrent=min(trials, cpus))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tune_arguments(p, "sweep")
    p.add_argument("--trials", type=int, help="number of trials (default 8; --cluster 32; --smoke 2)")
    p.add_argument("--epochs", type=int, help="epochs per protocol (default 4; --cluster 10; --smoke 2)")
    p.add_argument("--seed", type=int, default=0, help="TPE sampler seed and training seed")
    p.add_argument("--objective", choices=(SOURCE_VAL, ORACLE), default=SOURCE_VAL)
    p.add_argument("--space", choices=sorted(spaces.SPACES), default="rise")
    p.add_argument("--no-gates", action="store_true", help="never turn a loss term off")
    p.add_argument("--no-asha", action="store_true", help="no early stopping")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA grace period (epochs)")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic data, 2 trials, 2 epochs")
    args = parse_tune_args(p, argv)
    try:
        if args.resume:
            s = Settings.load(Path(args.out).resolve())
            print(f"resuming the sweep in {s.out} with its saved settings ({len(s.protocols)} "
                  f"protocols, {s.trials} trials, {s.epochs} epochs)", flush=True)
        else:
            s = build_settings(args)
        run_sweep(s, resume=args.resume, address=args.address, num_cpus=args.num_cpus)
    except (SweepError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
