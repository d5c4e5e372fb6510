"""The results store: atomic per-run files, load/dedupe, selection rules."""

import math

import pandas as pd
import pytest

from rise_dist import results
from rise_dist.metrics import ORACLE, SOURCE_VAL, VAL_THRESHOLD


def _row(run, epoch, val, test, test_v=0.5, protocol="CPS_W"):
    return {"run_id": run, "protocol": protocol, "epoch": epoch, "val_hter": val,
            "test_hter": test, "test_hter@val_threshold": test_v, "lambda_asyirm": 0.1}


def test_column_names():
    assert results.column("val", "hter") == "val_hter"
    assert results.column("test", "auc") == "test_auc"
    assert results.column("test", "hter", VAL_THRESHOLD) == "test_hter@val_threshold"
    with pytest.raises(ValueError, match="unknown threshold rule"):
        results.column("test", "hter", "nope")


def test_flatten_nested_config():
    flat = results.flatten({"a": 1, "model": {"backbone": "cnn"}, "size": [32, 32]})
    assert flat == {"a": 1, "model.backbone": "cnn", "size": "[32, 32]"}


def test_write_replaces_and_load_gathers_runs_recursively(tmp_path):
    results.write_run(tmp_path / "t1", "a", [_row("a", 1, 0.3, 0.4)])
    results.write_run(tmp_path / "t1", "a", [_row("a", 1, 0.3, 0.4), _row("a", 2, 0.2, 0.5)])
    results.write_run(tmp_path / "t2", "b", [_row("b", 1, 0.1, 0.2)])
    df = results.load(tmp_path)
    assert sorted(zip(df.run_id, df.epoch, strict=True)) == [("a", 1), ("a", 2), ("b", 1)]
    assert not list(tmp_path.rglob(".*.tmp"))
    assert list(results.load(tmp_path, columns=["run_id", "epoch"]).columns) == ["run_id", "epoch"]


def test_a_column_some_run_files_lack_loads_as_nan_for_their_rows(tmp_path):
    results.write_run(tmp_path, "old", [_row("old", 1, 0.3, 0.4)])
    results.write_run(tmp_path, "new", [{**_row("new", 1, 0.2, 0.5), "train_seconds": 1.5}])
    df = results.load(tmp_path, columns=["run_id", "train_seconds"]).set_index("run_id")
    assert df.loc["new", "train_seconds"] == 1.5 and math.isnan(df.loc["old", "train_seconds"])


def test_load_errors_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        results.load(tmp_path / "none")
    assert results.load(tmp_path).empty
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.parquet: not a readable results file"):
        results.load(tmp_path)


def test_selection_rules_pick_their_epoch():
    df = pd.DataFrame([_row("a", 1, 0.30, 0.10), _row("a", 2, 0.20, 0.40), _row("a", 3, 0.20, 0.30),
                       _row("b", 1, math.nan, 0.1), _row("b", 2, 0.5, 0.2, test_v=0.05)])
    sv = results.select(df, SOURCE_VAL).set_index("run_id")
    assert sv.loc["a", "epoch"] == 3  # val tie between 2 and 3: the later epoch
    assert sv.loc["b", "epoch"] == 2  # a NaN validation epoch is never selected
    orc = results.select(df, ORACLE).set_index("run_id")
    assert orc.loc["a", "epoch"] == 1 and orc.loc["b", "epoch"] == 1
    assert results.select(df, ORACLE, VAL_THRESHOLD).set_index("run_id").loc["b", "epoch"] == 2
    with pytest.raises(ValueError, match="unknown selection rule"):
        results.select(df, "best")
