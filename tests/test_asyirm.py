"""Tests for rise_dist.losses.asyirm: radial logit, IRM penalty, asymmetric margins, spread, domain
head, radius initialisation and NaN-free edge batches."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from loss_standins import MODALITIES, D, Output
from torch import Tensor

from rise_dist.config import AsyIRMConfig
from rise_dist.losses.asyirm import SUB_TERMS, AsyIRM, irm_penalty_per_domain


def at_radii(radii: list[float] | Tensor, seed: int = 0, dim: int = D) -> Tensor:
    """Features (B, dim) in random directions with the given norms."""
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(len(radii), dim, generator=g), dim=1)
    return u * torch.as_tensor(radii, dtype=torch.float32).unsqueeze(1)


def output(fused: Tensor, seed: int = 1, requires_grad: bool = False) -> Output:
    g = torch.Generator().manual_seed(seed)
    modality = {m: torch.randn(len(fused), fused.shape[1], generator=g) * 2 for m in MODALITIES}
    if requires_grad:
        fused = fused.clone().requires_grad_(True)
        modality = {m: f.requires_grad_(True) for m, f in modality.items()}
    return Output(torch.zeros(len(fused)), fused, modality)


def fused_only(**kw) -> AsyIRMConfig:
    """Only the fused space, no domain head: isolates the radial sub-terms."""
    return AsyIRMConfig(**{"per_modality": False, "domain_head_weight": 0.0, **kw})


def random_batch(b: int = 24, n_domains: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fused = torch.randn(b, D, generator=g) * 2
    labels = (torch.arange(b) % 2).float()
    domains = torch.arange(b) % n_domains
    return fused, labels, domains


# --- shapes, logs, gradients -------------------------------------------------------------------

def test_loss_is_a_scalar_with_every_sub_term_logged():
    fused, labels, domains = random_batch()
    asy = AsyIRM(AsyIRMConfig(), D, 3)
    loss, logs = asy(output(fused), labels, domains, epoch=5)
    assert loss.shape == () and math.isfinite(loss.item())
    for k in SUB_TERMS:
        assert isinstance(logs[f"asyirm/{k}"], float)
    assert {f"asyirm/R_{s}" for s in ("fused", *MODALITIES)} <= set(logs)
    # The loss is exactly the weighted sum of the logged sub-terms.
    cfg = asy.cfg
    expected = (logs["asyirm/radial"] + cfg.irm_weight * logs["asyirm/irm"] + logs["asyirm/margin"]
                + cfg.spread_weight * logs["asyirm/spread"] + cfg.domain_head_weight * logs["asyirm/domain"])
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradients_are_finite_and_reach_features_radius_and_heads():
    fused, labels, domains = random_batch()
    asy = AsyIRM(AsyIRMConfig(), D, 3)
    out = output(fused, requires_grad=True)
    loss, _ = asy(out, labels, domains, epoch=5)
    loss.backward()
    for t in [out.fused, *out.modality.values(), *asy.parameters()]:
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_spaces_radii_and_heads_follow_the_config():
    both = AsyIRM(AsyIRMConfig(per_modality=True, domain_head_weight=0.1), D, 3)
    assert both.spaces == ("fused", *MODALITIES) and both.raw_radius.shape == (4,)
    assert both.head_weight.shape == (4, 3, D) and both.head_bias.shape == (4, 3)
    fused = AsyIRM(AsyIRMConfig(per_modality=False, domain_head_weight=0.0), D, 3)
    assert fused.spaces == ("fused",) and fused.head_weight is None
    assert sum(p.numel() for p in fused.parameters()) == 1  # only R: no head parameters


def test_loss_is_the_fused_space_plus_the_mean_of_the_modality_spaces():
    fused, labels, domains = random_batch()
    out = output(fused)
    asy = AsyIRM(AsyIRMConfig(domain_head_weight=0.0), D, 3)
    radii = {"fused": 2.0, "rgb": 3.0, "depth": 4.0, "ir": 5.0}
    for space, value in radii.items():
        asy.set_radius(value, space)
    loss, _ = asy(out, labels, domains, epoch=5)
    single = {}
    for space, value in radii.items():  # each space on its own, through a fused-only module
        one = AsyIRM(fused_only(), D, 3)
        one.set_radius(value)
        z = out.fused if space == "fused" else out.modality[space]
        single[space] = one(output(z), labels, domains, epoch=5)[0].item()
    expected = single["fused"] + sum(single[m] for m in MODALITIES) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_features_of_different_shapes_are_an_error():
    fused, labels, domains = random_batch()
    out = output(fused)
    out.modality["ir"] = torch.zeros(len(fused), D + 1)
    with pytest.raises(ValueError, match="one shape"):
        AsyIRM(AsyIRMConfig(), D, 3)(out, labels, domains, epoch=1)


def test_radial_logit_is_r_minus_norm_over_tau():
    asy = AsyIRM(fused_only(tau=0.5), D, 2)
    asy.set_radius(3.0)
    z = at_radii([1.0, 3.0, 4.0])
    assert asy.radius().item() == pytest.approx(3.0, rel=1e-5)
    assert asy.radial_logit(z).tolist() == pytest.approx([4.0, 0.0, -2.0], abs=1e-4)


# --- the IRM penalty ---------------------------------------------------------------------------

def test_closed_form_penalty_equals_autograd_of_a_dummy_scale():
    g = torch.Generator().manual_seed(3)
    logit = (torch.randn(30, generator=g) * 2).requires_grad_(True)
    labels = (torch.rand(30, generator=g) > 0.5).float()
    domains = torch.randint(0, 3, (30,), generator=g)
    onehot = F.one_hot(domains, 3).T.float()
    ours = irm_penalty_per_domain(logit, labels, onehot)
    ref = []
    for e in range(3):
        w = torch.tensor(1.0, requires_grad=True)
        risk = F.binary_cross_entropy_with_logits(w * logit[domains == e], labels[domains == e])
        ref.append(torch.autograd.grad(risk, w, create_graph=True)[0])
    ref = torch.stack(ref)
    assert torch.allclose(ours, ref, atol=1e-6)
    # Second order too: the penalty's gradient w.r.t. the logits is the same.
    (g_ours,) = torch.autograd.grad((ours**2).sum(), logit, retain_graph=True)
    (g_ref,) = torch.autograd.grad((ref**2).sum(), logit)
    assert torch.allclose(g_ours, g_ref, atol=1e-6)


def calibrated_domain(r_opt: float, tau: float, seed: int) -> tuple[Tensor, Tensor]:
    """8 samples whose optimal radial classifier (both R and scale) is R = r_opt: 3 lives and 1
    spoof at logit +a, 1 live and 3 spoofs at -a, with sigmoid(a) = 3/4, so the classifier is
    calibrated and every gradient of the domain's risk vanishes there."""
    a = math.log(3.0)
    radii = [r_opt - tau * a] * 4 + [r_opt + tau * a] * 4
    labels = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    return at_radii(radii, seed=seed), labels


