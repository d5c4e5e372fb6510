"""``python -m analysis tables|figures|report`` as a user runs it, and what it imports."""

import subprocess
import sys

import pytest
from analysis_store import ablation_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    ablation_store(root)
    return root


def _run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "analysis", *map(str, args)], capture_output=True,
                          text=True, timeout=300, **kw)


def test_tables_formats(store):
    md = _run("tables", "--results", store)
    assert md.returncode == 0, md.stderr
    assert "| RiSe | **11.00 ± 1.00**† | **16.00 ± 1.00**† | **13.50 ± 1.00** |" in md.stdout
    latex = _run("tables", "--results", store, "--format", "latex", "--metric", "auc", "--published")
    assert latex.returncode == 0 and "\\begin{tabular}" in latex.stdout
    assert "published, real benchmark" in latex.stdout
    csv = _run("tables", "--results", store, "--format", "csv", "--selection", "oracle", "--threshold",
               "val_threshold")
    assert csv.returncode == 0 and "erm,ERM,CPS_W,hter,oracle,val_threshold,17.0," in csv.stdout


def test_errors(tmp_path):
    r = _run("tables", "--results", tmp_path / "nope")
    assert r.returncode == 2 and "does not exist" in r.stderr
    r = _run("tables", "--results", tmp_path)
    assert r.returncode == 2 and "no runs" in r.stderr
    assert _run("tables", "--results", tmp_path, "--metric", "f1").returncode == 2  # argparse


def test_figures_via_main_import_neither_torch_nor_ray(store, tmp_path):
    # One process runs tables and figures through the CLI's main, then lists what got imported.
    code = ("import sys; from analysis.__main__ import main; "
            f"main(['tables', '--results', {str(store)!r}, '--published']); "
            f"main(['figures', '--results', {str(store)!r}, '--out', {str(tmp_path / 'figs')!r}]); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'sklearn')]; "
            "print('heavy imports:', bad)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "heavy imports: []" in r.stdout
    assert "wrote   ablation:" in r.stdout and "skipped history: no trial_id" in r.stdout
    assert (tmp_path / "figs" / "ablation.png").exists() and (tmp_path / "figs" / "ablation.pdf").exists()


def test_report_command(tmp_path):
    # A one-run store keeps this quick; the page itself is tested in test_report.py.
    from analysis_store import _row

    from rise_dist import results
    results.write_run(tmp_path / "s", "r1", [_row("r1", None, "CPS_W", "erm", 0, 1, 0.2, 20, 0.0, 0.0,
                                                     "completed")])
    r = _run("report", "--results", tmp_path / "s", "--out", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "<table class=\"results\">" in (tmp_path / "r.html").read_text()
