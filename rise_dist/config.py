"""Typed, validated configuration.

Every config is a frozen dataclass that checks its own values in ``__post_init__`` and names the
field it rejects. ``to_dict``/``from_dict`` are the one place a plain dict (Tune's param space, a
YAML file, a results row) becomes a typed config and back.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """An out-of-range or unknown config value; the message names the field."""


def _check(cond: bool, cls: str, name: str, value: Any, want: str) -> None:
    if not cond:
        raise ConfigError(f"{cls}.{name} = {value!r}: must be {want}")


def to_dict(cfg) -> dict:
    """A config as plain Python values (tuples become lists), safe for JSON, YAML and Parquet."""
    return dataclasses.asdict(cfg, dict_factory=lambda kv: {k: list(v) if isinstance(v, tuple)
                                                           else v for k, v in kv})


def from_dict(cls: type[T], d: dict) -> T:
    """Build ``cls`` from a dict; unknown keys are an error naming them and the known ones."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown field(s) {unknown}; known: {sorted(fields)}")
    kw = {}
    for k, v in d.items():
        sub = fields[k].type
        if isinstance(v, dict) and isinstance(sub, str) and sub in _NESTED:
            v = from_dict(_NESTED[sub], v)
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return cls(**kw)


@dataclass(frozen=True)
class SyntheticConfig:
    """The built-in controlled-risk benchmark (``rise_dist.data.synthetic``).

    Four domains named C, P, S, W. Each risk RiSe targets sits behind one knob; 0 turns it off,
    1 is the default strength. docs/synthetic.md describes the generator in full.

    - ``asymmetry``: class asymmetry. 0: every domain's spoofs are one compact type (print) with
      the lives' spread. 1: six spoof types, two shared by all domains and one exclusive to each
      domain (so each held-out domain has an attack type its sources never show), spoof
      appearance spread three times the lives'.
    - ``camera_shift``: per-domain sensor shift (colour cast, gain, noise, blur in RGB; scale,
      offset and noise in depth; gain and noise in IR), interpolated from neutral (0).
    - ``spurious``: probability that a sample's inter-modal marker agreement encodes its label.
      Each modality carries a background grating whose polarity alone is a fair coin; whether the
      three polarities agree predicts live in domains C and P and spoof in S and W, so for every
      held-out domain two of its three sources say the opposite of what holds in it.
    - ``intrinsic``: strength of the per-modality liveness cues that hold in every domain (depth
      relief, IR skin reflectance, RGB recapture artefacts). Weaker than the spurious cue at 1.
    """

    seed: int = 0
    size: tuple[int, int] = (32, 32)
    n_train: int = 1200
    n_val: int = 400
    n_test: int = 800
    frames_per_video: int = 4
    live_fraction: float = 0.3
    asymmetry: float = 1.0
    camera_shift: float = 1.0
    spurious: float = 0.7
    intrinsic: float = 1.0

    def __post_init__(self):
        c = type(self).__name__
        _check(isinstance(self.seed, int) and self.seed >= 0, c, "seed", self.seed, "an int >= 0")
        _check(len(self.size) == 2 and all(isinstance(s, int) and 8 <= s <= 1024 for s in self.size),
               c, "size", self.size, "(H, W) with ints in [8, 1024]")
        for name in ("n_train", "n_val", "n_test"):
            v = getattr(self, name)
            _check(isinstance(v, int) and v >= 2 * self.frames_per_video, c, name, v,
                   f"an int >= 2 * frames_per_video ({2 * self.frames_per_video})")
        _check(isinstance(self.frames_per_video, int) and 1 <= self.frames_per_video <= 64, c,
               "frames_per_video", self.frames_per_video, "an int in [1, 64]")
        _check(0.05 <= self.live_fraction <= 0.95, c, "live_fraction", self.live_fraction,
               "in [0.05, 0.95]")
        for name in ("asymmetry", "spurious"):
            v = getattr(self, name)
            _check(0.0 <= v <= 1.0, c, name, v, "in [0, 1]")
        for name in ("camera_shift", "intrinsic"):
            v = getattr(self, name)
            _check(0.0 <= v <= 3.0, c, name, v, "in [0, 3]")