def irm_batch(shifts: list[float], r: float = 3.0, tau: float = 0.5):
    parts = [calibrated_domain(r + s, tau, seed=e) for e, s in enumerate(shifts)]
    fused = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts])
    domains = torch.arange(len(shifts)).repeat_interleave(8)
    return fused, labels, domains


def test_irm_penalty_vanishes_when_one_radius_is_optimal_in_every_domain():
    tau = 0.5
    asy = AsyIRM(fused_only(tau=tau), D, 3)
    asy.set_radius(3.0)
    fused, labels, domains = irm_batch([0.0, 0.0, 0.0], tau=tau)
    loss, logs = asy(output(fused), labels, domains, epoch=5)
    assert logs["asyirm/irm"] < 1e-10
    # ... and R is then also a stationary point of the radial risk.
    (g,) = torch.autograd.grad(asy.space_terms(fused[None], labels, domains)["radial"][0], asy.raw_radius)
    assert abs(g.item()) < 1e-6


def test_irm_penalty_is_clearly_positive_when_domains_disagree_on_the_radius():
    tau = 0.5
    asy = AsyIRM(fused_only(tau=tau), D, 4)  # domain 3 absent: the mean is over the 3 present
    asy.set_radius(3.0)
    fused, labels, domains = irm_batch([0.0, 0.0, 1.0], tau=tau)  # domain 2 wants R = 4
    _, logs = asy(output(fused), labels, domains, epoch=5)
    # Domain 2's logits are all 2 lower: its gradient is mean (sigmoid(l - 2) - y)(l - 2) != 0.
    l2 = asy.radial_logit(fused[domains == 2])
    g2 = ((torch.sigmoid(l2) - labels[domains == 2]) * l2).mean().item()
    assert logs["asyirm/irm"] == pytest.approx(g2**2 / 3, rel=1e-4)
    assert logs["asyirm/irm"] > 1e-2


