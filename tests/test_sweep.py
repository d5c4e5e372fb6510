"""The sweep's pieces: the partial-score handling with real OptunaSearch/Optuna, settings, the
summary, and a sweep joining a two-node cluster on loopback (real Ray)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from rise_dist.metrics import ORACLE
from rise_dist.tune import spaces, sweep

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, str(REPO / "experiments" / "sweep.py")]


def test_an_asha_stopped_trial_reaches_optuna_as_pruned_not_complete():
    searcher = sweep._partial_aware_searcher(spaces.search_space(), seed=0, epochs=3,
                                             metric="objective")
    for tid in ("full", "stopped", "errored"):
        assert searcher.suggest(tid)
    for it, v in ((1, 0.4), (2, 0.3), (3, 0.2)):
        searcher.on_trial_result("full", {"objective": v, "training_iteration": it})
    searcher.on_trial_complete("full", {"objective": 0.2, "training_iteration": 3})
    searcher.on_trial_result("stopped", {"objective": 0.45, "training_iteration": 1})
    searcher.on_trial_complete("stopped", {"objective": 0.45, "training_iteration": 1})
    searcher.on_trial_complete("errored", None, error=True)
    trials = {t.number: t for t in searcher._ot_study.trials}
    S = optuna.trial.TrialState
    assert [trials[i].state for i in range(3)] == [S.COMPLETE, S.PRUNED, S.FAIL]
    # Optuna's own convention: a pruned trial carries its last intermediate value, which TPE
    # ranks below every complete trial
    assert trials[0].value == 0.2 and trials[1].value == 0.45
    assert trials[1].intermediate_values == {1: 0.45}
    assert searcher._ot_study.best_trial.number == 0


def test_the_same_seed_suggests_the_same_points():
    a = sweep._partial_aware_searcher(spaces.search_space(), 7, 2, "objective")
    b = sweep._partial_aware_searcher(spaces.search_space(), 7, 2, "objective")
    assert [a.suggest(f"t{i}") for i in range(3)] == [b.suggest(f"t{i}") for i in range(3)]


def test_settings_round_trip_and_the_summary_names_an_oracle_objective(tmp_path):
    s = sweep.Settings(out=str(tmp_path), storage=str(tmp_path / "tune"), objective=ORACLE,
                       base={"epochs": 3}, protocols=["CPS_W"], trials=2)
    s.save()
    back = sweep.Settings.load(tmp_path)
    assert back == s and back.epochs == 3 and not back.uses_train
    assert sweep.Settings(out="o", storage="s", workers_per_trial=2).uses_train
    text = sweep.format_summary(s, {"trials": 0, "counts": {"completed": 0}, "best": None},
                                tmp_path / "optuna.db")
    assert "oracle_test_hter" in text and "ORACLE" in text and "optuna-dashboard" in text
    with pytest.raises(sweep.SweepError, match="nothing to resume"):
        sweep.Settings.load(tmp_path / "none")


def test_an_address_nobody_answers_is_a_clear_error():
    with pytest.raises(sweep.SweepError, match="no Ray cluster answers"):
        sweep.check_address("127.0.0.1:1", timeout=2)


@pytest.mark.slow
def test_a_cluster_sweep_joins_a_two_node_cluster_and_runs_trials_on_both(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from ray.cluster_utils import Cluster

    mib = 1024**2
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"driver_slot": 2}, "object_store_memory": 200 * mib,
        "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1, object_store_memory=200 * mib)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO),
               "RISE_DIST_DATA": str(tmp_path / "data")}
        env.pop("RAY_ADDRESS", None)
        env.pop(sweep.FAIL_ENV, None)
        p = subprocess.run(CLI + ["--cluster", "--address", cluster.address, "--storage",
                                  str(tmp_path / "storage"), "--out", str(tmp_path / "out"),
                                  "--smoke", "--protocols", "CPS_W", "--no-asha"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    finally:
        cluster.shutdown()
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "shared filesystem" in p.stderr  # the local --storage / --out warning
    nodes = set()
    for f in (tmp_path / "storage" / "sweep").glob("*/result.json"):
        for line in f.read_text().splitlines():
            nodes.add(json.loads(line)["node_id"])
    assert len(nodes) == 2, nodes  # two 1-CPU nodes, two concurrent trials
    study = optuna.load_study(study_name=sweep.STUDY_NAME,
                              storage=f"sqlite:///{tmp_path / 'out' / 'optuna.db'}")
    assert len(study.trials) == 2
