"""experiments/ablation.py: argument errors (in process, before Ray), and end to end on real local
Ray (subprocesses with hard time limits): a smoke ablation with one failing trial, resume of a
finished and of a killed ablation."""

import json
import subprocess
import sys
import time

import pytest
from tune_cli import REPO, cli, env, kill_driver_after_first_epoch, raw_epochs

from rise_dist import results

CLI = cli("ablation")
sys.path.insert(0, str(REPO / "experiments"))
import ablation as ablation_cli  # noqa: E402

# 2 methods x 2 protocols x 1 seed: the smallest grid where every axis has two values
SMALL = ["--smoke", "--methods", "erm,rise", "--protocols", "CPS_W,CPW_S"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("data")  # one synthetic cache shared by the module's runs






@pytest.mark.parametrize("args, field", [
    (["--methods", "erm,irm"], "irm"),
    (["--sensitivity", "lambda_asyirm:0,1"], "--sensitivity"),
    (["--sensitivity", "lambda_asyirm=0,-1"], "lambda_asyirm"),
    (["--weights", "MISSING.yaml"], "MISSING.yaml"),
    (["--seeds", "0"], "seeds"),
    (["--protocols", "CPS_X"], "CPS_X")])
def test_bad_arguments_exit_2_naming_the_field(tmp_path, capsys, args, field):
    # --smoke: were an argument wrongly accepted, the run started would be short
    assert ablation_cli.main(args + ["--smoke", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err


def test_a_bad_weights_file_exits_2_naming_the_field(tmp_path, capsys):
    f = tmp_path / "w.yaml"
    f.write_text("lambda_asyirm: 1.0\nlambda_msd: 0.1\n")
    assert ablation_cli.main(["--smoke", "--weights", str(f), "--out", str(tmp_path)]) == 2
    assert "'lambda_msd'" in capsys.readouterr().err
    f.write_text("lambda_asyirm: -1.0\n")
    assert ablation_cli.main(["--smoke", "--weights", str(f), "--out", str(tmp_path)]) == 2
    assert "TrainConfig.lambda_asyirm = -1.0" in capsys.readouterr().err


def test_resume_with_nothing_to_resume_is_an_error(tmp_path, capsys):
    assert ablation_cli.main(["--resume", "--out", str(tmp_path)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


@pytest.mark.slow
def test_a_smoke_ablation_survives_a_failing_trial_and_a_resume_adds_no_rows(tmp_path, data_root):
    out = tmp_path / "ab"
    w = tmp_path / "w.yaml"
    w.write_text("lambda_asyirm: 0.5\nlambda_mmsd: 0.2\nlr: 0.002\n")
    t0 = time.perf_counter()
    p = subprocess.run(CLI + SMALL + ["--weights", str(w), "--out", str(out)], cwd=REPO,
                       env=env(data_root, **{ablation_cli.FAIL_ENV: "2"}),
                       capture_output=True, text=True, timeout=240)
    print(f"smoke ablation (4 trials, one failing) wall {time.perf_counter() - t0:.1f}s")
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert f"lambda_asyirm=0.5, lambda_mmsd=0.2, lr=0.002  from {w.resolve()}" in p.stdout
    assert "runs 3 completed, 1 failed" in p.stdout and "failed" in p.stdout.split("avg")[-1]

    df = results.load(out)
    assert df["trial_id"].nunique() == 4 and df["run_id"].nunique() == 4
    last = df.sort_values("epoch").groupby("run_id").tail(1).set_index("trial_id")
    assert sorted(zip(last["method"], last["protocol"], strict=True)) == [
        ("erm", "CPS_W"), ("erm", "CPW_S"), ("rise", "CPS_W"), ("rise", "CPW_S")]
    want = {"erm": (0.0, 0.0), "rise": (0.5, 0.2)}
    for _, r in last.iterrows():
        assert (r["lambda_asyirm"], r["lambda_mmsd"]) == want[r["method"]]
        assert json.loads(r["config"])["lr"] == 0.002 and r["seed"] == 0  # column lr: the schedule's
    failed = last[last["status"] == "failed"]
    assert len(failed) == 1 and "injected failure" in failed["status_reason"].iloc[0]
    assert (last["status"] == "completed").sum() == 3
    assert all(e == [1, 2] for rid, e in raw_epochs(out).items() if rid not in set(failed["run_id"]))
    before = raw_epochs(out)

    # the paper table of this store: both methods, the failed run's cell marked, not dropped
    t = subprocess.run([sys.executable, "-m", "analysis", "tables", "--results", str(out)], cwd=REPO,
                       env=env(data_root), capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr
    rows = {line.split("|")[1].strip(): line for line in t.stdout.splitlines() if line.startswith("| ")}
    assert {"ERM", "RiSe"} <= set(rows), t.stdout
    f = failed.iloc[0]
    row = rows[{"erm": "ERM", "rise": "RiSe"}[f["method"]]].split("|")
    cell = row[2 + ["CPS_W", "CPW_S"].index(f["protocol"])]
    assert "—" in cell and "failed" in t.stdout, t.stdout

    # resume of a finished ablation: no new trial, no row twice; the errored trial is retried
    # once (resume_errored) and, its failure being deterministic here, recorded failed again
    p = subprocess.run(CLI + ["--resume", "--out", str(out)], cwd=REPO, env=env(data_root),
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    assert "resuming the ablation" in p.stdout
    df2 = results.load(out)
    assert df2["trial_id"].nunique() == 4 and len(df2) == len(df)
    after = raw_epochs(out)
    assert after.keys() == before.keys()
    assert all(len(e) == len(set(e)) for e in after.values())


@pytest.mark.slow
def test_resume_after_the_driver_is_killed_finishes_the_planned_grid_once(tmp_path, data_root):
    out = tmp_path / "ab"
    args = SMALL + ["--epochs", "3", "--out", str(out)]
    environ = env(data_root)
    kill_driver_after_first_epoch(CLI + args, out, environ, tmp_path / "first.log")
    p = subprocess.run(CLI + ["--resume", "--out", str(out)], cwd=REPO, env=environ,
                       capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout[-4000:] + p.stderr[-4000:]
    df = results.load(out)
    assert df["trial_id"].nunique() == 4, df.groupby("trial_id").size()
    raw = raw_epochs(out)
    assert len(raw) == 4 and all(e == [1, 2, 3] for e in raw.values()), raw
    assert set(df["status"]) == {"completed"}
    assert "runs 4 completed, 0 failed" in p.stdout