def test_irm_weight_is_zero_during_warm_up_then_the_configured_weight():
    tau = 0.5
    asy = AsyIRM(fused_only(tau=tau, irm_weight=2.0, warmup_epochs=2), D, 3)
    asy.set_radius(3.0)
    fused, labels, domains = irm_batch([0.0, 0.0, 1.0], tau=tau)
    warm, logs_warm = asy(output(fused), labels, domains, epoch=2)  # epochs are 1-based
    on, logs_on = asy(output(fused), labels, domains, epoch=3)
    assert logs_warm["asyirm/irm_weight"] == 0.0 and logs_on["asyirm/irm_weight"] == 2.0
    assert logs_warm["asyirm/irm"] == pytest.approx(logs_on["asyirm/irm"])  # logged either way
    assert (on - warm).item() == pytest.approx(2.0 * logs_on["asyirm/irm"], rel=1e-4)
    assert AsyIRM(fused_only(warmup_epochs=0), D, 3).irm_weight(1) == 1.0


# --- asymmetric margins and the lives' spread --------------------------------------------------

def margin_batch(live_r: list[float], spoof_r: list[float]):
    fused = at_radii(live_r + spoof_r)
    labels = torch.tensor([1.0] * len(live_r) + [0.0] * len(spoof_r))
    domains = torch.arange(len(labels)) % 2
    return fused, labels, domains


def test_margin_is_zero_for_lives_inside_r_minus_m_and_spoofs_outside_r_plus_m():
    asy = AsyIRM(fused_only(margin=0.5), D, 2)
    asy.set_radius(5.0)
    fused, labels, domains = margin_batch([1.0, 4.4, 2.0, 3.0], [5.6, 9.0, 50.0, 7.0])
    _, logs = asy(output(fused), labels, domains, epoch=1)
    assert logs["asyirm/margin"] == pytest.approx(0.0, abs=1e-6)


def test_margin_violations_cost_their_hinge_per_class():
    asy = AsyIRM(fused_only(margin=0.5), D, 2)
    asy.set_radius(5.0)
    # One live at 4.7 (0.2 past R - m) among 4 lives, one spoof at 5.2 (0.3 short of R + m) among 4.
    fused, labels, domains = margin_batch([1.0, 4.7, 2.0, 3.0], [5.2, 9.0, 50.0, 7.0])
    _, logs = asy(output(fused), labels, domains, epoch=1)
    assert logs["asyirm/margin"] == pytest.approx(0.2 / 4 + 0.3 / 4, rel=1e-4)
    # A live outside the sphere is a violation too, whichever side of R.
    fused, labels, domains = margin_batch([6.0, 1.0], [7.0, 8.0])
    _, logs = asy(output(fused), labels, domains, epoch=1)
    assert logs["asyirm/margin"] == pytest.approx(1.5 / 2, rel=1e-4)


def test_spoofs_are_free_to_be_diverse_outside_the_sphere():
    asy = AsyIRM(fused_only(margin=0.5), D, 2)
    asy.set_radius(5.0)
    lives = [1.0, 1.5, 2.0, 2.5]
    fused, labels, domains = margin_batch(lives, [6.0, 6.0, 6.0, 6.0])
    a = asy(output(fused), labels, domains, epoch=1)[1]
    fused, labels, domains = margin_batch(lives, [6.0, 30.0, 9.0, 100.0])
    b = asy(output(fused), labels, domains, epoch=1)[1]
    assert a["asyirm/margin"] == b["asyirm/margin"] == pytest.approx(0.0, abs=1e-6)
    assert a["asyirm/spread"] == pytest.approx(b["asyirm/spread"], abs=1e-6)


