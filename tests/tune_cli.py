"""What the end-to-end tests of the two Tune commands (experiments/sweep.py, ablation.py) share:
their environment (loopback Ray, no auth, one synthetic cache), reading run files raw, and
killing a command's driver mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FAIL_ENVS = ("RISE_DIST_SWEEP_FAIL_TRIAL", "RISE_DIST_ABLATION_FAIL_TRIAL")


def cli(name: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / f"{name}.py")]


def env(data_root, **extra) -> dict:
    out = {**os.environ, "RAY_AUTH_MODE": "disabled", "RISE_DIST_DATA": str(data_root),
           "PYTHONPATH": str(REPO), "RAY_DEDUP_LOGS": "0"}
    out.pop("RAY_ADDRESS", None)
    for k in FAIL_ENVS:
        out.pop(k, None)
    out.update(extra)
    return out


def raw_epochs(out) -> dict:
    """Every run file's epochs, read without the store's de-duplication."""
    return {f.stem: list(pd.read_parquet(f)["epoch"])
            for f in sorted((Path(out) / "results").glob("*.parquet"))}


def safe_raw(out) -> dict:
    try:
        return raw_epochs(out)
    except (OSError, ValueError):  # a file being replaced
        return {}


def kill_driver_after_first_epoch(cmd: list[str], out, environ: dict, log_path) -> None:
    """Start ``cmd``, SIGKILL its driver as soon as some run has written epoch 1, then make sure
    nothing of that Ray writes any more (what a crashed laptop or a lost head node leaves)."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None:
            if any(1 in e for e in safe_raw(out).values()):
                break
            time.sleep(0.5)
        assert proc.poll() is None, f"{cmd[1]} ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # the driver only; Ray's reaper takes its processes
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        log.close()
    time.sleep(3)
    try:  # whatever of the first Ray outlived its driver must not write during the resume
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
