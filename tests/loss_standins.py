"""A stand-in for the RiSe model with the interface the losses consume (Output, fuse), small
enough that loss tests control every number. Shared by the loss tests."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

MODALITIES = ("rgb", "depth", "ir")
D = 8


@dataclass
class Output:
    logit: Tensor
    fused: Tensor
    modality: dict[str, Tensor]


class TinyModel(nn.Module):
    """A linear stream per modality, concat-linear fusion, a logit. ``fuse_inputs`` records the
    features passed to ``fuse`` from outside ``forward`` (what MMSD mixes)."""

    def __init__(self, in_dim: int = 6, d: int = D):
        super().__init__()
        self.streams = nn.ModuleDict({m: nn.Linear(in_dim, d) for m in MODALITIES})
        self.fusion = nn.Linear(len(MODALITIES) * d, d)
        self.cls = nn.Linear(d, 1)
        self.fuse_inputs: list[dict[str, Tensor]] = []

    @property
    def fuse_calls(self) -> int:
        return len(self.fuse_inputs)

    def _fuse(self, modality: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        fused = self.fusion(torch.cat([modality[m] for m in MODALITIES], 1))
        return fused, self.cls(fused).squeeze(1)

    def fuse(self, modality: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        self.fuse_inputs.append(modality)
        return self._fuse(modality)

    def forward(self, x: dict[str, Tensor]) -> Output:
        modality = {m: self.streams[m](x[m]) for m in MODALITIES}
        fused, logit = self._fuse(modality)
        return Output(logit, fused, modality)
