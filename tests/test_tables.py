"""analysis.tables (and analysis.runs below it) on a store with known numbers."""

import pytest
from analysis_store import ablation_store, sweep_store

from analysis import tables
from rise_dist.metrics import AUC, HTER, ORACLE, VAL_THRESHOLD


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("ablation")
    ablation_store(root)
    return root


def _cells(t):
    return {r.label: dict(zip(t.columns, r.entries, strict=True)) for r in t.rows}


def test_numbers_order_bold_and_missing(store):
    t = tables.build(store)
    assert [r.label for r in t.rows] == ["ERM", "AsyIRM", "MMSD", "RiSe"]
    assert t.columns == ["CPS_W", "CPW_S", "Avg"]
    md = tables.render(t, "md")
    assert "| ERM | 21.00 ± 1.00 | 31.00 ± 1.00 | 26.00 ± 1.00 |" in md
    assert "| RiSe | **11.00 ± 1.00**† | **16.00 ± 1.00**† | **13.50 ± 1.00** |" in md
    assert "| AsyIRM | 19.00 ± 1.41 (2/3) [a] | 28.50 ± 0.71 (2/3) [b] | 23.00 (1/3) |" in md
    assert "| MMSD | 26.00 ± 1.00 | — [c] | — |" in md
    assert "a: AsyIRM on CPS_W: 1 missing" in md and "b: AsyIRM on CPW_S: 1 failed" in md
    assert "c: MMSD on CPW_S: 3 diverged" in md
    assert "3 seed(s)" in t.caption and "source_val" in t.caption and "test_eer" in t.caption


def test_paired_test_dagger(store):
    t = tables.build(store)
    # 3 seeds per protocol: p = 1/8 at best, never significant; Avg: 6 pairs, p = 1/64
    assert t.tests["CPS_W"].p == pytest.approx(1 / 8)
    assert t.tests["Avg"].p == pytest.approx(1 / 64) and t.tests["Avg"].n == 6
    rise = _cells(t)["RiSe"]
    assert rise["CPS_W"].dagger and rise["CPW_S"].dagger and not rise["Avg"].dagger


def test_rules_and_metrics_change_the_numbers(store):
    oracle = _cells(tables.build(store, ORACLE))
    assert oracle["ERM"]["CPS_W"].mean == pytest.approx(16.0)  # epoch 1: 5 points lower
    vt = _cells(tables.build(store, threshold_rule=VAL_THRESHOLD))
    assert vt["ERM"]["CPS_W"].mean == pytest.approx(22.0)
    auc = tables.build(store, metric=AUC)
    cells = _cells(auc)
    assert cells["ERM"]["CPS_W"].mean == pytest.approx(79.0) and cells["RiSe"]["CPS_W"].bold  # higher is better
    assert "AUC" in auc.caption and "higher is better" in auc.caption


def test_formats(store):
    t = tables.build(store, published=True)
    latex = tables.render(t, "latex")
    assert "\\toprule" in latex and "\\textbf{11.00 $\\pm$ 1.00}$^\\dagger$" in latex and "CPS\\_W" in latex
    csv = tables.render(t, "csv").splitlines()
    assert csv[0].startswith("method,label,column,metric")
    assert any(line.startswith("rise,RiSe,Avg,hter,source_val,test_eer,13.5,1.0,6") or
               line.startswith("rise,RiSe,Avg,hter,source_val,test_eer,13.5,1.0,3") for line in csv)
    html = tables.render(t, "html")
    assert "<table" in html and "<b>11.00 ± 1.00</b>†" in html
    with pytest.raises(ValueError, match="unknown format"):
        tables.render(t, "xlsx")


def test_published_rows_marked_and_never_bold(store):
    t = tables.build(store, published=True)
    pub = [r for r in t.rows if r.published]
    assert pub and all("(published, real benchmark:" in r.label for r in pub)
    mmdg = next(r for r in pub if r.method == "MMDG")
    assert mmdg.entries[0].mean == pytest.approx(12.79) and not any(e.bold for e in mmdg.entries)
    assert "synthetic benchmark" in t.caption and "not comparable" in t.caption


def test_sweep_store_picks_best_setting_by_validation(tmp_path):
    sweep_store(tmp_path)
    t = tables.build(tmp_path)
    cells = _cells(t)
    assert cells["RiSe"]["CPS_W"].mean == pytest.approx(10.1)  # lambda_asyirm 0.01: lowest val
    assert "best of 5" in t.caption
    assert cells["RiSe"]["Avg"].dagger  # no ERM to test against


def test_empty_store(tmp_path):
    assert tables.build(tmp_path).rows == []
    with pytest.raises(ValueError, match="unknown metric"):
        tables.build(tmp_path, metric="f1")
    assert HTER in tables.LOWER_IS_BETTER
