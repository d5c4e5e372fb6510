"""Tests for rise_dist.losses.objective: the weighted sum, zero weight = no module and no compute,
the logs, and the evaluation score."""

from __future__ import annotations

import math

import pytest
import torch
from loss_standins import MODALITIES, D, TinyModel

from rise_dist.config import AsyIRMConfig, MMSDConfig, TrainConfig
from rise_dist.losses import objective as objective_module
from rise_dist.losses.asyirm import AsyIRM
from rise_dist.losses.ce import ce_loss
from rise_dist.losses.mmsd import MMSD
from rise_dist.losses.objective import LOSS_KEYS, Objective


def setup(lambda_asyirm: float, lambda_mmsd: float, b: int = 12, **kw):
    torch.manual_seed(0)
    cfg = TrainConfig(lambda_asyirm=lambda_asyirm, lambda_mmsd=lambda_mmsd, **kw)
    model = TinyModel()
    g = torch.Generator().manual_seed(1)
    x = {m: torch.randn(b, 6, generator=g) for m in MODALITIES}
    labels = (torch.arange(b) % 2).float()
    domains = torch.arange(b) % 3
    return cfg, model, model(x), labels, domains


class Spy:
    """Counts calls to a loss module's ``terms`` (what the objective runs) for every instance."""

    def __init__(self, monkeypatch, cls):
        self.calls = 0
        original = cls.terms

        def spied(module, *args, **kwargs):
            self.calls += 1
            return original(module, *args, **kwargs)

        monkeypatch.setattr(cls, "terms", spied)


def test_erm_builds_no_term_computes_nothing_and_is_plain_ce(monkeypatch):
    asy_spy, mmsd_spy = Spy(monkeypatch, AsyIRM), Spy(monkeypatch, MMSD)
    cfg, model, out, labels, domains = setup(0.0, 0.0)
    obj = Objective(cfg, D, 3)
    assert obj.asyirm is None and obj.mmsd is None
    assert list(obj.parameters()) == [] and obj.state_dict() == {}
    total, logs = obj(out, labels, domains, model, epoch=5)
    assert asy_spy.calls == 0 and mmsd_spy.calls == 0 and model.fuse_calls == 0
    assert total.item() == pytest.approx(ce_loss(out.logit, labels).item())
    assert set(logs) == set(LOSS_KEYS)
    assert logs["loss/asyirm"] == 0.0 and logs["loss/mmsd"] == 0.0


def test_a_zero_weight_never_constructs_its_module(monkeypatch):
    class Forbidden:
        def __init__(self, *args, **kwargs):
            raise AssertionError("constructed")

    monkeypatch.setattr(objective_module, "AsyIRM", Forbidden)
    monkeypatch.setattr(objective_module, "MMSD", Forbidden)
    cfg, *_ = setup(0.0, 0.0)
    Objective(cfg, D, 3)  # neither is built
    with pytest.raises(AssertionError, match="constructed"):
        Objective(setup(1.0, 0.0)[0], D, 3)
    with pytest.raises(AssertionError, match="constructed"):
        Objective(setup(0.0, 1.0)[0], D, 3)


def test_asyirm_only_adds_exactly_its_weighted_term_and_never_mixes(monkeypatch):
    mmsd_spy = Spy(monkeypatch, MMSD)
    cfg, model, out, labels, domains = setup(0.5, 0.0)
    obj = Objective(cfg, D, 3)
    assert obj.mmsd is None and isinstance(obj.asyirm, AsyIRM)
    total, logs = obj(out, labels, domains, model, epoch=5)
    term, sub = obj.asyirm(out, labels, domains, epoch=5)
    assert total.item() == pytest.approx(ce_loss(out.logit, labels).item() + 0.5 * term.item(), rel=1e-6)
    assert logs["loss/asyirm"] == pytest.approx(term.item(), rel=1e-6) and logs["loss/mmsd"] == 0.0
    assert mmsd_spy.calls == 0 and model.fuse_calls == 0
    assert {k: logs[k] for k in sub} == pytest.approx(sub)


