"""The training loop on real (small) synthetic data: rows, methods, resume, divergence."""

import dataclasses

import numpy as np
import pandas as pd
import pytest

from rise_dist import results
from rise_dist.config import SyntheticConfig, TrainConfig
from rise_dist.data.cache import open_cache
from rise_dist.data.synthetic import write_synthetic
from rise_dist.losses.objective import Objective
from rise_dist.train import loop
from rise_dist.train.checkpoint import CheckpointError

SMALL = SyntheticConfig(n_train=48, n_val=16, n_test=24, size=(16, 16))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn")
    write_synthetic(path, SMALL)
    return open_cache(path)


def _cfg(**kw):
    base = dict(protocol="CPS_W", epochs=2, batch_size=24, synthetic=SMALL, amp=False)
    return TrainConfig(**{**base, **kw})


def _train(cfg, out, cache, **kw):
    return loop.train(cfg, out, cache=cache, device="cpu", progress=False, **kw)


METRIC_COLS = ["val_hter", "val_auc", "test_hter", "test_auc", "test_tpr_at_fpr_1pct",
               "test_hter@val_threshold"]


@pytest.mark.parametrize("la, lm, method", [(0, 0, "erm"), (1.0, 0.1, "rise")])
def test_a_run_writes_one_row_per_epoch_with_config_metrics_and_losses(tmp_path, cache, la, lm, method):
    res = _train(_cfg(lambda_asyirm=la, lambda_mmsd=lm), tmp_path, cache)
    df = results.load(tmp_path)
    assert res.status == "completed" and list(df["epoch"]) == [1, 2]
    assert set(df["method"]) == {method} and set(df["status"]) == {"completed"}
    assert df["lambda_asyirm"].iloc[0] == la and df["model.backbone"].iloc[0] == "cnn"
    assert df[METRIC_COLS].apply(lambda c: c.between(0, 1)).all().all()
    assert (df["loss/ce"] > 0).all()
    assert ((df["loss/asyirm"] > 0) == (la > 0)).all() and ((df["loss/mmsd"] > 0) == (lm > 0)).all()
    assert df["code_version"].iloc[0].startswith("0.1.0")
    scores = pd.read_parquet(tmp_path / "scores" / f"{res.run_id}.parquet")
    assert len(scores) == 3 * 16 + 24 and scores["score"].between(0, 1).all()
    assert set(res.summary) == {"source_val", "oracle"}


class Interrupt(Exception):
    pass


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, cache):
    cfg = _cfg(epochs=3, lambda_asyirm=0.5, lambda_mmsd=0.1)
    straight = _train(cfg, tmp_path / "a", cache)

    def stop_after_2(row, ckpt):
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        _train(cfg, tmp_path / "b", cache, report=stop_after_2)
    assert list(results.load(tmp_path / "b")["epoch"]) == [1, 2]
    resumed = _train(cfg, tmp_path / "b", cache, resume=True)
    a, b = straight.rows, resumed.rows
    assert list(b["epoch"]) == [1, 2, 3]
    np.testing.assert_allclose(a[METRIC_COLS + ["loss/total"]].to_numpy(float),
                               b[METRIC_COLS + ["loss/total"]].to_numpy(float), rtol=0, atol=1e-6)


def test_resume_a_finished_run_to_more_epochs_adds_rows_without_repeating(tmp_path, cache):
    _train(_cfg(epochs=2), tmp_path, cache)
    with pytest.raises(loop.RunExistsError, match="pass --resume"):
        _train(_cfg(epochs=2), tmp_path, cache)
    res = _train(_cfg(epochs=4), tmp_path, cache, resume=True)
    df = results.load(tmp_path)
    assert list(df["epoch"]) == [1, 2, 3, 4] and res.status == "completed"
    # the cosine schedule is recomputed for 4 epochs: after epoch 3 it is not the 2-epoch end (0)
    assert df["epoch_lr"].iloc[2] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi * 3 / 4)))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, cache):
    res = _train(_cfg(epochs=1), tmp_path, cache)
    ckpt = tmp_path / "checkpoints" / res.run_id / loop.CHECKPOINT_NAME
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        _train(_cfg(epochs=2), tmp_path, cache, resume=True)


def test_a_nan_loss_ends_the_run_as_diverged_with_epoch_and_step(tmp_path, cache, monkeypatch):
    class Exploding(Objective):
        def forward(self, out, labels, domains, model, epoch, generator=None):
            total, logs = super().forward(out, labels, domains, model, epoch, generator)
            if epoch == 2:
                logs["loss/asyirm"] = float("nan")
                return total * float("nan"), logs
            return total, logs

    monkeypatch.setattr(loop, "Objective", Exploding)
    res = _train(_cfg(epochs=3, lambda_asyirm=1.0), tmp_path, cache)
    df = results.load(tmp_path)
    assert res.status == "diverged" and set(df["status"]) == {"diverged"}
    assert list(df["epoch"]) == [1, 2] and np.isnan(df["test_hter"].iloc[1])
    assert "loss/asyirm not finite at epoch 2, step 1" in df["status_reason"].iloc[0]
    assert res.summary["source_val"]["epoch"] == 1


def test_missing_modality_protocol_trains_and_tests(tmp_path, cache):
    res = _train(_cfg(protocol="CPS_W-no_ir", epochs=1), tmp_path, cache)
    assert res.status == "completed" and res.rows["protocol"].iloc[0] == "CPS_W-no_ir"


def test_same_seed_same_results(tmp_path, cache):
    a = _train(_cfg(seed=3), tmp_path / "a", cache).rows
    b = _train(_cfg(seed=3), tmp_path / "b", cache).rows
    c = _train(dataclasses.replace(_cfg(), seed=4), tmp_path / "c", cache).rows
    assert a[METRIC_COLS + ["loss/total"]].equals(b[METRIC_COLS + ["loss/total"]])
    assert not a["loss/total"].equals(c["loss/total"])
