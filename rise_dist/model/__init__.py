"""Per-modality backbones, fusion and the live head: ``RiSeModel(cfg, image_size)``."""

from rise_dist.model.rise import MODALITIES, Output, RiSeModel

__all__ = ["MODALITIES", "Output", "RiSeModel"]
