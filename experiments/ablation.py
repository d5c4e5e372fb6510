"""Ablations with Ray Tune: the grid method x protocol x seed (or one weight's values) at the loss
weights a sweep found or given ones.

    python experiments/ablation.py [--cluster] [--address ADDR] [--storage URI]
        [--methods erm,asyirm,mmsd,rise] [--protocols all|CPS_W,...] [--seeds 3] [--seed S]
        [--weights FILE|best-of:SWEEP_DIR] [--sensitivity NAME=v1,v2,...] [--epochs N]
        [--backbone cnn|resnet18|vit_b16] [--smoke] [--resume] [--out DIR] [--num-cpus N]

One Tune trial = one run (method or value, protocol, seed); every trial runs every epoch. The
weights come from --weights (a YAML/JSON file of flat names, or best-of:SWEEP_DIR: the sweep's
best complete trial), else rise_dist.config.METHOD_WEIGHTS; they are printed and saved in
OUT/ablation.json. Rows go to the results store under --out, Tune's experiment to --storage
(default OUT/tune). docs/distributed.md, section "Ablations".
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rise_dist.config import ConfigError
from rise_dist.tune.ablation import FAIL_ENV, Settings, choose_weights, parse_sensitivity, run_ablation
from rise_dist.tune.ray_setup import (
    SetupError,
    add_tune_arguments,
    parse_tune_args,
    resolve_storage,
)
from rise_dist.tune.sweep import base_from_args, protocols_of


def build_settings(args) -> Settings:
    out = Path(args.out).resolve()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    sensitivity, values = parse_sensitivity(args.sensitivity) if args.sensitivity else (None, [])
    weights = choose_weights(args.weights)
    storage = resolve_storage(out, args.storage, args.cluster)
    epochs = args.epochs if args.epochs is not None else (2 if args.smoke else 10)
    seeds = args.seeds if args.seeds is not None else (1 if args.smoke else 3)
    base = base_from_args(args, epochs)
    fail = os.environ.get(FAIL_ENV)
    return Settings(
        out=str(out), storage=storage, base=base, protocols=protocols_of(args.protocols),
        methods=methods, seeds=seeds, seed=args.seed, weights=weights.values,
        weight_sources=weights.sources, sensitivity=sensitivity, values=values,
        workers_per_trial=args.workers_per_trial, gpus_per_worker=args.gpus_per_worker,
        trial_max_failures=args.max_failures if args.max_failures is not None else (2 if args.cluster else 0),
        fail_trial=int(fail) if fail not in (None, "") else None,
        data_root=os.environ.get("RISE_DIST_DATA"), cluster=args.cluster)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_tune_arguments(p, "ablation")
    p.add_argument("--methods", default="erm,asyirm,mmsd,rise", help="comma-separated methods")
    p.add_argument("--seeds", type=int, help="seeds per cell (default 3; --smoke 1)")
    p.add_argument("--seed", type=int, default=0, help="first seed: seed s of the grid trains with SEED + s")
    p.add_argument("--weights", help="FILE (YAML/JSON of flat names) or best-of:SWEEP_DIR "
                   "(default rise_dist.config.METHOD_WEIGHTS)")
    p.add_argument("--sensitivity", help="NAME=v1,v2,...: grid over one value instead of the methods")
    p.add_argument("--epochs", type=int, help="epochs per run (default 10; --smoke 2)")
    p.add_argument("--smoke", action="store_true", help="tiny synthetic data, 1 seed, 2 epochs")
    args = parse_tune_args(p, argv)
    try:
        if args.resume:
            s = Settings.load(Path(args.out).resolve())
            print(f"resuming the ablation in {s.out} with its saved settings", flush=True)
        else:
            s = build_settings(args)
        run_ablation(s, resume=args.resume, address=args.address, num_cpus=args.num_cpus)
    except (SetupError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