def test_spread_is_zero_for_equal_live_radii_across_domains_and_measures_the_gap_otherwise():
    asy = AsyIRM(fused_only(), D, 2)
    asy.set_radius(5.0)
    domains = torch.tensor([0, 0, 1, 1, 0, 1])
    labels = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    same = at_radii([1.0, 2.0, 1.0, 2.0, 8.0, 30.0])
    _, logs = asy(output(same), labels, domains, epoch=1)
    assert logs["asyirm/spread"] == pytest.approx(0.0, abs=1e-6)
    # Domain 1's lives sit 1 further out: means 1.5 and 2.5 (variance 0.25), equal stds.
    shifted = at_radii([1.0, 2.0, 2.0, 3.0, 8.0, 30.0])
    _, logs = asy(output(shifted), labels, domains, epoch=1)
    assert logs["asyirm/spread"] == pytest.approx(0.25, rel=1e-3)
    # Same means, different spreads (std 0.5 vs 1.5): variance of the stds is 0.25.
    wider = at_radii([1.0, 2.0, 0.0, 3.0, 8.0, 30.0])
    _, logs = asy(output(wider), labels, domains, epoch=1)
    assert logs["asyirm/spread"] == pytest.approx(0.25, rel=1e-3)


# --- the angular space -------------------------------------------------------------------------

def test_domain_head_gradient_is_purely_angular():
    asy = AsyIRM(AsyIRMConfig(per_modality=False, domain_head_weight=1.0), D, 3)
    fused, labels, domains = random_batch()
    z = fused.clone().requires_grad_(True)
    domain = asy.space_terms(z[None], labels, domains)["domain"][0]
    (g,) = torch.autograd.grad(domain, z)
    radial_part = (g * F.normalize(z, dim=1)).sum(1)  # component along z: changes |z| only
    assert g.abs().max() > 1e-3
    assert radial_part.abs().max() < 1e-4 * g.abs().max()


# --- radius initialisation ---------------------------------------------------------------------

def test_radius_starts_between_the_classes_and_a_checkpoint_keeps_it():
    asy = AsyIRM(fused_only(), D, 2)
    fused = at_radii([1.0, 3.0, 7.0, 9.0])
    labels, domains = torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([0, 1, 0, 1])
    asy(output(fused), labels, domains, epoch=1)
    assert asy.radius().item() == pytest.approx(5.0, rel=1e-4)  # (2 + 8) / 2
    assert bool(asy.initialized[0])
    fresh = AsyIRM(fused_only(), D, 2)
    fresh.load_state_dict(asy.state_dict())
    fresh(output(fused * 10), labels, domains, epoch=2)  # other radii: must not re-initialise
    assert fresh.radius().item() == pytest.approx(5.0, rel=1e-4)
    # Loading a never-initialised state makes the next batch initialise R again.
    fresh.load_state_dict(AsyIRM(fused_only(), D, 2).state_dict())
    fresh(output(fused * 10), labels, domains, epoch=3)
    assert fresh.radius().item() == pytest.approx(50.0, rel=1e-4)


# --- edge batches ------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, domains", [
    ([1, 1, 1, 0], [0, 0, 0, 2]),        # domain 0 only lives, domain 2 one spoof, 1 and 3 absent
    ([1, 0, 0, 0, 0], [1, 1, 1, 1, 1]),  # a single domain holding a single live
    ([0, 0, 0, 0], [0, 1, 2, 3]),        # no live at all
    ([1, 1], [3, 3]),                    # no spoof, one domain
])
def test_edge_batches_are_nan_free(labels, domains):
    labels = torch.tensor(labels, dtype=torch.float32)
    domains = torch.tensor(domains)
    fused = at_radii([0.0] + [2.0] * (len(labels) - 1))  # a zero feature too (dropped modality)
    asy = AsyIRM(AsyIRMConfig(), D, 4)
    out = output(fused, requires_grad=True)
    out.modality["ir"] = torch.zeros(len(labels), D, requires_grad=True)
    loss, logs = asy(out, labels, domains, epoch=5)
    loss.backward()
    assert all(math.isfinite(v) for v in logs.values()), logs
    for t in [out.fused, *out.modality.values(), *asy.parameters()]:
        assert t.grad is None or torch.isfinite(t.grad).all()
