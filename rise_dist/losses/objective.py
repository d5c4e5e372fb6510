"""The training objective: CE + lambda_asyirm * AsyIRM + lambda_mmsd * MMSD.

A weight of 0 turns its term off entirely: the term's module is not built (so it has no
parameters for the optimizer and no state in a checkpoint) and nothing of it runs. Ablations
are config values (``TrainConfig.method`` follows from the weights), never code branches.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from rise_dist.config import TrainConfig
from rise_dist.data.cache import MODALITIES
from rise_dist.losses import FusingModel, ModelOutput, to_floats
from rise_dist.losses.asyirm import AsyIRM
from rise_dist.losses.ce import ce_loss
from rise_dist.losses.mmsd import MMSD

CE, ASYIRM, MMSD_KEY, TOTAL = "loss/ce", "loss/asyirm", "loss/mmsd", "loss/total"
LOSS_KEYS = (CE, ASYIRM, MMSD_KEY, TOTAL)


class Objective(nn.Module):
    """The weighted sum of the loss terms of one run.

    ``cfg``: TrainConfig (``lambda_asyirm``, ``lambda_mmsd``, ``asyirm``, ``mmsd``).
    ``feature_dim``: D of the fused and per-modality features. ``n_domains``: source domains.
    ``asyirm`` / ``mmsd`` are the term modules, or None when their weight is 0. The optimizer
    must see ``Objective.parameters()`` (the radius R and the heads) besides the model's, and the
    checkpoint must hold its ``state_dict()``.
    """

    def __init__(self, cfg: TrainConfig, feature_dim: int, n_domains: int,
                 modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.lambda_asyirm = float(cfg.lambda_asyirm)
        self.lambda_mmsd = float(cfg.lambda_mmsd)
        self.asyirm: AsyIRM | None = (AsyIRM(cfg.asyirm, feature_dim, n_domains, modalities)
                                      if self.lambda_asyirm > 0 else None)
        self.mmsd: MMSD | None = (MMSD(cfg.mmsd, feature_dim, n_domains, modalities)
                                  if self.lambda_mmsd > 0 else None)

    def forward(self, out: ModelOutput, labels: Tensor, domains: Tensor, model: FusingModel,
                epoch: int, generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, float]]:
        """Total loss (scalar) and logs.

        ``out``: the model's output on the batch. ``labels``: (B,) 1 = live, 0 = spoof.
        ``domains``: (B,) long source-domain ids. ``model``: its ``fuse`` is used by MMSD (pass the
        unwrapped model). ``epoch``: 1-based, for AsyIRM's IRM warm-up. ``generator``: MMSD's
        mixing permutations.

        Logs always hold ``loss/ce``, ``loss/asyirm``, ``loss/mmsd`` (each term unweighted, 0.0
        when off) and ``loss/total`` (the weighted sum, what is optimised), plus each active term's
        sub-terms (``asyirm/*``, ``mmsd/*``). All of them come to the host in one copy.
        """
        ce = ce_loss(out.logit, labels)
        total = ce
        zero = ce.new_zeros(())
        logs: dict[str, Tensor] = {CE: ce.detach(), ASYIRM: zero, MMSD_KEY: zero}
        if self.asyirm is not None:
            term, sub = self.asyirm.terms(out, labels, domains, epoch)
            total = total + self.lambda_asyirm * term
            logs[ASYIRM] = term.detach()
            logs.update(sub)
        if self.mmsd is not None:
            term, sub = self.mmsd.terms(out, labels, domains, model, generator)
            total = total + self.lambda_mmsd * term
            logs[MMSD_KEY] = term.detach()
            logs.update(sub)
        logs[TOTAL] = total.detach()
        return total, to_floats(logs)

    def live_logit(self, out: ModelOutput) -> Tensor:
        """The live logit scored at evaluation (sigmoid = P(live)): the fused classifier's
        ``out.logit`` (B,), the same scorer for every method (docs/method.md says why)."""
        return out.logit
