"""Tests for rise_dist.losses.ce: the ERM term."""

from __future__ import annotations

import math

import pytest
import torch

from rise_dist.losses.ce import ce_loss


def test_value_is_the_mean_binary_cross_entropy():
    logit = torch.tensor([2.0, -1.0, 0.0, 3.0])
    labels = torch.tensor([1, 0, 1, 0])  # long labels are accepted
    p = torch.sigmoid(logit)
    expected = -(torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(p[2]) + torch.log(1 - p[3])) / 4
    loss = ce_loss(logit, labels)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_confident_correct_logits_give_near_zero_and_wrong_ones_large_loss():
    labels = torch.tensor([1.0, 0.0, 1.0])
    assert ce_loss(torch.tensor([20.0, -20.0, 20.0]), labels).item() < 1e-6
    assert ce_loss(torch.tensor([-20.0, 20.0, -20.0]), labels).item() > 19


def test_gradient_is_finite_and_has_the_sign_that_fixes_the_error():
    logit = torch.tensor([-1.0, 1.0], requires_grad=True)
    ce_loss(logit, torch.tensor([1.0, 0.0])).backward()
    assert torch.isfinite(logit.grad).all()
    assert logit.grad[0] < 0 < logit.grad[1]  # raise the live's logit, lower the spoof's


def test_bf16_logits_are_scored_in_float32():
    logit = torch.tensor([0.3, -0.7], dtype=torch.bfloat16)
    loss = ce_loss(logit, torch.tensor([1.0, 0.0]))
    assert loss.dtype == torch.float32 and math.isfinite(loss.item())


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in shape"):
        ce_loss(torch.zeros(4, 1), torch.zeros(4))
