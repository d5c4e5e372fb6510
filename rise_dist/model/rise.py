"""The RiSe model: three modality streams, a fusion MLP and the live logit.

``forward = encode + fuse``. ``fuse`` is a per-sample function of the three (B, D) modality
features with no state of its own, so MMSD can call it on features mixed across samples with no
extra backbone pass. Every feature the losses see (the fused z and each modality's feature) ends
with a Linear layer and nothing after it: AsyIRM reads |z| as the radial coordinate and z/|z| as
the angular one, so neither may be normalised or squashed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rise_dist.config import ModelConfig
from rise_dist.data.cache import CHANNELS, MODALITIES
from rise_dist.model.backbones import build_backbone

__all__ = ["MODALITIES", "Output", "RiSeModel"]


@dataclass
class Output:
    """What the model computes for a batch of B samples (D = ``cfg.feature_dim``).

    ``logit``: (B,) live logit from the fused feature (score = sigmoid(logit) = P(live)).
    ``fused``: (B, D) the fused feature z.
    ``modality``: ``{"rgb", "depth", "ir"} -> (B, D)`` each stream's feature; for an absent
    modality, the stream's feature of its all-zero input (also under ``drop_feature``, where only
    the fusion zeroes it).
    """

    logit: Tensor
    fused: Tensor
    modality: dict[str, Tensor]


class RiSeModel(nn.Module):
    """Modality streams (``backbone``), fusion MLP (``fusion``) and live head (``live_head``).

    Fusion: concat of the three (B, D) features (rgb, depth, ir order) -> Linear(3D, D) ->
    LayerNorm -> ReLU -> Dropout -> Linear(D, D) = z. LayerNorm rather than BatchNorm keeps
    ``fuse`` per-sample (a mixed sample's z depends on its own slots only, never on the rest of
    the batch) and the same in training and evaluation but for dropout. The last Linear leaves z
    unconstrained in norm and sign (a ReLU output would confine u = z/|z| to one orthant).
    """

    def __init__(self, cfg: ModelConfig, image_size: tuple[int, int]):
        super().__init__()
        self.cfg = cfg
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.feature_dim = cfg.feature_dim
        d = cfg.feature_dim
        self.backbone = build_backbone(cfg, self.image_size)
        self.fusion = nn.Sequential(nn.Linear(len(MODALITIES) * d, d), nn.LayerNorm(d), nn.ReLU(),
                                    nn.Dropout(cfg.dropout), nn.Linear(d, d))
        self.live_head = nn.Linear(d, 1)

    def forward(self, x: dict[str, Tensor], absent: Iterable[str] = ()) -> Output:
        """``x[m]``: float (B, C_m, H, W) in [0, 1], C = 3 for rgb, 1 for depth and ir; (H, W) =
        ``image_size``. ``absent``: modalities missing for this batch; their input is zeroed (the
        lineage's convention; ``x`` may omit them) and, with ``cfg.missing == "drop_feature"``,
        the fusion also zeroes their feature."""
        absent = _check_absent(absent)
        modality = self.encode(x, absent)
        fused, logit = self.fuse(modality, absent)
        return Output(logit=logit, fused=fused, modality=modality)

    def encode(self, x: dict[str, Tensor], absent: Iterable[str] = ()) -> dict[str, Tensor]:
        """Per-modality features ``{m: (B, D)}``; absent modalities' inputs are all-zero images."""
        absent = _check_absent(absent)
        present = [m for m in MODALITIES if m not in absent]
        for m in present:
            if m not in x:
                raise ValueError(f"input for modality {m!r} missing (got {sorted(x)}; "
                                 f"absent={absent})")
        b = x[present[0]].shape[0]
        h, w = self.image_size
        inputs = {}
        for m in MODALITIES:
            want = (b, CHANNELS[m], h, w)
            if m in absent:
                ref = x[present[0]]
                inputs[m] = torch.zeros(want, dtype=ref.dtype, device=ref.device)
                continue
            if tuple(x[m].shape) != want:
                raise ValueError(f"input {m!r} has shape {tuple(x[m].shape)}, expected {want} "
                                 f"(B, C, H, W) with image_size {self.image_size}")
            inputs[m] = x[m]
        return self.backbone(inputs)

    def fuse(self, modality: dict[str, Tensor], absent: Iterable[str] = ()) -> tuple[Tensor, Tensor]:
        """(fused (B, D), logit (B,)) from per-modality features ``{m: (B, D)}``, no backbone pass.

        With ``cfg.missing == "drop_feature"`` the features of ``absent`` modalities are replaced by
        zeros; with ``zero_input`` they are used as given."""
        absent = _check_absent(absent)
        drop = self.cfg.missing == "drop_feature"
        parts = [torch.zeros_like(modality[m]) if drop and m in absent else modality[m]
                 for m in MODALITIES]
        z = self.fusion(torch.cat(parts, dim=1))
        return z, self.live_head(z).squeeze(1)


def _check_absent(absent: Iterable[str]) -> tuple[str, ...]:
    absent = tuple(absent)
    unknown = [m for m in absent if m not in MODALITIES]
    if unknown:
        raise ValueError(f"absent modalities {unknown} unknown; modalities are {MODALITIES}")
    if set(absent) >= set(MODALITIES):
        raise ValueError("absent names every modality: at least one must be present")
    return absent
