"""analysis.figures: each figure is a real PNG of the expected size (and a PDF), drawn only when
the store has its data, with the reason when not."""

import matplotlib.image as mpimg
import numpy as np
import pytest
from analysis_store import ablation_store, sweep_store

from analysis import figures


def _png(path):
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img[..., :3].std() > 0.01  # not a blank canvas
    return img.shape[1], img.shape[0]


def test_roc_curve_is_exact():
    fpr, tpr = figures.roc_curve(np.array([0.9, 0.8, 0.8, 0.1]), np.array([1, 1, 0, 0]))
    assert fpr.tolist() == [0.0, 0.0, 0.5, 1.0] and tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


def test_ablation_store_figures(tmp_path):
    ablation_store(tmp_path / "store")
    made = {m.name: m for m in figures.make_all(tmp_path / "store", tmp_path / "figs")}
    drawn = {n for n, m in made.items() if m.paths}
    assert drawn == {"ablation", "roc_CPS_W", "roc_CPW_S", "radius_CPS_W", "radius_CPW_S", "training"}
    assert "not a sweep" in made["history"].reason and "not a sweep" in made["weights_map"].reason
    assert made["sensitivity_lambda_asyirm"].reason
    dpi = figures.DPI
    assert _png(tmp_path / "figs" / "ablation.png") == (6 * dpi, 4 * dpi)
    assert _png(tmp_path / "figs" / "roc_CPS_W.png") == (round(4.8 * dpi), round(4.5 * dpi))
    # radius: 3 domains (2 source val + target test) x 2 methods with scores
    radius_size = (round((2.8 * 3 + 0.5) * dpi), round((2.4 * 2 + 0.6) * dpi))
    assert _png(tmp_path / "figs" / "radius_CPS_W.png") == radius_size
    _png(tmp_path / "figs" / "training.png")
    for m in made.values():
        for p in m.paths:
            assert p.stat().st_size > 1000
            if p.suffix == ".pdf":
                assert p.read_bytes()[:5] == b"%PDF-"


def test_sweep_store_figures(tmp_path):
    sweep_store(tmp_path / "store")
    made = {m.name: m for m in figures.make_all(tmp_path / "store", tmp_path / "figs")}
    for name in ("sensitivity_lambda_asyirm", "weights_map", "history"):
        assert made[name].paths, made[name].reason
        _png(made[name].paths[0])
    assert "scores" in made["roc"].reason
    assert "lambda_mmsd" in made["sensitivity_lambda_mmsd"].reason


@pytest.mark.parametrize("store", ["empty"])
def test_empty_store_draws_nothing(tmp_path, store):
    (tmp_path / store).mkdir()
    made = figures.make_all(tmp_path / store, tmp_path / "figs")
    assert made and all(not m.paths and m.reason for m in made)
