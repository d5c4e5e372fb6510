"""Cross-entropy on the fused live logit: the ERM term, present in every method.

    L_CE = BCE(sigmoid(s), y),   s = out.logit (B,), y = 1 live / 0 spoof

Every table's baseline row is this term alone (both lambdas 0).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def ce_loss(logit: Tensor, labels: Tensor) -> Tensor:
    """Mean binary cross-entropy of the live logit.

    ``logit``: (B,) live logit, any float dtype (BCE-with-logits runs in float32 under autocast).
    ``labels``: (B,) float or long, 1 = live, 0 = spoof. Returns a scalar.
    """
    if logit.shape != labels.shape:
        raise ValueError(f"logit {tuple(logit.shape)} and labels {tuple(labels.shape)} differ in shape")
    return F.binary_cross_entropy_with_logits(logit.float(), labels.float())
