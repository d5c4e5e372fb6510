"""What every Ray Tune command of the project (the sweep, the ablation) shares before and
around its trials: the settings every trial needs, starting or joining Ray, and how many
trials fit at once.

``TuneSettings`` is the common part of a command's settings (a dataclass saved as JSON in
``<out>/<SETTINGS_FILE>`` so that ``--resume`` restores the command that was started). A command
subclasses it with its own fields and sets the class constants ``EXPERIMENT`` (Tune's
experiment name under ``storage``) and ``SETTINGS_FILE``; ``n_trials`` says how many trials it
plans. docs/distributed.md describes the local and the cluster set-up.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import ClassVar

from rise_dist.config import BACKBONES, SyntheticConfig, TrainConfig
from rise_dist.data.protocols import LEAVE_ONE_OUT
from rise_dist.metrics import SOURCE_VAL

# --smoke of every Tune command: 48/16/24 samples per domain and split at 16x16 pixels, batch 24
# (small enough that a trial is a few seconds on one core, large enough for every metric).
SMOKE_SYNTHETIC = SyntheticConfig(n_train=48, n_val=16, n_test=24, size=(16, 16))
SMOKE_BATCH = 24
# --synthetic of every Tune command: the benchmark's size. ``small`` (a third of the default's
# samples) is the local default, so a sweep or the main job runs in minutes on a 2-core laptop;
# ``default`` (the benchmark the docs' tables use) is the default on a cluster.
SYNTHETIC_SIZES = {"default": SyntheticConfig(), "small": SyntheticConfig(n_train=400, n_val=150, n_test=300),
                   "smoke": SMOKE_SYNTHETIC}


class SetupError(RuntimeError):
    """A sweep or ablation that cannot start as asked (bad address, storage, resources, existing
    output, nothing to resume)."""


@dataclass
class TuneSettings:
    """The settings every trial of a Tune command needs, as plain values.

    ``base``: fixed TrainConfig fields (nested dicts for sections). ``objective``: what a trial
    reports as ``objective`` (``worker.OBJECTIVES``). ``workers_per_trial`` > 1 or
    ``gpus_per_worker`` > 0 make a trial a Ray Train driver (``uses_train``); otherwise it trains
    in its own process on ``cpus_per_trial`` CPUs. ``fail_trial`` is a test hook (the k-th trial,
    Tune's 1-based counter, raises after its first epoch).
    """

    EXPERIMENT: ClassVar[str] = "tune"
    SETTINGS_FILE: ClassVar[str] = "tune.json"

    out: str
    storage: str
    base: dict = field(default_factory=dict)
    protocols: list[str] = field(default_factory=lambda: list(LEAVE_ONE_OUT))
    objective: str = SOURCE_VAL
    workers_per_trial: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_trial: int = 1
    max_concurrent: int = 1
    trial_max_failures: int = 0
    train_max_failures: int = 2
    fail_trial: int | None = None
    data_root: str | None = None
    cluster: bool = False

    @property
    def epochs(self) -> int:
        return int(self.base.get("epochs", TrainConfig().epochs))

    @property
    def uses_train(self) -> bool:
        return self.workers_per_trial > 1 or self.gpus_per_worker > 0

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.EXPERIMENT}"

    @property
    def n_trials(self) -> int:
        raise NotImplementedError

    def save(self) -> None:
        p = Path(self.out) / self.SETTINGS_FILE
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, out):
        p = Path(out) / cls.SETTINGS_FILE
        if not p.exists():
            raise SetupError(f"{p} not found: nothing to resume in {out}")
        d = json.loads(p.read_text())
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def is_uri(path: str) -> bool:
    return "://" in path


def resolve_storage(out: Path, storage: str | None, cluster: bool) -> str:
    """Tune's storage: ``storage`` (a path, made absolute, or a URI), default ``out/tune``.
    With ``cluster`` it must be given, and local paths get a warning (they must be shared)."""
    if cluster and not storage:
        raise SetupError("--cluster needs --storage: a path every node sees (NFS) or a URI such "
                         "as s3://bucket/prefix")
    storage = storage or str(out / "tune")
    if not is_uri(storage):
        storage = str(Path(storage).resolve())
        if cluster:
            warnings.warn(f"--storage {storage} is a local path: it must be a shared filesystem "
                          "mounted at the same path on every node, or multi-node trials fail",
                          stacklevel=2)
    if cluster:
        warnings.warn(f"--out {out} receives every trial's result rows and checkpoints: it must be "
                      "a shared filesystem mounted at the same path on every node", stacklevel=2)
    return storage


def check_address(address: str, timeout: float = 5.0) -> None:
    """A cluster address that does not answer is a clear error within seconds, not a hang."""
    if address in ("auto", "") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=timeout):
            pass
    except (OSError, ValueError) as e:
        raise SetupError(f"no Ray cluster answers at {address}: {e}. Start one with "
                         "`ray start --head` (docs/distributed.md) or fix --address/RAY_ADDRESS") from e


def init_ray(s: TuneSettings, address: str | None = None, num_cpus: int | None = None):
    """Start an embedded Ray on 127.0.0.1 (local) or join a cluster (``s.cluster``)."""
    import ray

    env = {"RISE_DIST_DATA": s.data_root} if s.data_root else {}
    if s.cluster:
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
            os.environ["RAY_AUTH_MODE"] = "token"  # notes §0.10: explicit addresses need it
        check_address(address)
        repo = Path(__file__).resolve().parents[2]
        runtime_env = {"env_vars": env, "working_dir": str(repo),
                       "excludes": ["runs/", ".venv/", ".git/", ".pytest_cache/", ".ruff_cache/",
                                    "*.egg-info/", "*.parquet", "*.pt", "**/__pycache__/"]}
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
        except Exception as e:
            raise SetupError(f"could not join the Ray cluster at {address}: {e}") from e
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # embedded, loopback only
    n = num_cpus or os.cpu_count() or 1
    ray.init(num_cpus=n, include_dashboard=s.uses_train,  # Train's clean-up needs it (notes §0.2)
             _node_ip_address="127.0.0.1", resources={"driver_slot": max(2, n)},
             object_store_memory=512 * 1024**2, runtime_env={"env_vars": env} if env else None,
             log_to_driver=True)


def plan_concurrency(s: TuneSettings) -> int:
    """Trials that fit at once: CPUs (or GPUs) over what one trial takes, at most the trials
    planned."""
    import ray

    res = ray.cluster_resources()
    if s.uses_train:
        if s.gpus_per_worker > 0:
            fit = int(res.get("GPU", 0) // (s.workers_per_trial * s.gpus_per_worker))
            if fit < 1:
                raise SetupError(f"the cluster has {res.get('GPU', 0)} GPUs; a trial needs "
                                 f"{s.workers_per_trial} x {s.gpus_per_worker}")
        else:
            fit = int(res.get("CPU", 0) // s.workers_per_trial)
        if res.get("driver_slot", 0) < 1:
            raise SetupError("the cluster has no 'driver_slot' resource for trial drivers: start "
                             "the head with --resources='{\"driver_slot\": 8}' (docs/distributed.md)")
        fit = min(fit, int(res["driver_slot"]))
    else:
        fit = int(res.get("CPU", 1) // s.cpus_per_trial)
    if fit < 1:
        raise SetupError(f"one trial does not fit in the cluster's resources {res}")
    return max(1, min(fit, s.n_trials))


def open_tuner(s: TuneSettings, resume: bool, trainable, build, what: str):
    """The command's Tuner: ``Tuner.restore`` of the experiment under ``s.storage`` (``resume``;
    ``trainable`` is the wrapped trainable to restore it with), or a fresh one from ``build()``
    after planning concurrency and saving the settings. ``what`` ("a sweep") names it in errors.
    Call with Ray started."""
    import ray.tune

    exp = s.experiment_path
    if resume:
        if not ray.tune.Tuner.can_restore(exp):
            raise SetupError(f"no Tune experiment to resume at {exp}")
        return ray.tune.Tuner.restore(exp, trainable=trainable, resume_unfinished=True,
                                      resume_errored=True)
    if ray.tune.Tuner.can_restore(exp):
        raise SetupError(f"{exp} already holds {what}: pass --resume to continue it, or choose "
                         "another --out/--storage")
    s.max_concurrent = plan_concurrency(s)
    s.save()
    return build()


def add_tune_arguments(p: argparse.ArgumentParser, command: str) -> None:
    """The flags every Tune command takes (where it runs, what each trial trains on, resume):
    ``command`` ("sweep", "ablation") names it in the help and gives ``--out``'s default.
    A command adds its own (what it searches or grids, --epochs, --seed, --smoke)."""
    p.add_argument("--cluster", action="store_true", help="join an existing Ray cluster")
    p.add_argument("--address", help="cluster address (default RAY_ADDRESS, else 'auto')")
    p.add_argument("--storage", help="Tune storage: a shared path or URI (default OUT/tune)")
    p.add_argument("--num-cpus", type=int, help="CPUs of the embedded Ray (default: all)")
    p.add_argument("--protocols", default="all", help="'all' (the four leave-one-out) or CPS_W,...")
    p.add_argument("--backbone", choices=BACKBONES)
    p.add_argument("--data", default="synthetic", help="'synthetic' or a cache path every node sees")
    p.add_argument("--synthetic", choices=sorted(SYNTHETIC_SIZES),
                   help="size of the synthetic benchmark (--data synthetic; default: small, with "
                   "--cluster: default, with --smoke: smoke)")
    p.add_argument("--workers-per-trial", type=int, default=1)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--max-failures", type=int, help="Tune retries of a failed trial "
                   "(default 0 locally, 2 with --cluster)")
    p.add_argument("--no-amp", action="store_true")
    p.add_argument("--resume", action="store_true", help=f"continue the {command} in --out")
    p.add_argument("--out", default=f"runs/{command}")


def parse_tune_args(p: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.workers_per_trial < 1 or args.gpus_per_worker < 0:
        p.error("--workers-per-trial must be >= 1 and --gpus-per-worker >= 0")
    return args