METHODS = ("erm", "asyirm", "mmsd", "rise")
BACKBONES = ("cnn", "resnet18", "vit_b16")
NORMS = ("batch", "group")
MMSD_VARIANTS = ("slot", "cross_domain", "slot_domain", "intrinsic")


# Loss weights a method name stands for when no weight is given (experiments/train.py). The
# sweep searches them; these are starting points, not tuned values.
METHOD_WEIGHTS = {"erm": (0.0, 0.0), "asyirm": (1.0, 0.0), "mmsd": (0.0, 0.1), "rise": (1.0, 0.1)}


def method_of(lambda_asyirm: float, lambda_mmsd: float) -> str:
    """The method a pair of loss weights is: the table row a run belongs to."""
    return {(False, False): "erm", (True, False): "asyirm", (False, True): "mmsd",
            (True, True): "rise"}[(lambda_asyirm > 0, lambda_mmsd > 0)]


@dataclass(frozen=True)
class ModelConfig:
    """Three modality streams, a fusion head and the live logit (``rise_dist.model``).

    - ``backbone``: ``cnn`` (small CNN per modality, the CPU default), ``resnet18`` or
      ``vit_b16`` (torchvision; ViT-B/16 with shared blocks, the first ``vit_frozen_blocks``
      frozen, and a bottleneck adapter of width ``adapter_dim`` per modality in every block).
    - ``pretrained``: a local weights file for the backbone (never downloaded); None = random.
    - ``missing``: how an absent modality is handled: ``zero_input`` (the lineage: its image is
      zeros and goes through its stream) or ``drop_feature`` (the fusion also zeroes its feature).
    - ``norm``: the CNN/ResNet streams' normalisation: ``batch`` (BatchNorm, the default) or
      ``group`` (GroupNorm, per sample). Under DDP on GPUs BatchNorm becomes SyncBatchNorm;
      on CPU (gloo) PyTorch has no SyncBatchNorm, so each rank normalises with its own slice's
      statistics; ``group`` makes an N-worker run compute exactly the 1-worker gradient (ERM).
    """

    backbone: str = "cnn"
    feature_dim: int = 128
    pretrained: str | None = None
    vit_frozen_blocks: int = 8
    adapter_dim: int = 64
    missing: str = "zero_input"
    dropout: float = 0.1
    norm: str = "batch"

    def __post_init__(self):
        c = type(self).__name__
        _check(self.norm in NORMS, c, "norm", self.norm, f"one of {NORMS}")
        _check(self.backbone in BACKBONES, c, "backbone", self.backbone, f"one of {BACKBONES}")
        _check(isinstance(self.feature_dim, int) and 8 <= self.feature_dim <= 4096, c,
               "feature_dim", self.feature_dim, "an int in [8, 4096]")
        _check(0 <= self.vit_frozen_blocks <= 12, c, "vit_frozen_blocks", self.vit_frozen_blocks,
               "in [0, 12]")
        _check(isinstance(self.adapter_dim, int) and 1 <= self.adapter_dim <= 768, c,
               "adapter_dim", self.adapter_dim, "an int in [1, 768]")
        _check(self.missing in ("zero_input", "drop_feature"), c, "missing", self.missing,
               "'zero_input' or 'drop_feature'")
        _check(0.0 <= self.dropout < 1.0, c, "dropout", self.dropout, "in [0, 1)")


@dataclass(frozen=True)
class AsyIRMConfig:
    """AsyIRM (``rise_dist/losses/asyirm.py``; docs/method.md gives the equations).

    ``tau``: temperature of the radial logit (R - |z|) / tau. ``margin``: lives are pulled to
    R - margin, spoofs pushed beyond R + margin. ``irm_weight``: weight of the IRMv1 penalty
    inside the term, reached after ``warmup_epochs`` (0 before, as in IRMv1's schedule).
    ``spread_weight``: makes the lives' radial spread equal across domains.
    ``domain_head_weight``: a domain classifier on the direction u = z/|z| (0 = off).
    ``per_modality``: also apply the term to each modality's feature.
    """

    tau: float = 1.0
    margin: float = 0.5
    irm_weight: float = 1.0
    warmup_epochs: int = 1
    spread_weight: float = 0.1
    domain_head_weight: float = 0.1
    per_modality: bool = True

    def __post_init__(self):
        c = type(self).__name__
        _check(0 < self.tau <= 100, c, "tau", self.tau, "in (0, 100]")
        _check(0 <= self.margin <= 10, c, "margin", self.margin, "in [0, 10]")
        for name in ("irm_weight", "spread_weight", "domain_head_weight"):
            v = getattr(self, name)
            _check(0 <= v <= 1e4, c, name, v, "in [0, 1e4]")
        _check(isinstance(self.warmup_epochs, int) and self.warmup_epochs >= 0, c,
               "warmup_epochs", self.warmup_epochs, "an int >= 0")


