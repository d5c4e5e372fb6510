"""experiments/sweep.py end to end on real local Ray (subprocesses with hard time limits)."""

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from tune_cli import REPO, cli, env, kill_driver_after_first_epoch, raw_epochs

from rise_dist import results

CLI = cli("sweep")
sys.path.insert(0, str(REPO / "experiments"))
import sweep as sweep_cli  # noqa: E402


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # one synthetic cache shared by the module's sweeps






def _study(out):
    return optuna.load_study(study_name="rise-sweep", storage=f"sqlite:///{Path(out) / 'optuna.db'}")


def test_cluster_needs_storage_and_an_unreachable_address_fails_fast(tmp_path, capsys):
    assert sweep_cli.main(["--cluster", "--out", str(tmp_path)]) == 2
    assert "--storage" in capsys.readouterr().err
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="shared filesystem"):
        rc = sweep_cli.main(["--cluster", "--address", "127.0.0.1:1", "--storage",
                             str(tmp_path / "st"), "--out", str(tmp_path)])
    assert rc == 2 and "no Ray cluster answers at 127.0.0.1:1" in capsys.readouterr().err
    assert time.perf_counter() - t0 < 15


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys):
    assert sweep_cli.main(["--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_sweep_writes_every_epoch_of_every_protocol_and_survives_a_failing_trial(
        tmp_path, data_root):
    out = tmp_path / "sw"
    t0 = time.perf_counter()
    p = subprocess.run(CLI + ["--smoke", "--trials", "3", "--out", str(out)], cwd=REPO,
                       env=env(data_root, **{sweep_cli.FAIL_ENV: "2"}), capture_output=True,
                       text=True, timeout=300)
    wall = time.perf_counter() - t0
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    print(f"smoke sweep (3 trials, 4 protocols, 2 epochs) wall {wall:.1f}s")
    assert "best trial" in p.stdout and "objective source_val_hter" in p.stdout
    assert "optuna.db" in p.stdout and "source_val CPS_W" in p.stdout

    df = results.load(out)
    assert df["trial_id"].nunique() == 3
    for col in ("lambda_asyirm", "lambda_mmsd", "asyirm.margin", "mmsd.temperature", "lr"):
        assert col in df
    for tid, g in df.groupby("trial_id"):
        per = g.groupby("protocol")["epoch"].apply(sorted)
        assert set(per.index) == {"CPS_W", "CPW_S", "CSW_P", "PSW_C"}, tid
        assert len({tuple(v) for v in per}) == 1, per  # lockstep: same epochs in every protocol
        k = len(per.iloc[0])
        assert per.iloc[0] == list(range(1, k + 1))
        status = set(g["status"])
        assert len(status) == 1 and status <= {"completed", "stopped_early", "failed"}, status
        if status == {"completed"}:
            assert k == 2
    failed = df[df["status"] == "failed"]
    assert failed["trial_id"].nunique() == 1
    assert failed["status_reason"].str.contains("injected failure").all()
    assert (df["status"] == "completed").any() and "running" not in set(df["status"])
    for epochs in raw_epochs(out).values():
        assert len(epochs) == len(set(epochs))

    study = _study(out)
    states = [t.state for t in study.trials]
    assert len(states) == 3 and states.count(optuna.trial.TrialState.FAIL) == 1
    assert optuna.trial.TrialState.COMPLETE in states
    assert study.user_attrs["objective"] == "source_val_hter"
    best = study.best_trial
    assert 0 <= best.value <= 1 and set(best.params) >= {"use_asyirm", "use_mmsd"}
    for t in study.trials:  # define-by-run: a weight is a parameter only under its open gate
        assert all(("lambda_" + g[4:] in t.params) == t.params[g] for g in ("use_asyirm", "use_mmsd"))


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_finishes_every_trial_once(tmp_path, data_root):
    out = tmp_path / "sw"
    args = ["--smoke", "--trials", "3", "--epochs", "3", "--protocols", "CPS_W,CPW_S",
            "--no-asha", "--out", str(out)]
    environ = env(data_root)
    kill_driver_after_first_epoch(CLI + args, out, environ, tmp_path / "first.log")
    assert results.load(out)["trial_id"].nunique() >= 1
    p = subprocess.run(CLI + ["--resume", "--out", str(out)], cwd=REPO, env=environ,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "resuming the sweep" in p.stdout

    df = results.load(out)
    assert df["trial_id"].nunique() == 3, df.groupby("trial_id").size()
    raw = raw_epochs(out)
    assert len(raw) == 3 * 2 and all(e == [1, 2, 3] for e in raw.values()), raw
    assert set(df["status"]) == {"completed"}
    study = _study(out)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 3


