"""analysis/published.csv: well-formed, sourced, in percent, on this project's protocol names."""

import pytest

from analysis import published
from rise_dist.data.protocols import LEAVE_ONE_OUT, PROTOCOLS
from rise_dist.metrics import AUC, HTER


def test_file_is_well_formed_and_sourced():
    df = published.load()
    assert len(df) > 0
    assert set(df["metric"]) <= {HTER, AUC}
    assert set(df["protocol"]) <= set(PROTOCOLS)
    assert df["value"].between(0, 100).all()
    assert df["source"].str.len().gt(0).all() and df["reference"].str.contains("http").all()
    assert not df.duplicated(["method", "protocol", "metric", "source"]).any()


def test_rows_for_a_metric():
    rows = {r.method: r for r in published.rows(HTER, list(LEAVE_ONE_OUT))}
    assert rows["MMDG"].values["CPS_W"] == pytest.approx(12.79)
    assert set(rows["MMDG"].values) == set(LEAVE_ONE_OUT)
    assert published.rows("tpr_at_fpr_1pct", list(LEAVE_ONE_OUT)) == []


def test_missing_column_is_an_error(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("method,protocol,value\nX,CPS_W,1\n")
    with pytest.raises(ValueError, match="missing column"):
        published.load(p)
