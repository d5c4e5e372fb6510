"""The training step the benchmarks time and measure: one method's config on one backbone, and
one step of it (forward, every loss term, backward, AdamW), as ``train/loop.py`` runs it.

Kept to the model, the loss and the optimizer (no data modules), so ``memory.py``'s child
processes import no more than a training step needs."""

from __future__ import annotations

import torch

from rise_dist.config import METHOD_WEIGHTS, ModelConfig, TrainConfig
from rise_dist.losses.objective import Objective
from rise_dist.model.rise import RiSeModel


def step_config(method: str, backbone: str) -> TrainConfig:
    """``method`` (erm, asyirm, mmsd, rise) at its METHOD_WEIGHTS on ``backbone``."""
    la, lm = METHOD_WEIGHTS[method]
    return TrainConfig(lambda_asyirm=la, lambda_mmsd=lm, model=ModelConfig(backbone=backbone))


def make_step(cfg: TrainConfig, image_size, device: torch.device | None = None):
    """One training step of ``cfg``'s model on ``device`` (default CPU), called as
    ``step(x, labels, domains)`` with x = {modality: (B, C, H, W)}; bf16 autocast on CUDA, as the
    loop does; 3 source domains."""
    device = device or torch.device("cpu")
    model = RiSeModel(cfg.model, image_size).to(device)
    objective = Objective(cfg, model.feature_dim, 3).to(device)
    opt = torch.optim.AdamW(list(model.parameters()) + list(objective.parameters()), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    amp = device.type == "cuda"

    def step(x, labels, domains):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss, _ = objective(out, labels, domains, model, 2, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if amp:
            torch.cuda.synchronize()  # time the step, not its launch
    return step
