"""Search spaces as data, and the one place a sampled flat dict becomes typed configs.

A space is a plain dict ``{name: optuna.distributions.*}``; names are flat and use the results
store's column names (``lambda_asyirm``, ``asyirm.margin``, ``mmsd.temperature``, ``lr``), so a
trial's parameters, its Optuna study and its result rows all name a value the same way.

Zero weights. The loss weights are log-uniform over ``[1e-3, 10]``, where 0 is not reachable. So
that the search can still turn a term off (the ablation the paper's claims rest on), each weight
has a categorical gate ``use_asyirm`` / ``use_mmsd`` in {True, False}: the weight used is
``lambda_* if use_* else 0``. With gates a TPE study learns "off" like any other value, and every
trial's row says which method (erm/asyirm/mmsd/rise) it was. ``search_space(gates=False)`` drops
the gates (always on). The sweep samples the space through ``DefineByRun``: a weight is drawn
only when its gate is on (absent from the trial's parameters otherwise), and the config, the
rows and ``method`` see 0 for it.

``configs_for(sample, base, protocols)`` is the only place Tune's dict becomes a ``TrainConfig``:
``base`` is a (possibly nested) dict of fixed TrainConfig fields, ``sample`` a flat dict of
sampled values (dotted names address nested configs); anything unknown is a ConfigError.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from rise_dist.config import ConfigError, TrainConfig, from_dict, to_dict

WEIGHT_RANGE = (1e-3, 10.0)
GATES = {"lambda_asyirm": "use_asyirm", "lambda_mmsd": "use_mmsd"}


def search_space(gates: bool = True) -> dict[str, BaseDistribution]:
    """The RiSe sweep space: both loss weights (log-uniform 1e-3..10, each with an on/off gate
    unless ``gates=False``), the AsyIRM margin and IRM warm-up, the MMSD temperature, the lr."""
    space: dict[str, BaseDistribution] = {
        "lambda_asyirm": FloatDistribution(*WEIGHT_RANGE, log=True),
        "lambda_mmsd": FloatDistribution(*WEIGHT_RANGE, log=True),
        "asyirm.margin": FloatDistribution(0.0, 2.0),
        "asyirm.warmup_epochs": IntDistribution(0, 3),
        "mmsd.temperature": FloatDistribution(0.02, 1.0, log=True),
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
    }
    if gates:
        space.update({g: CategoricalDistribution((True, False)) for g in GATES.values()})
    return space


def weights_only_space(gates: bool = True) -> dict[str, BaseDistribution]:
    """Only the two loss weights (and their gates): the cheapest meaningful sweep."""
    full = search_space(gates)
    keep = set(GATES) | (set(GATES.values()) if gates else set())
    return {k: v for k, v in full.items() if k in keep}


SPACES = {"rise": search_space, "weights": weights_only_space}


def suggest(trial, name: str, dist: BaseDistribution):
    """``trial.suggest_*`` for one distribution of a space."""
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, log=dist.log, step=dist.step)
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    raise TypeError(f"{name}: unsupported distribution {dist!r}")


class DefineByRun:
    """A space as an Optuna define-by-run function (what ``OptunaSearch(space=...)`` takes): a
    gated weight is sampled only when its gate is on.

    With a flat space, TPE samples ``lambda_asyirm`` even when ``use_asyirm`` is off, and each
    such draw is a new point to it though the trained config is the same (0): on a 5x5-grid
    benchmark 5 of 14 trials were ERM again. Sampled conditionally, "off" is one branch with
    no weight under it, and TPE models the weight from the trials where it was used.
    A picklable object, not a closure: Tune pickles the searcher with every experiment checkpoint.
    """

    def __init__(self, space: dict[str, BaseDistribution]):
        self.space = space

    def __call__(self, trial) -> None:
        gated = {w: g for w, g in GATES.items() if g in self.space and w in self.space}
        for name, dist in self.space.items():
            if name in gated:
                continue  # sampled right after its gate
            suggest(trial, name, dist)
            weight = next((w for w, g in gated.items() if g == name), None)
            if weight is not None and trial.params[name]:
                suggest(trial, weight, self.space[weight])


def effective(sample: dict) -> dict:
    """``sample`` with gates applied: a weight whose gate is off becomes 0; gates removed."""
    out = {k: v for k, v in sample.items() if k not in GATES.values()}
    for weight, gate in GATES.items():
        if gate in sample and not bool(sample[gate]):
            out[weight] = 0.0
    return out


def _set(d: dict, dotted: str, value) -> None:
    keys = dotted.split(".")
    node = d
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            raise ConfigError(f"sampled parameter {dotted!r}: {k!r} is not a nested TrainConfig "
                              "section")
        node = node[k]
    if keys[-1] not in node:
        raise ConfigError(f"sampled parameter {dotted!r} is not a TrainConfig field")
    node[keys[-1]] = value


def _plain(v):
    """Optuna / numpy scalars as plain Python values (configs go to JSON and Parquet)."""
    if hasattr(v, "item") and not isinstance(v, (list, tuple, dict)):
        return v.item()
    return v


def configs_for(sample: dict, base: dict | None = None,
                protocols: Iterable[str] = ("CPS_W",)) -> list[TrainConfig]:
    """One validated ``TrainConfig`` per protocol for one sampled point of a space.

    ``base``: fixed TrainConfig fields (nested dicts for sections, e.g. ``{"epochs": 3,
    "model": {"backbone": "cnn"}}``); ``sample``: flat sampled values, gates included.
    """
    d = to_dict(TrainConfig())
    for k, v in (base or {}).items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            for kk, vv in v.items():
                _set(d, f"{k}.{kk}", vv)
        else:
            _set(d, k, v)
    for k, v in effective(sample).items():
        if k == "protocol":
            raise ConfigError("the protocol is not a searched value: pass protocols")
        v = _plain(v)
        if k == "asyirm.warmup_epochs":
            v = int(v)
        _set(d, k, v)
    out = []
    for p in protocols:
        dp = copy.deepcopy(d)
        dp["protocol"] = p
        out.append(from_dict(TrainConfig, dp))
    return out


def flat_weights(sample: dict) -> dict:
    """The effective searched values of one trial, for summaries (gates applied)."""
    return {k: _plain(v) for k, v in effective(sample).items()}
