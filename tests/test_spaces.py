"""Search spaces as data, and the one place a sampled dict becomes TrainConfigs (real Optuna)."""

import math

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution

from rise_dist.config import ConfigError, TrainConfig
from rise_dist.data.protocols import LEAVE_ONE_OUT
from rise_dist.tune import spaces


def test_the_space_covers_weights_margin_warmup_temperature_and_lr():
    s = spaces.search_space()
    assert set(s) == {"lambda_asyirm", "lambda_mmsd", "use_asyirm", "use_mmsd", "asyirm.margin",
                      "asyirm.warmup_epochs", "mmsd.temperature", "lr"}
    for w in ("lambda_asyirm", "lambda_mmsd"):
        d = s[w]
        assert isinstance(d, FloatDistribution) and d.log and (d.low, d.high) == (1e-3, 10.0)
    assert isinstance(s["use_asyirm"], CategoricalDistribution)
    assert set(s["use_asyirm"].choices) == {True, False}
    assert "use_asyirm" not in spaces.search_space(gates=False)
    assert set(spaces.weights_only_space()) == {"lambda_asyirm", "lambda_mmsd", "use_asyirm",
                                                "use_mmsd"}


def test_every_optuna_sample_gives_a_valid_config_per_protocol_and_zero_is_reachable():
    space = spaces.search_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    methods = set()
    for _ in range(40):
        t = study.ask(fixed_distributions=space)
        cfgs = spaces.configs_for(t.params, {"epochs": 3}, LEAVE_ONE_OUT)
        assert [c.protocol for c in cfgs] == list(LEAVE_ONE_OUT)
        c = cfgs[0]
        assert all(isinstance(x, TrainConfig) and x.epochs == 3 for x in cfgs)
        for w, g in spaces.GATES.items():
            want = t.params[w] if t.params[g] else 0.0
            assert math.isclose(getattr(c, w), want)
        assert c.asyirm.margin == t.params["asyirm.margin"]
        assert c.asyirm.warmup_epochs == t.params["asyirm.warmup_epochs"]
        assert c.mmsd.temperature == t.params["mmsd.temperature"] and c.lr == t.params["lr"]
        methods.add(c.method)
        study.tell(t, 0.5)
    assert methods == {"erm", "asyirm", "mmsd", "rise"}  # ablations are reachable points


def test_base_sets_nested_fields_and_unknown_names_are_errors():
    cfgs = spaces.configs_for({"lambda_asyirm": 0.5}, {"model": {"backbone": "cnn",
                                                                 "feature_dim": 32}, "seed": 4},
                              ["CPS_W", "CW_PS"])
    assert cfgs[1].protocol == "CW_PS" and cfgs[0].model.feature_dim == 32 and cfgs[0].seed == 4
    assert cfgs[0].method == "asyirm"
    with pytest.raises(ConfigError, match="lambda_typo"):
        spaces.configs_for({"lambda_typo": 1.0})
    with pytest.raises(ConfigError, match="asyirm.nope"):
        spaces.configs_for({"asyirm.nope": 1.0})
    with pytest.raises(ConfigError, match="protocol"):
        spaces.configs_for({"protocol": "CPS_W"})
    with pytest.raises(ConfigError, match="lr"):
        spaces.configs_for({"lr": -1.0})
    with pytest.raises(ValueError, match="protocol"):
        spaces.configs_for({}, None, ["XYZ"])


def test_effective_applies_gates_and_drops_them():
    assert spaces.effective({"lambda_asyirm": 2.0, "use_asyirm": False, "lambda_mmsd": 0.1,
                             "use_mmsd": True}) == {"lambda_asyirm": 0.0, "lambda_mmsd": 0.1}


def test_define_by_run_draws_a_weight_only_under_its_open_gate():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=5))
    sample = spaces.DefineByRun(spaces.search_space())
    methods = set()
    for i in range(30):
        t = study.ask()
        sample(t)
        for w, g in spaces.GATES.items():
            assert (w in t.params) == t.params[g], t.params
        c = spaces.configs_for(t.params, {"epochs": 3})[0]
        methods.add(c.method)
        study.tell(t, float(c.lambda_asyirm) + 0.01 * i)
    assert methods == {"erm", "asyirm", "mmsd", "rise"}
    full = spaces.DefineByRun(spaces.search_space(gates=False))
    t = study.ask()
    full(t)
    assert set(t.params) == set(spaces.search_space(gates=False))
