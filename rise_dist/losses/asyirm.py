"""AsyIRM: an invariant spherical live/spoof boundary in radial space (docs/method.md).

A feature z (B, D) is split into its radius r = |z| and direction u = z / |z|. One learnable
radius R per feature space, shared by all source domains, is the decision boundary: lives
inside, spoofs outside, with the radial live logit l = (R - r) / tau. Per space:

    L = risk + w_irm(epoch) * irm + margin + spread_weight * spread + domain_head_weight * domain

    risk   = mean_e BCE_e(l)                           radial risk, mean over present domains e
    irm    = mean_e (d/dw BCE_e(w * l) at w = 1)^2     IRMv1 penalty: R optimal in every domain
    margin = mean_live relu(r - (R - m)) + mean_spoof relu((R + m) - r)
    spread = Var_e(mean_live,e r) + Var_e(std_live,e r)  lives' radial spread equal across domains
    domain = CE(Linear(u), e)                          domain cues kept in the angle (optional)

The spaces are the fused feature and, with ``per_modality``, each modality's feature; each has
its own R (their norms have unrelated scales) and the loss is L_fused + mean_m L_m.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from rise_dist.config import AsyIRMConfig
from rise_dist.data.cache import MODALITIES
from rise_dist.losses import ModelOutput, to_floats

FUSED = "fused"
SUB_TERMS = ("radial", "irm", "margin", "spread", "domain")
# R = softplus(raw) + _MIN_RADIUS: positive, and never so small that every sample is a spoof.
_MIN_RADIUS = 1e-3
# |z| below this is treated as this when forming u = z / |z| (a dropped modality's zero feature).
_EPS_NORM = 1e-6
# Added under the square root of the lives' radial variance: finite gradient when it is 0.
_EPS_VAR = 1e-8


def _inverse_softplus(x: float) -> float:
    return x + math.log(-math.expm1(-x))


def irm_penalty_per_domain(logit: Tensor, labels: Tensor, onehot: Tensor) -> Tensor:
    """IRMv1 gradient per domain: d/dw of the domain's mean BCE(w * logit, y) at w = 1.

    BCE(x, y) = softplus(x) - y x, so d/dw BCE(w l, y) = (sigmoid(w l) - y) l, and at w = 1 the
    domain mean of (sigmoid(l) - y) l. This closed form is exactly what
    ``torch.autograd.grad(risk_e(w), w, create_graph=True)`` returns (tests/test_asyirm.py checks
    it), without a second graph through a dummy scale and also under ``torch.no_grad``.

    ``logit``: (..., B) float, ``labels``: (B,) float. ``onehot``: (E, B) float domain membership.
    Returns (..., E): the gradient of each domain (0 for a domain absent from the batch).
    """
    n = onehot.sum(1).clamp_min(1.0)
    return ((torch.sigmoid(logit) - labels) * logit) @ onehot.T / n


def _weighted_var(x: Tensor, w: Tensor) -> Tensor:
    """Population variance of x (..., E) over the entries with w (E,) = 1, per leading index;
    0 with fewer than two such entries."""
    n = w.sum().clamp_min(1.0)
    mean = (x @ w / n).unsqueeze(-1)
    return (x - mean) ** 2 @ w / n


class AsyIRM(nn.Module):
    """The AsyIRM term. Parameters: ``raw_radius`` (S,), one per space (R = softplus(raw) + 1e-3),
    and, if ``domain_head_weight > 0``, a linear domain head per space on the direction u
    (``head_weight`` (S, E, D), ``head_bias`` (S, E)).

    ``cfg``: AsyIRMConfig. ``feature_dim``: D of the fused and of each modality's feature.
    ``n_domains``: E, the number of source domains (domain ids are in [0, n_domains)).
    ``modalities``: the keys of ``out.modality`` used when ``cfg.per_modality``.

    The S spaces are computed together on stacked (S, B, D) features: one set of small ops
    instead of S, which is most of the cost at training batch sizes.

    R starts from the first batch it sees (the midpoint of the mean live and mean spoof radius;
    averaged over ranks under torch.distributed), because the scale of an unnormalised feature is
    unknown before training; ``set_radius`` overrides it. ``initialized`` is a buffer, so a
    checkpoint restores it and a resumed run does not re-initialise R.
    """

    def __init__(self, cfg: AsyIRMConfig, feature_dim: int, n_domains: int,
                 modalities: Sequence[str] = MODALITIES):
        super().__init__()
        if n_domains < 1:
            raise ValueError(f"n_domains = {n_domains}: must be >= 1")
        self.cfg = cfg
        self.n_domains = n_domains
        self.feature_dim = feature_dim
        self.spaces: tuple[str, ...] = (FUSED,) + (tuple(modalities) if cfg.per_modality else ())
        n = len(self.spaces)
        self.raw_radius = nn.Parameter(torch.full((n,), _inverse_softplus(1.0)))
        self.register_buffer("initialized", torch.zeros(n, dtype=torch.bool))
        # Fused counts as much as all modalities together, so per_modality does not dilute it.
        self.register_buffer("space_weight", torch.tensor([1.0] + [1.0 / max(n - 1, 1)] * (n - 1)),
                             persistent=False)
        self._known_init = False  # all spaces known initialised: the buffer is read once, not per step
        if cfg.domain_head_weight > 0:
            bound = 1.0 / math.sqrt(feature_dim)  # nn.Linear's default initialisation
            self.head_weight = nn.Parameter(torch.empty(n, n_domains, feature_dim).uniform_(-bound, bound))
            self.head_bias = nn.Parameter(torch.empty(n, n_domains).uniform_(-bound, bound))
        else:
            self.head_weight = self.head_bias = None

    def radii(self) -> Tensor:
        """The boundary radius R of every space, (S,), > 0."""
        return F.softplus(self.raw_radius) + _MIN_RADIUS

    def radius(self, space: str = FUSED) -> Tensor:
        """The boundary radius R of ``space`` (a scalar, > 0)."""
        return self.radii()[self.spaces.index(space)]

    @torch.no_grad()
    def set_radius(self, value: float, space: str = FUSED) -> None:
        """Set R of ``space`` to ``value`` (> 1e-3) and mark it initialised."""
        if value <= _MIN_RADIUS:
            raise ValueError(f"radius {value} must be > {_MIN_RADIUS}")
        i = self.spaces.index(space)
        self.raw_radius[i] = _inverse_softplus(value - _MIN_RADIUS)
        self.initialized[i] = True

    def _load_from_state_dict(self, *args, **kwargs):
        self._known_init = False  # the loaded ``initialized`` decides
        super()._load_from_state_dict(*args, **kwargs)

    def radial_logit(self, z: Tensor, space: str = FUSED) -> Tensor:
        """Radial live logit (R - |z|) / tau of features ``z`` (B, D); returns (B,) float32."""
        return (self.radius(space) - z.float().norm(dim=1)) / self.cfg.tau

    def irm_weight(self, epoch: int) -> float:
        """IRMv1 schedule: 0 during the first ``warmup_epochs`` epochs (1-based), then irm_weight."""
        return self.cfg.irm_weight if epoch > self.cfg.warmup_epochs else 0.0

    @torch.no_grad()
    def _init_radii(self, r: Tensor, labels: Tensor) -> None:
        """R of every not yet initialised space from radii ``r`` (S, B) of the first batch."""
        live, spoof = labels > 0.5, labels <= 0.5
        if bool(live.any() & spoof.any()):
            mid = 0.5 * (r[:, live].mean(1) + r[:, spoof].mean(1))
        else:
            mid = r.mean(1)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(mid)  # every rank must start from the same R
            mid = mid / dist.get_world_size()
        for i, space in enumerate(self.spaces):
            if not bool(self.initialized[i]):
                self.set_radius(max(float(mid[i]), 2 * _MIN_RADIUS), space)

    def _stack(self, out: ModelOutput) -> Tensor:
        feats = [out.fused] + [out.modality[s] for s in self.spaces[1:]]
        shapes = {tuple(f.shape) for f in feats}
        if len(shapes) != 1:
            raise ValueError(f"AsyIRM needs the fused and modality features in one shape, got "
                             f"{dict(zip(self.spaces, [tuple(f.shape) for f in feats], strict=True))}")
        return torch.stack([f.float() for f in feats])  # radii need float32: bf16 has ~3 digits

    def space_terms(self, z: Tensor, labels: Tensor, domains: Tensor) -> dict[str, Tensor]:
        """The five sub-terms of every space, each (S,), plus diagnostics.

        ``z``: (S, B, D) features, one row per space in ``self.spaces`` order. ``labels``: (B,)
        float, 1 = live. ``domains``: (B,) long in [0, n_domains).
        """
        cfg = self.cfg
        r = z.norm(dim=2)  # (S, B)
        if not self._known_init:
            if not bool(self.initialized.all()):
                self._init_radii(r.detach(), labels)
            self._known_init = True
        R = self.radii().unsqueeze(1)  # (S, 1)
        logit = (R - r) / cfg.tau
        onehot = F.one_hot(domains.long(), self.n_domains).T.to(r.dtype)  # (E, B)
        n_e = onehot.sum(1)
        present = (n_e > 0).to(r.dtype)
        n_present = present.sum().clamp_min(1.0)

        # Radial risk and IRMv1 penalty per domain, averaged over the domains present, so that
        # each source domain counts once and an absent one not at all.
        bce = F.binary_cross_entropy_with_logits(logit, labels.expand_as(logit), reduction="none")
        risk_e = bce @ onehot.T / n_e.clamp_min(1.0)  # (S, E)
        radial = (risk_e * present).sum(1) / n_present
        irm = (irm_penalty_per_domain(logit, labels, onehot) ** 2 * present).sum(1) / n_present

        # Asymmetric margins: lives pulled inside R - m, spoofs only pushed beyond R + m.
        live, spoof = labels, 1.0 - labels
        live_hinge = F.relu(r - (R - cfg.margin))
        spoof_hinge = F.relu((R + cfg.margin) - r)
        margin = (live_hinge @ live / live.sum().clamp_min(1.0)
                  + spoof_hinge @ spoof / spoof.sum().clamp_min(1.0))

        # Lives' radial mean and std equal across domains; spoofs get no compactness term.
        n_live = onehot @ live  # (E,)
        mean_e = (r * live) @ onehot.T / n_live.clamp_min(1.0)  # (S, E)
        dev = r - mean_e[:, domains]
        std_e = torch.sqrt((dev**2 * live) @ onehot.T / n_live.clamp_min(1.0) + _EPS_VAR)
        spread = (_weighted_var(mean_e, (n_live >= 1).to(r.dtype))
                  + _weighted_var(std_e, (n_live >= 2).to(r.dtype)))

        if self.head_weight is not None:
            u = z / r.clamp_min(_EPS_NORM).unsqueeze(2)
            dom_logit = torch.baddbmm(self.head_bias.unsqueeze(1), u, self.head_weight.transpose(1, 2))
            domain = F.cross_entropy(dom_logit.float().flatten(0, 1), domains.repeat(len(self.spaces)),
                                     reduction="none").view(len(self.spaces), -1).mean(1)
        else:
            domain = torch.zeros_like(radial)

        with torch.no_grad():
            r_live = r @ live / live.sum().clamp_min(1.0)
            r_spoof = r @ spoof / spoof.sum().clamp_min(1.0)
        return {"radial": radial, "irm": irm, "margin": margin, "spread": spread, "domain": domain,
                "R": R.detach().squeeze(1), "r_live": r_live, "r_spoof": r_spoof}

    def terms(self, out: ModelOutput, labels: Tensor, domains: Tensor,
              epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its logs as tensors (no host sync); ``forward`` is this plus one sync.

        ``out``: model output with ``fused`` (B, D) and ``modality`` {name: (B, D)}.
        ``labels``: (B,) 1 = live, 0 = spoof. ``domains``: (B,) long in [0, n_domains).
        ``epoch``: 1-based epoch (the loop's count), for the IRM warm-up.
        """
        cfg = self.cfg
        w_irm = self.irm_weight(epoch)
        per = self.space_terms(self._stack(out), labels.float(), domains.long())
        # Loss = L_fused + mean over modalities of L_m, sub-term by sub-term.
        sub = {k: per[k] @ self.space_weight for k in SUB_TERMS}
        loss = (sub["radial"] + w_irm * sub["irm"] + sub["margin"] + cfg.spread_weight * sub["spread"]
                + cfg.domain_head_weight * sub["domain"])

        logs = {f"asyirm/{k}": sub[k].detach() for k in SUB_TERMS}
        logs["asyirm/irm_weight"] = loss.new_tensor(w_irm)
        logs["asyirm/r_live"], logs["asyirm/r_spoof"] = per["r_live"][0], per["r_spoof"][0]
        for i, s in enumerate(self.spaces):
            logs[f"asyirm/R_{s}"] = per["R"][i]
        return loss, logs

    def forward(self, out: ModelOutput, labels: Tensor, domains: Tensor,
                epoch: int) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and its sub-terms as floats (``asyirm/radial``, ``asyirm/irm`` (unweighted),
        ``asyirm/margin``, ``asyirm/spread``, ``asyirm/domain``, ``asyirm/irm_weight``,
        ``asyirm/r_live``, ``asyirm/r_spoof`` (fused), ``asyirm/R_<space>``)."""
        loss, logs = self.terms(out, labels, domains, epoch)
        return loss, to_floats(logs)
