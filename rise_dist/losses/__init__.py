"""The RiSe loss terms, one per file (docs/method.md gives the equations).

- ``ce.ce_loss``: cross-entropy on the fused live logit (ERM, in every method).
- ``asyirm.AsyIRM``: invariant spherical boundary in radial space, domain cues in the angle.
- ``mmsd.MMSD``: feature-level cross-sample modality mixing and disentanglement.
- ``objective.Objective``: CE + lambda_asyirm * AsyIRM + lambda_mmsd * MMSD; a weight of 0 builds
  and computes nothing for its term.

This package module holds only what the terms share: the shape of the model they consume
(structural types, so no loss imports the model) and the one host sync that turns logs to floats.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor


class ModelOutput(Protocol):
    """What the model returns (``rise_dist.model.rise.Output`` satisfies this).

    ``logit``: (B,) live logit of the fused feature. ``fused``: (B, D) fused feature z
    (unnormalised: |z| is the radial coordinate). ``modality``: {"rgb", "depth", "ir"} -> (B, D).
    """

    logit: Tensor
    fused: Tensor
    modality: dict[str, Tensor]


class FusingModel(Protocol):
    """A model whose fusion head can be run on given per-modality features, no backbone pass."""

    def fuse(self, modality: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """{name: (B, D)} -> (fused (B, D), live logit (B,))."""
        ...


def to_floats(logs: dict[str, Tensor]) -> dict[str, float]:
    """Scalar tensors to floats with one device-to-host copy for all of them."""
    if not logs:
        return {}
    values = torch.stack([v.detach().float().reshape(()) for v in logs.values()]).tolist()
    return dict(zip(logs, values, strict=True))
