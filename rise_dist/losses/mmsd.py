"""MMSD: feature-level cross-sample modality mixing and disentanglement (docs/method.md).

Each modality m gets its own random permutation perm_m of the batch; the mixed sample i takes
its m slot from sample perm_m[i]: x~_i = {m: f_m[perm_m[i]]}. The model's own fusion gives the
mixed fused feature z~ = fuse(x~) (no backbone pass), and a disentanglement head g(z~) must say,
for every slot m, where it came from and what it is:

    src   = mean_m CE( <q_m(z~_i), k_m(j)> / T over j in the batch, target perm_m[i] )   InfoNCE
    label = mean_m BCE( a_m(z~_i), y[perm_m[i]] )                                      own label
    L_slot = src + label_weight * label

A fusion that leans on which modalities co-occur cannot pass this: in a mixed sample they never
belong together. Keys k_m are the ORIGINAL per-modality features (unit-normalised), so the
matching also pushes each modality's feature to identify its sample.

Variants (``MMSDConfig.variant``):
- ``slot``: L_slot.
- ``cross_domain``: L_slot with permutations that take every slot from a sample of another
  source domain wherever the batch allows (``mix_permutations(cross_domain=True)``).
- ``slot_domain``: L_slot + label_weight * mean_m CE(d_m(z~_i), domain[perm_m[i]]).
- ``intrinsic``: each modality's feature is split into a private (intrinsic) part p_m and a
  shared part s_m (an affine map per modality to D/2 each). s_m of the same sample must match across modalities
  (cross-modal InfoNCE), p_m must be decorrelated from s_m (cross-correlation over the batch),
  and the slot source is matched against p_m instead of the whole feature:
  L = src(keys p_m) + label_weight * label + share + orth.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rise_dist.config import MMSDConfig
from rise_dist.data.cache import MODALITIES
from rise_dist.losses import FusingModel, ModelOutput, to_floats

# Batch standardisation in the decorrelation penalty: a constant column becomes 0, not NaN.
_EPS_STD = 1e-5


def mix_permutations(batch_size: int, n_modalities: int, generator: torch.Generator | None = None,
                     domains: Tensor | None = None, cross_domain: bool = False) -> Tensor:
    """One independent permutation of the batch per modality slot: LongTensor (M, B) on the CPU.

    Row m is perm_m: mixed sample i takes its m slot from sample perm_m[i].

    With ``cross_domain`` (``domains`` (B,) long required), every row maps as many samples as
    possible to a sample of another domain: all of them when no domain holds more than half the
    batch, else 2 * (B - s) of them, s the largest domain's count (each minority sample can only
    swap with a majority one). Construction: order the batch by domain (random group order,
    random order within each group) and shift that circular order by a random t in
    [min(s, B - s), max(s, B - s)]; every such shift moves each group block off itself (or, for
    a majority group, moves every minority sample onto it), so the optimum is reached exactly.
    """
    if batch_size < 1 or n_modalities < 1:
        raise ValueError(f"batch_size {batch_size} and n_modalities {n_modalities} must be >= 1")
    if not cross_domain:
        return torch.stack([torch.randperm(batch_size, generator=generator) for _ in range(n_modalities)])
    if domains is None or domains.shape != (batch_size,):
        raise ValueError("cross_domain mixing needs domains of shape (batch_size,)")
    d = domains.detach().cpu().long()
    ids = torch.unique(d)
    groups = [torch.nonzero(d == g).flatten() for g in ids]
    s = max(len(g) for g in groups)
    lo, hi = min(s, batch_size - s), max(s, batch_size - s)
    rows = []
    for _ in range(n_modalities):
        group_order = torch.randperm(len(groups), generator=generator).tolist()
        order = torch.cat([groups[k][torch.randperm(len(groups[k]), generator=generator)]
                           for k in group_order])
        t = int(torch.randint(lo, hi + 1, (1,), generator=generator))
        perm = torch.empty(batch_size, dtype=torch.long)
        perm[order] = order.roll(-t)  # perm[order[k]] = order[(k + t) % B]
        rows.append(perm)
    return torch.stack(rows)


def slot_targets(perms: Tensor, labels: Tensor, domains: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """What the head must recover for each slot: source index perm_m[i], label y[perm_m[i]] and
    domain e[perm_m[i]]. ``perms`` (M, B); ``labels``, ``domains`` (B,). Each output is (M, B)."""
    return perms, labels[perms], domains[perms]


def _cross_correlation(a: Tensor, b: Tensor) -> Tensor:
    """Mean squared entry of the batch cross-correlation of a and b, (..., B, K) each: (...,),
    each in [0, 1]. Columns are standardised over the batch, so the penalty is scale-free."""
    with torch.autocast(a.device.type, enabled=False):  # correlations in float32, not bf16
        a, b = a.float(), b.float()
        a = (a - a.mean(-2, keepdim=True)) / (a.std(-2, unbiased=False, keepdim=True) + _EPS_STD)
        b = (b - b.mean(-2, keepdim=True)) / (b.std(-2, unbiased=False, keepdim=True) + _EPS_STD)
        return ((a.transpose(-1, -2) @ b) / a.shape[-2]).pow(2).mean((-1, -2))


def _info_nce(query: Tensor, key: Tensor, target: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """InfoNCE over the batch. ``query``, ``key``: (M, B, K); ``target``: (M, B) long, the key
    index each query must pick. Returns (mean CE, top-1 accuracy), both scalars, float32."""
    # float32 similarities: at T = 0.1, bf16 cosines (~3 digits) would blur the logits by ~0.04.
    with torch.autocast(query.device.type, enabled=False):
        sim = F.normalize(query.float(), dim=-1) @ F.normalize(key.float(), dim=-1).transpose(1, 2)
        logits = sim / temperature  # (M, B, B)
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten())
    acc = (logits.detach().argmax(-1) == target).float().mean()
    return loss, acc


class MMSD(nn.Module):
    """The MMSD term. Parameters: the disentanglement head (an MLP D -> D -> outputs) and, for
    the ``intrinsic`` variant, ``split_weight`` (M, D, 2K) and ``split_bias`` (M, 1, 2K): per
    modality an affine map to [private K | shared K].

    Head output layout (B, M*K + M [+ M*n_domains]): per-slot queries (M, K), per-slot live
    logits (M,), and for ``slot_domain`` per-slot domain logits (M, n_domains). K = D, or D // 2
    for ``intrinsic`` (the private part's width).
    """

    def __init__(self, cfg: MMSDConfig, feature_dim: int, n_domains: int,
                 modalities: Sequence[str] = MODALITIES):
        super().__init__()
        if n_domains < 1:
            raise ValueError(f"n_domains = {n_domains}: must be >= 1")
        self.cfg = cfg
        self.n_domains = n_domains
        self.modalities = tuple(modalities)
        m = len(self.modalities)
        self.key_dim = max(1, feature_dim // 2) if cfg.variant == "intrinsic" else feature_dim
        out_dim = m * self.key_dim + m + (m * n_domains if cfg.variant == "slot_domain" else 0)
        self.head = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.GELU(),
                                  nn.Linear(feature_dim, out_dim))
        if cfg.variant == "intrinsic":
            # Per modality one affine map D -> [private K | shared K], all modalities in one bmm.
            bound = 1.0 / feature_dim**0.5  # nn.Linear's default initialisation
            shape = (m, feature_dim, 2 * self.key_dim)
            self.split_weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
            self.split_bias = nn.Parameter(torch.empty(m, 1, 2 * self.key_dim).uniform_(-bound, bound))

    def terms(self, out: ModelOutput, labels: Tensor, domains: Tensor, model: FusingModel,
              generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its logs as tensors (no host sync, except reading domains to the CPU for
        ``cross_domain``); ``forward`` is this plus one sync.

        ``out``: model output (``modality`` {name: (B, D)} used). ``labels``: (B,) 1 = live.
        ``domains``: (B,) long. ``model``: provides ``fuse``. ``generator``: for the permutations.
        """
        cfg = self.cfg
        names, m, k = self.modalities, len(self.modalities), self.key_dim
        feats = [out.modality[n] for n in names]
        b = feats[0].shape[0]
        perms = mix_permutations(b, m, generator, domains, cfg.variant == "cross_domain")
        perms = perms.to(feats[0].device, non_blocking=True)
        src_t, label_t, domain_t = slot_targets(perms, labels.float(), domains.long())

        mixed = {n: f[p] for n, f, p in zip(names, feats, perms, strict=True)}
        fused_mix, _ = model.fuse(mixed)
        h = self.head(fused_mix).float()
        query = h[:, : m * k].reshape(b, m, k).transpose(0, 1)  # (M, B, K)
        slot_logit = h[:, m * k : m * k + m].T  # (M, B)

        logs: dict[str, Tensor] = {}
        stacked = torch.stack(feats)  # (M, B, D): the original per-modality features
        if cfg.variant == "intrinsic":
            private, shared = torch.baddbmm(self.split_bias, stacked, self.split_weight).split(k, dim=2)
            keys = private
        else:
            keys = stacked
        src, acc = _info_nce(query, keys, src_t, cfg.temperature)
        label = F.binary_cross_entropy_with_logits(slot_logit, label_t)
        loss = src + cfg.label_weight * label
        logs["mmsd/src"], logs["mmsd/src_acc"], logs["mmsd/label"] = src.detach(), acc, label.detach()

        if cfg.variant == "slot_domain":
            dom_logit = h[:, m * k + m :].reshape(b, m, self.n_domains).transpose(0, 1)
            domain = F.cross_entropy(dom_logit.flatten(0, 1), domain_t.flatten())
            loss = loss + cfg.label_weight * domain
            logs["mmsd/domain"] = domain.detach()
        elif cfg.variant == "intrinsic":
            # Shared: what one modality of a sample has in common with the others (InfoNCE across
            # every pair of modalities, same-sample target). Private: decorrelated from it.
            pairs = list(combinations(range(m), 2))
            if pairs:  # both directions of every pair in one batched InfoNCE
                qi = [i for i, j in pairs] + [j for i, j in pairs]
                ki = [j for i, j in pairs] + [i for i, j in pairs]
                eye = torch.arange(b, device=h.device).expand(len(qi), b)
                share = _info_nce(shared[qi], shared[ki], eye, cfg.temperature)[0]
            else:
                share = h.new_zeros(())
            orth = _cross_correlation(private, shared).mean()
            loss = loss + share + orth
            logs["mmsd/share"], logs["mmsd/orth"] = share.detach(), orth.detach()
        return loss, logs

    def forward(self, out: ModelOutput, labels: Tensor, domains: Tensor, model: FusingModel,
                generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and its sub-terms as floats: ``mmsd/src`` (InfoNCE), ``mmsd/src_acc``
        (top-1 source match), ``mmsd/label``, and per variant ``mmsd/domain`` or ``mmsd/share``
        and ``mmsd/orth``."""
        loss, logs = self.terms(out, labels, domains, model, generator)
        return loss, to_floats(logs)
