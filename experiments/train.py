"""Train one protocol with one method and seed; print its HTER/AUC/TPR@FPR=1%.

    python experiments/train.py --protocol CPS_W --method rise --data synthetic --epochs 10 \\
        --seed 0 --out runs/cps_w [--backbone cnn|resnet18|vit_b16] [--lambda-asyirm X] \\
        [--lambda-mmsd Y] [--resume] [--config FILE.yaml]

Writes per-epoch rows (config, metrics, code version) into the results store under --out
(read back with ``rise_dist.results.load``), a checkpoint per epoch and the last epoch's scores.
A YAML --config gives any TrainConfig field (nested: ``model: {backbone: resnet18}``); flags
given on the command line override it. ``--method`` names the loss weights (METHOD_WEIGHTS)
unless --lambda-* give them; a weight that contradicts the method is an error.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from rise_dist.config import (
    BACKBONES,
    METHOD_WEIGHTS,
    METHODS,
    MMSD_VARIANTS,
    ConfigError,
    TrainConfig,
    from_dict,
    method_of,
    to_dict,
)
from rise_dist.data.cache import CacheError
from rise_dist.train.checkpoint import CheckpointError
from rise_dist.train.loop import RunExistsError, format_summary, train


def build_config(args) -> TrainConfig:
    d = to_dict(TrainConfig())
    if args.config:
        with open(args.config) as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{args.config}: expected a mapping of TrainConfig fields")
        for k, v in loaded.items():
            d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    for flag, key in (("protocol", "protocol"), ("data", "data"), ("epochs", "epochs"),
                      ("seed", "seed"), ("batch_size", "batch_size"), ("lr", "lr")):
        if getattr(args, flag) is not None:
            d[key] = getattr(args, flag)
    if args.backbone is not None:
        d["model"]["backbone"] = args.backbone
    if args.mmsd_variant is not None:
        d["mmsd"]["variant"] = args.mmsd_variant
    if args.method is not None:
        la, lm = METHOD_WEIGHTS[args.method]
        d["lambda_asyirm"] = la if args.lambda_asyirm is None else args.lambda_asyirm
        d["lambda_mmsd"] = lm if args.lambda_mmsd is None else args.lambda_mmsd
        got = method_of(d["lambda_asyirm"], d["lambda_mmsd"])
        if got != args.method:
            raise ConfigError(f"--method {args.method} with lambda_asyirm={d['lambda_asyirm']}, "
                              f"lambda_mmsd={d['lambda_mmsd']} is method {got}")
    else:
        for flag in ("lambda_asyirm", "lambda_mmsd"):
            if getattr(args, flag) is not None:
                d[flag] = getattr(args, flag)
    return from_dict(TrainConfig, d)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--protocol", help="e.g. CPS_W, CW_PS, CPS_W-no_ir (default CPS_W)")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--data", help="'synthetic' (default) or a cache directory")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--epochs", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lambda-asyirm", type=float)
    p.add_argument("--lambda-mmsd", type=float)
    p.add_argument("--mmsd-variant", choices=MMSD_VARIANTS)
    p.add_argument("--out", required=True, help="results directory")
    p.add_argument("--resume", action="store_true", help="continue the run from its checkpoint")
    p.add_argument("--config", help="YAML file of TrainConfig fields")
    p.add_argument("--device", help="cpu, cuda, cuda:1 (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    try:
        cfg = build_config(args)
        result = train(cfg, args.out, resume=args.resume, device=args.device,
                       progress=not args.no_progress)
    except (ConfigError, CacheError, CheckpointError, RunExistsError, ValueError,
            FileNotFoundError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 1
    print(format_summary(result.run_id, result.status, result.summary))
    if result.status == "diverged":
        print(f"train: run diverged: {result.rows['status_reason'].iloc[-1]}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
