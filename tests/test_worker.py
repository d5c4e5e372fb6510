"""Lockstep trials over several protocols (plain loop, no Ray) and the Ray Train worker group
(real local Ray, 2 CPU workers)."""

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rise_dist import results
from rise_dist.config import ModelConfig, SyntheticConfig, TrainConfig
from rise_dist.data.cache import open_cache
from rise_dist.data.synthetic import write_synthetic
from rise_dist.losses.objective import Objective
from rise_dist.train import loop, worker

SMALL = SyntheticConfig(n_train=48, n_val=16, n_test=24, size=(16, 16))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # A sweep trial trains on one CPU (Ray sets its threads to its CPUs); on a busy 2-core box
    # torch's default of one thread per core makes these tiny epochs ~10x slower.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn")
    write_synthetic(path, SMALL)
    return open_cache(path)


def _cfgs(protocols=("CPS_W", "CPW_S"), **kw):
    base = dict(epochs=2, batch_size=24, synthetic=SMALL, amp=False, lambda_asyirm=0.5,
                lambda_mmsd=0.1)
    return [TrainConfig(protocol=p, **{**base, **kw}) for p in protocols]


def _raw_epochs(out):
    """Epochs per run file, read without the store's de-duplication."""
    return {f.stem: list(pd.read_parquet(f)["epoch"]) for f in (Path(out) / "results").glob("*.parquet")}


def test_lockstep_reports_each_epoch_once_with_per_protocol_metrics_and_means(tmp_path, cache):
    runs = worker.open_runs(_cfgs(), tmp_path, "t1", cache=cache, device="cpu")
    reports = [worker.trial_metrics(runs, e) for e, _ in worker.lockstep(runs)]
    worker.finish_runs(runs)
    assert [m["epoch"] for m in reports] == [1, 2]
    m = reports[-1]
    for key in ("val_hter", "test_hter", "source_val_hter", "oracle_test_hter"):
        assert math.isclose(m[key], np.mean([m[f"CPS_W/{key}"], m[f"CPW_S/{key}"]]))
    assert m["objective"] == m["source_val_hter"] and m["objective_name"] == "source_val_hter"
    assert m["oracle_test_hter"] <= m["source_val_test_hter"] + 1e-12
    assert all(math.isfinite(v) for v in m.values() if isinstance(v, float))
    oracle = worker.trial_metrics(runs, 2, "oracle")
    assert oracle["objective"] == oracle["oracle_test_hter"]
    assert oracle["objective_name"] == "oracle_test_hter"
    df = results.load(tmp_path)
    assert set(df["trial_id"]) == {"t1"} and set(df["status"]) == {"completed"}
    assert sorted(_raw_epochs(tmp_path).values()) == [[1, 2], [1, 2]]


def test_a_restarted_trial_catches_up_without_training_or_writing_an_epoch_twice(tmp_path, cache):
    a, b = _cfgs(epochs=3)
    ra = loop.Run(a, tmp_path, trial_id="t2", cache=cache, device="cpu", progress=False)
    for row in ra:
        if row["epoch"] == 2:
            break
    rb = loop.Run(b, tmp_path, trial_id="t2", cache=cache, device="cpu", progress=False)
    next(iter(rb))  # killed here: CPS_W at epoch 2, CPW_S at epoch 1, Tune saw epoch 1
    runs = worker.open_runs([a, b], tmp_path, "t2", cache=cache, device="cpu")
    assert [r.epoch for r in runs] == [2, 1]
    trained = []
    orig = loop.Run._train_epoch

    def spy(self, epoch):
        trained.append((self.cfg.protocol, epoch))
        return orig(self, epoch)

    loop.Run._train_epoch = spy
    try:
        seen = [e for e, _ in worker.lockstep(runs, reported=1)]
    finally:
        loop.Run._train_epoch = orig
    assert seen == [2, 3]
    assert trained == [("CPW_S", 2), ("CPS_W", 3), ("CPW_S", 3)]
    assert sorted(_raw_epochs(tmp_path).values()) == [[1, 2, 3], [1, 2, 3]]