@dataclass(frozen=True)
class MMSDConfig:
    """MMSD (``rise_dist/losses/mmsd.py``): feature-level cross-sample modality mixing.

    ``variant``: ``slot`` (the DESIGN.md sketch: each mixed slot's source by contrastive matching
    and its own label), ``cross_domain`` (the same, but each slot only mixes with samples of
    other domains), ``slot_domain`` (also predict each slot's domain), ``intrinsic`` (separate
    each modality's intrinsic feature from what it shares with the others).
    ``temperature``: of the contrastive matching. ``label_weight``: of the per-slot label term.
    """

    variant: str = "slot"
    temperature: float = 0.1
    label_weight: float = 1.0

    def __post_init__(self):
        c = type(self).__name__
        _check(self.variant in MMSD_VARIANTS, c, "variant", self.variant, f"one of {MMSD_VARIANTS}")
        _check(0 < self.temperature <= 10, c, "temperature", self.temperature, "in (0, 10]")
        _check(0 <= self.label_weight <= 100, c, "label_weight", self.label_weight, "in [0, 100]")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: one protocol, one weight setting, one seed.

    ``data`` is ``"synthetic"`` (the default benchmark, built on first use) or a cache path.
    The method is not a field: it follows from the weights (``method``), so an ablation is a
    config value and a table row can never disagree with what was computed.
    """

    protocol: str = "CPS_W"
    data: str = "synthetic"
    seed: int = 0
    epochs: int = 10
    batch_size: int = 96
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    schedule: str = "cosine"
    lambda_asyirm: float = 0.0
    lambda_mmsd: float = 0.0
    video_average: bool = False
    amp: bool = True
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    asyirm: AsyIRMConfig = dataclasses.field(default_factory=AsyIRMConfig)
    mmsd: MMSDConfig = dataclasses.field(default_factory=MMSDConfig)
    synthetic: SyntheticConfig = dataclasses.field(default_factory=SyntheticConfig)

    @property
    def method(self) -> str:
        return method_of(self.lambda_asyirm, self.lambda_mmsd)

    def __post_init__(self):
        from rise_dist.data.protocols import PROTOCOLS  # lazy: data.synthetic imports this module

        c = type(self).__name__
        _check(self.protocol in PROTOCOLS, c, "protocol", self.protocol,
               f"one of {', '.join(PROTOCOLS)}")
        _check(isinstance(self.seed, int) and self.seed >= 0, c, "seed", self.seed, "an int >= 0")
        _check(isinstance(self.epochs, int) and 1 <= self.epochs <= 10_000, c, "epochs",
               self.epochs, "an int in [1, 10000]")
        _check(isinstance(self.batch_size, int) and 2 <= self.batch_size <= 65_536, c,
               "batch_size", self.batch_size, "an int in [2, 65536]")
        _check(0 < self.lr <= 10, c, "lr", self.lr, "in (0, 10]")
        _check(0 <= self.weight_decay <= 1, c, "weight_decay", self.weight_decay, "in [0, 1]")
        _check(self.optimizer in ("adamw", "sgd"), c, "optimizer", self.optimizer,
               "'adamw' or 'sgd'")
        _check(self.schedule in ("cosine", "step", "constant"), c, "schedule", self.schedule,
               "'cosine', 'step' or 'constant'")
        for name in ("lambda_asyirm", "lambda_mmsd"):
            v = getattr(self, name)
            _check(isinstance(v, (int, float)) and math.isfinite(v) and 0 <= v <= 1e3, c, name,
                   v, "a finite number in [0, 1000]")


_NESTED = {"ModelConfig": ModelConfig, "AsyIRMConfig": AsyIRMConfig, "MMSDConfig": MMSDConfig,
           "SyntheticConfig": SyntheticConfig}
