"""experiments/train.py end to end: the real command in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from rise_dist import results

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
SMALL = """
batch_size: 24
amp: false
synthetic: {n_train: 48, n_val: 16, n_test: 24, size: [16, 16]}
"""


def _run(tmp_path, *args):
    env = {**os.environ, "RISE_DIST_DATA": str(tmp_path / "data")}
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "train.py"), *args],
                          capture_output=True, text=True, env=env, timeout=600)


def test_train_resume_and_errors(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text(SMALL)
    out = tmp_path / "run"
    p = _run(tmp_path, "--protocol", "CSW_P", "--method", "rise", "--data", "synthetic",
             "--epochs", "1", "--seed", "1", "--out", str(out), "--config", str(cfg), "--no-progress")
    assert p.returncode == 0, p.stderr
    assert "selection source_val" in p.stdout and "threshold val_threshold" in p.stdout
    df = results.load(out)
    assert list(df["epoch"]) == [1] and df["method"].iloc[0] == "rise"
    assert df["protocol"].iloc[0] == "CSW_P" and df["seed"].iloc[0] == 1
    assert df["lambda_mmsd"].iloc[0] > 0 and df["synthetic.n_train"].iloc[0] == 48
    assert list((tmp_path / "data").glob("synthetic-*"))  # the benchmark was built on first use

    p = _run(tmp_path, "--protocol", "CSW_P", "--method", "rise", "--epochs", "2", "--seed", "1",
             "--out", str(out), "--config", str(cfg), "--resume", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert list(results.load(out)["epoch"]) == [1, 2]

    p = _run(tmp_path, "--protocol", "CPS_X", "--out", str(out))
    assert p.returncode == 1 and "CPS_W" in p.stderr and "Traceback" not in p.stderr
    p = _run(tmp_path, "--method", "erm", "--lambda-asyirm", "0.5", "--out", str(out))
    assert p.returncode == 1 and "is method asyirm" in p.stderr
    p = _run(tmp_path, "--data", str(tmp_path / "nowhere"), "--out", str(out))
    assert p.returncode == 1 and "does not exist" in p.stderr
