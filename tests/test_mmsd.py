"""Tests for rise_dist.losses.mmsd: the mixing permutations, the disentanglement targets (an oracle
head reaches the minimum only if the targets follow the permutation), every variant's gradients,
and NaN-free edge batches."""

from __future__ import annotations

import math

import pytest
import torch
from loss_standins import MODALITIES, D, Output, TinyModel
from torch import Tensor, nn

from rise_dist.config import MMSD_VARIANTS, MMSDConfig
from rise_dist.losses.mmsd import MMSD, _cross_correlation, mix_permutations, slot_targets


def batch(b: int = 12, n_domains: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = {m: torch.randn(b, 6, generator=g) for m in MODALITIES}
    labels = (torch.arange(b) % 2).float()
    domains = torch.arange(b) % n_domains
    return x, labels, domains


def is_permutation(row: Tensor) -> bool:
    return torch.equal(row.sort().values, torch.arange(len(row)))


# --- the permutations --------------------------------------------------------------------------

def test_each_row_is_an_independent_real_permutation_and_reproducible():
    perms = mix_permutations(32, 3, torch.Generator().manual_seed(0))
    assert perms.shape == (3, 32) and perms.dtype == torch.long
    assert all(is_permutation(row) for row in perms)
    assert not torch.equal(perms[0], perms[1]) and not torch.equal(perms[1], perms[2])
    assert torch.equal(perms, mix_permutations(32, 3, torch.Generator().manual_seed(0)))
    assert not torch.equal(perms, mix_permutations(32, 3, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("counts", [
    [4, 4, 4], [32, 32, 32], [1, 1], [5, 3, 2], [6, 6], [1, 2, 3, 4], [7, 1, 1, 1],  # s <= B / 2
    [9, 1, 1], [5, 2], [10],                                                          # s > B / 2
])
def test_cross_domain_rows_are_permutations_that_leave_the_domain_wherever_possible(counts):
    g = torch.Generator().manual_seed(sum(counts))
    domains = torch.cat([torch.full((c,), e) for e, c in enumerate(counts)])
    domains = domains[torch.randperm(len(domains), generator=g)]  # any order in the batch
    b, s = len(domains), max(counts)
    best = b if 2 * s <= b else 2 * (b - s)  # a majority domain can only swap with the rest
    for _ in range(5):
        perms = mix_permutations(b, 3, g, domains, cross_domain=True)
        for row in perms:
            assert is_permutation(row)
            assert int((domains[row] != domains).sum()) == best


def test_plain_mixing_does_not_respect_domains():
    domains = torch.arange(96) % 3
    perms = mix_permutations(96, 3, torch.Generator().manual_seed(0), domains)
    assert int((domains[perms] == domains).sum()) > 0  # so the cross-domain test above can fail


def test_cross_domain_needs_domains():
    with pytest.raises(ValueError, match="domains"):
        mix_permutations(4, 3, None, None, cross_domain=True)


def test_slot_targets_follow_the_permutation():
    perms = mix_permutations(10, 3, torch.Generator().manual_seed(2))
    labels = torch.tensor([1.0, 0, 0, 1, 1, 0, 1, 0, 0, 0])
    domains = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    src, lab, dom = slot_targets(perms, labels, domains)
    assert torch.equal(src, perms)
    for m in range(3):
        for i in range(10):
            assert lab[m, i] == labels[perms[m, i]] and dom[m, i] == domains[perms[m, i]]


# --- the forward pass --------------------------------------------------------------------------

def test_mixed_slots_given_to_fuse_come_from_the_permuted_samples():
    model = TinyModel()
    x, labels, domains = batch()
    out = model(x)
    mmsd = MMSD(MMSDConfig(), D, 3)
    mmsd(out, labels, domains, model, generator=torch.Generator().manual_seed(7))
    (mixed,) = model.fuse_inputs  # fuse ran once, on the mixed batch
    perms = mix_permutations(12, 3, torch.Generator().manual_seed(7))
    for m, name in enumerate(MODALITIES):
        assert torch.equal(mixed[name], out.modality[name][perms[m]])


@pytest.mark.parametrize("variant", MMSD_VARIANTS)
def test_every_variant_gives_a_scalar_with_finite_gradients_everywhere(variant):
    torch.manual_seed(0)
    model = TinyModel()
    x, labels, domains = batch()
    mmsd = MMSD(MMSDConfig(variant=variant), D, 3)
    loss, logs = mmsd(model(x), labels, domains, model, generator=torch.Generator().manual_seed(0))
    assert loss.shape == () and math.isfinite(loss.item())
    expected = {"mmsd/src", "mmsd/src_acc", "mmsd/label"} | {
        "slot_domain": {"mmsd/domain"}, "intrinsic": {"mmsd/share", "mmsd/orth"}}.get(variant, set())
    assert set(logs) == expected and all(isinstance(v, float) for v in logs.values())
    loss.backward()
    for p in [*model.streams.parameters(), *model.fusion.parameters(), *mmsd.parameters()]:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_only_the_intrinsic_variant_has_private_and_shared_maps():
    assert not hasattr(MMSD(MMSDConfig(variant="slot"), D, 3), "split_weight")
    intrinsic = MMSD(MMSDConfig(variant="intrinsic"), D, 3)
    assert intrinsic.split_weight.shape == (3, D, D) and intrinsic.key_dim == D // 2


# --- an oracle head: the targets match the permutation -----------------------------------------

BLOCK = 8  # per modality: 4 identity coordinates, a label sign, 3 domain one-hot coordinates


class SumModel(nn.Module):
    """Fusion = sum of the slot features, which live in disjoint coordinate blocks: the mixed
    fused feature is the concatenation of its slots, so an oracle can read every slot back."""

    def fuse(self, modality: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        fused = sum(modality[m] for m in MODALITIES)
        return fused, fused[:, 0]


class OracleHead(nn.Module):
    """Answers each slot exactly: its own feature as query, its label and domain as sure logits."""

    def __init__(self, slot_domain: bool):
        super().__init__()
        self.slot_domain = slot_domain

    def forward(self, fused: Tensor) -> Tensor:
        d = fused.shape[1]
        queries, labels, domains = [], [], []
        for m in range(len(MODALITIES)):
            mask = torch.zeros(d)
            mask[m * BLOCK : (m + 1) * BLOCK] = 1
            queries.append(fused * mask)
            labels.append(50 * fused[:, m * BLOCK + 4 : m * BLOCK + 5])
            domains.append(50 * fused[:, m * BLOCK + 5 : m * BLOCK + 8])
        return torch.cat(queries + labels + (domains if self.slot_domain else []), 1)


def oracle_batch(b: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = (torch.rand(b, generator=g) > 0.5).float()
    domains = torch.randint(0, 3, (b,), generator=g)
    modality = {}
    for m, name in enumerate(MODALITIES):
        f = torch.zeros(b, len(MODALITIES) * BLOCK)
        f[:, m * BLOCK : m * BLOCK + 4] = torch.randn(b, 4, generator=g)
        f[:, m * BLOCK + 4] = 2 * labels - 1
        f[:, m * BLOCK + 5 : m * BLOCK + 8] = torch.nn.functional.one_hot(domains, 3).float()
        modality[name] = f
    return Output(torch.zeros(b), modality["rgb"], modality), labels, domains


@pytest.mark.parametrize("variant", ["slot", "cross_domain", "slot_domain"])
def test_an_oracle_head_reaches_the_minimum_so_targets_are_the_permuted_sources(variant):
    out, labels, domains = oracle_batch()
    mmsd = MMSD(MMSDConfig(variant=variant, temperature=0.02), len(MODALITIES) * BLOCK, 3)
    mmsd.head = OracleHead(slot_domain=variant == "slot_domain")
    loss, logs = mmsd(out, labels, domains, SumModel(), generator=torch.Generator().manual_seed(3))
    assert logs["mmsd/src_acc"] == 1.0
    assert logs["mmsd/src"] < 1e-3 and logs["mmsd/label"] < 1e-3
    assert logs.get("mmsd/domain", 0.0) < 1e-3
    assert loss.item() < 5e-3


def test_an_oracle_answering_the_unmixed_sample_is_penalised():
    """Had the targets been the sample's own index (no mixing), this head would be perfect."""
    out, labels, domains = oracle_batch()
    mmsd = MMSD(MMSDConfig(temperature=0.02), len(MODALITIES) * BLOCK, 3)
    mmsd.head = OracleHead(slot_domain=False)

    class Unmixed(SumModel):
        def fuse(self, modality):
            return super().fuse(out.modality)  # ignores the mixing

    _, logs = mmsd(out, labels, domains, Unmixed(), generator=torch.Generator().manual_seed(3))
    assert logs["mmsd/src_acc"] < 0.5 and logs["mmsd/src"] > 1.0


# --- the intrinsic variant's decorrelation -----------------------------------------------------

def test_cross_correlation_is_near_zero_for_independent_parts_and_large_for_copies():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4000, 4, generator=g), torch.randn(4000, 4, generator=g)
    assert _cross_correlation(a, b).item() < 1e-3
    assert _cross_correlation(a, a).item() == pytest.approx(0.25, rel=1e-2)  # identity / K
    assert _cross_correlation(a, 3 * a + 1).item() == pytest.approx(0.25, rel=1e-2)  # scale-free
    assert _cross_correlation(torch.ones(10, 4), b[:10]).item() == 0.0  # constant part: no NaN
    batched = _cross_correlation(torch.stack([a, a]), torch.stack([a, b]))  # one per leading index
    assert batched.shape == (2,) and batched[0] > 0.2 > 1e-3 > batched[1]


def test_shared_parts_are_matched_to_the_same_sample_across_modalities():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    common = torch.randn(16, 4 * D, generator=g)
    labels, domains = (torch.arange(16) % 2).float(), torch.arange(16) % 3
    mmsd = MMSD(MMSDConfig(variant="intrinsic", temperature=0.05), 4 * D, 3)
    with torch.no_grad():  # every modality maps identically
        mmsd.split_weight.copy_(mmsd.split_weight[:1].expand_as(mmsd.split_weight))
        mmsd.split_bias.zero_()
    agree = Output(torch.zeros(16), common, {m: common for m in MODALITIES})
    _, logs = mmsd(agree, labels, domains, SumModel(), generator=torch.Generator().manual_seed(0))
    assert logs["mmsd/share"] < 0.05  # each sample's shared parts coincide across modalities
    apart = Output(torch.zeros(16), common, {m: torch.randn(16, 4 * D, generator=g) for m in MODALITIES})
    _, logs = mmsd(apart, labels, domains, SumModel(), generator=torch.Generator().manual_seed(0))
    assert logs["mmsd/share"] > 1.0


# --- edge batches ------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", MMSD_VARIANTS)
@pytest.mark.parametrize("labels, domains", [
    ([1, 1, 1, 1], [0, 0, 0, 0]),  # one domain, one class
    ([1, 0], [2, 2]),              # two samples, other domains absent
    ([0, 0, 1], [0, 1, 1]),        # domain 0 only spoofs
])
def test_edge_batches_are_nan_free(variant, labels, domains):
    torch.manual_seed(0)
    model = TinyModel()
    x, _, _ = batch(len(labels))
    mmsd = MMSD(MMSDConfig(variant=variant), D, 3)
    loss, logs = mmsd(model(x), torch.tensor(labels, dtype=torch.float32), torch.tensor(domains),
                      model, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(math.isfinite(v) for v in logs.values()), logs
    for p in [*model.parameters(), *mmsd.parameters()]:
        assert p.grad is None or torch.isfinite(p.grad).all()