def test_mmsd_only_adds_exactly_its_weighted_term_with_one_fusion_pass(monkeypatch):
    asy_spy = Spy(monkeypatch, AsyIRM)
    cfg, model, out, labels, domains = setup(0.0, 2.0)
    obj = Objective(cfg, D, 3)
    assert obj.asyirm is None and isinstance(obj.mmsd, MMSD)
    total, logs = obj(out, labels, domains, model, epoch=5, generator=torch.Generator().manual_seed(4))
    assert model.fuse_calls == 1 and asy_spy.calls == 0
    term, _ = obj.mmsd(out, labels, domains, model, generator=torch.Generator().manual_seed(4))
    assert total.item() == pytest.approx(ce_loss(out.logit, labels).item() + 2.0 * term.item(), rel=1e-6)
    assert logs["loss/mmsd"] == pytest.approx(term.item(), rel=1e-6) and logs["loss/asyirm"] == 0.0


@pytest.mark.parametrize("variant", ["slot", "intrinsic"])
def test_rise_logs_every_term_and_gives_finite_gradients_to_model_and_objective(variant):
    cfg, model, out, labels, domains = setup(1.0, 0.1, mmsd=MMSDConfig(variant=variant),
                                             asyirm=AsyIRMConfig(warmup_epochs=0))
    obj = Objective(cfg, D, 3)
    total, logs = obj(out, labels, domains, model, epoch=1, generator=torch.Generator().manual_seed(0))
    assert total.shape == () and set(LOSS_KEYS) <= set(logs)
    assert any(k.startswith("asyirm/") for k in logs) and any(k.startswith("mmsd/") for k in logs)
    assert all(isinstance(v, float) and math.isfinite(v) for v in logs.values())
    assert logs["loss/total"] == pytest.approx(total.item())
    assert logs["loss/total"] == pytest.approx(logs["loss/ce"] + logs["loss/asyirm"] + 0.1 * logs["loss/mmsd"],
                                               rel=1e-5)
    total.backward()
    params = [*model.parameters(), *obj.parameters()]
    assert any(p is obj.asyirm.raw_radius for p in obj.parameters())
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_objective_state_round_trips_through_a_checkpoint():
    cfg, model, out, labels, domains = setup(1.0, 1.0)
    obj = Objective(cfg, D, 3)
    obj(out, labels, domains, model, epoch=1, generator=torch.Generator().manual_seed(0))
    obj.asyirm.set_radius(7.0)  # not what a fresh module would initialise from this batch
    fresh = Objective(cfg, D, 3)
    fresh.load_state_dict(obj.state_dict())
    a = obj(out, labels, domains, model, epoch=3, generator=torch.Generator().manual_seed(0))[1]
    b = fresh(out, labels, domains, model, epoch=3, generator=torch.Generator().manual_seed(0))[1]
    assert a == pytest.approx(b)


def test_live_logit_is_the_fused_classifier_logit_for_every_method():
    for la, lm in [(0.0, 0.0), (1.0, 1.0)]:
        cfg, model, out, *_ = setup(la, lm)
        assert Objective(cfg, D, 3).live_logit(out) is out.logit


@pytest.mark.parametrize("variant", ["slot", "intrinsic"])
def test_rise_under_bf16_autocast_is_finite_and_close_to_float32(variant):
    """The loop runs the objective under autocast; radii and similarities are kept in float32."""
    cfg, model, _, labels, domains = setup(1.0, 1.0, mmsd=MMSDConfig(variant=variant))
    x = {m: torch.randn(12, 6, generator=torch.Generator().manual_seed(5)) for m in MODALITIES}
    obj = Objective(cfg, D, 3)
    ref, _ = obj(model(x), labels, domains, model, epoch=5, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        total, logs = obj(out, labels, domains, model, epoch=5, generator=torch.Generator().manual_seed(0))
    assert out.fused.dtype == torch.bfloat16  # so the test does exercise low precision
    assert total.dtype == torch.float32 and all(math.isfinite(v) for v in logs.values())
    assert total.item() == pytest.approx(ref.item(), rel=0.05)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in [*model.parameters(), *obj.parameters()]
               if p.grad is not None)
