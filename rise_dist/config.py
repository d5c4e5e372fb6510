"""Typed, validated configuration.

Every config is a frozen dataclass that checks its own values in ``__post_init__`` and names the
field it rejects. ``to_dict``/``from_dict`` are the one place a plain dict (Tune's param space, a
YAML file, a results row) becomes a typed config and back.
"""

from __future__ import annotations

import dataclasses
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
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
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