def test_a_diverged_protocol_ends_the_trial_with_a_finite_bad_score(tmp_path, cache, monkeypatch):
    class Exploding(Objective):
        def forward(self, out, labels, domains, model, epoch, generator=None):
            total, logs = super().forward(out, labels, domains, model, epoch, generator)
            if epoch == 2 and self.cfg.protocol == "CPW_S":
                return total * float("nan"), logs
            return total, logs

    monkeypatch.setattr(loop, "Objective", Exploding)
    orig_init = Exploding.__init__

    def init(self, cfg, *a, **kw):
        orig_init(self, cfg, *a, **kw)
        self.cfg = cfg

    monkeypatch.setattr(Exploding, "__init__", init)
    runs = worker.open_runs(_cfgs(epochs=3), tmp_path, "t3", cache=cache, device="cpu")
    out = [(e, [r.cfg.protocol for r in d], worker.trial_metrics(runs, e))
           for e, d in worker.lockstep(runs)]
    worker.finish_runs(runs)
    assert [(e, d) for e, d, _ in out] == [(1, []), (2, ["CPW_S"])]
    bad = out[-1][2]
    assert bad["diverged"] and bad["objective"] == worker.BAD_SCORE and math.isfinite(bad["val_hter"])
    df = results.load(tmp_path)
    status = df.groupby("protocol")["status"].first().to_dict()
    assert status == {"CPS_W": "stopped_early", "CPW_S": "diverged"}
    assert "CPW_S diverged" in df["status_reason"].iloc[0]


def test_the_injected_failure_hook_matches_only_its_trial_and_first_epoch():
    assert worker.trial_number("/x/trainable_ab12cd34_3_lr=0.1_2026") == 3
    worker.injected_failure(2, 3, 1)
    worker.injected_failure(3, 3, 2)
    worker.injected_failure(3, None, 1)
    with pytest.raises(RuntimeError, match="injected failure"):
        worker.injected_failure(3, 3, 1)


DDP_SCRIPT = r"""
import sys, json
from rise_dist.tune.sweep import Settings, run_sweep
s = Settings(out=sys.argv[1], storage=sys.argv[1] + "/tune", protocols=["CPS_W"], trials=2,
             base={"epochs": 6, "batch_size": 24, "amp": False, "synthetic": json.loads(sys.argv[2])},
             workers_per_trial=2, asha=False, train_max_failures=2, stop_after=4)
summary = run_sweep(s, num_cpus=2)
print("SUMMARY", json.dumps({"counts": summary["counts"], "ws": summary["world_size"]}))
"""


def _descendants(root: int) -> set[int]:
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    found, todo = set(), [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in found]
        found.update(kids)
        todo.extend(kids)
    return found


def _train_worker_pids(root: int) -> list[int]:
    pids = []
    for pid in _descendants(root):
        try:
            if b"RayTrainWorker" in Path(f"/proc/{pid}/cmdline").read_bytes():
                pids.append(pid)
        except OSError:
            pass
    return sorted(pids)


@pytest.mark.slow
def test_two_worker_ray_train_trials_survive_a_killed_worker_and_being_stopped_by_tune(tmp_path):
    """World size 2 (gloo, CPU). In the first trial a Train worker killed by its pid restarts the
    group, which resumes from the last checkpoint: no epoch trained or written twice. Tune stops
    both trials after epoch 4 of 6 (as ASHA would): the stopped Train trial frees its workers
    (the dashboard is on), so the second trial starts instead of waiting forever (notes §0.2)."""
    import json

    from rise_dist.config import to_dict

    out = tmp_path / "out"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RISE_DIST_DATA": str(tmp_path / "data"),
           "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S": "60", "PYTHONPATH": str(REPO)}
    env.pop("RAY_ADDRESS", None)
    log = open(tmp_path / "log.txt", "w+")
    proc = subprocess.Popen([sys.executable, "-c", DDP_SCRIPT, str(out), json.dumps(to_dict(SMALL))],
                            env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    killed, before = None, None
    try:
        deadline = time.time() + 280
        while time.time() < deadline and proc.poll() is None and killed is None:
            raw = _safe_raw(out)
            if raw and max(len(v) for v in raw.values()) >= 2:
                before = results.load(out)
                pids = _train_worker_pids(proc.pid)
                if pids:
                    killed = pids[-1]
                    os.kill(killed, signal.SIGKILL)
            time.sleep(0.2)
        proc.wait(timeout=max(1, deadline - time.time()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    log.seek(0)
    text = log.read()
    log.close()
    assert proc.returncode == 0, text[-5000:]
    assert killed is not None, "no Train worker found to kill"
    line = [x for x in text.splitlines() if x.startswith("SUMMARY")][-1]
    summary = json.loads(line.split(" ", 1)[1])
    assert summary["counts"]["stopped_early"] == 2 and summary["ws"] == 2
    raw = _raw_epochs(out)
    assert len(raw) == 2
    for epochs in raw.values():  # Tune's stop reaches the workers while they train on: 4..6
        assert 4 <= len(epochs) <= 6 and epochs == list(range(1, len(epochs) + 1)), raw
    df = results.load(out)
    assert df["trial_id"].nunique() == 2
    for _, g in df.groupby("run_id"):
        assert set(g["status"]) == ({"completed"} if len(g) == 6 else {"stopped_early"})
    assert df["val_hter"].between(0, 1).all()
    # the first trial's epochs finished before the kill were kept, not retrained
    first = df[df["run_id"] == before["run_id"].iloc[0]].sort_values("epoch")
    k = len(before)
    cols = ["epoch", "val_hter", "test_hter", "loss/total", "epoch_seconds"]
    pd.testing.assert_frame_equal(before[cols].reset_index(drop=True),
                                  first[cols].iloc[:k].reset_index(drop=True))


def _safe_raw(out):
    try:
        return _raw_epochs(out)
    except (OSError, ValueError):
        return {}


@pytest.mark.slow
def test_two_ddp_workers_train_exactly_what_one_process_trains_on_the_same_global_batch(
        tmp_path, monkeypatch):
    """ERM with per-sample normalisation (GroupNorm) and no dropout: the global-batch gradient
    is the mean of the two ranks' slice gradients, so a 2-worker Ray Train run (gloo, CPU) and
    the plain loop in one process follow the same loss curve and reach the same scores, up to
    float summation order. (With BatchNorm on CPU each rank normalises by its slice's
    statistics; with AsyIRM/MMSD the per-rank penalties are not batch-decomposable: the
    standard DDP approximation, not tested for equality.)"""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.setenv("RISE_DIST_DATA", str(tmp_path / "data"))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    cfg = TrainConfig(protocol="CPS_W", epochs=2, batch_size=24, synthetic=SMALL, amp=False,
                      lambda_asyirm=0.0, lambda_mmsd=0.0, model=ModelConfig(norm="group", dropout=0.0))
    one = loop.train(cfg, tmp_path / "one", progress=False)
    assert one.status == "completed"
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"RISE_DIST_DATA": str(tmp_path / "data")}})
    try:
        worker.trainer([cfg], out_dir=tmp_path / "two", trial_id="ddp", objective="source_val",
                       num_workers=2, gpus_per_worker=0, storage_path=str(tmp_path / "train"),
                       max_failures=0).fit()
    finally:
        ray.shutdown()
    a = results.load(tmp_path / "one").sort_values("epoch").reset_index(drop=True)
    b = results.load(tmp_path / "two").sort_values("epoch").reset_index(drop=True)
    assert list(a["epoch"]) == list(b["epoch"]) == [1, 2]
    assert set(b["status"]) == {"completed"}
    np.testing.assert_allclose(b["loss/ce"], a["loss/ce"], rtol=1e-4)
    for col in ("val_hter", "test_hter", "val_auc", "test_auc"):
        np.testing.assert_allclose(b[col], a[col], atol=0.02, err_msg=col)
