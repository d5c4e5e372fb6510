"""The ablation's pieces: the grid Tune expands (Ray's own variant generator), weights per
method, choosing weights (defaults, a file, best-of a hand-written sweep store), sensitivity
specs, and the summary table from a hand-written results store."""

import json
import math

import pytest
from ray.tune.search.variant_generator import generate_variants

from rise_dist import results
from rise_dist.config import METHOD_WEIGHTS, ConfigError
from rise_dist.tune import ablation

PROTOCOLS = ["CPS_W", "CPW_S", "CSW_P", "PSW_C"]


def _settings(tmp_path, **kw):
    w = kw.pop("weights", None) or ablation.choose_weights(None)
    return ablation.Settings(out=str(tmp_path), storage=str(tmp_path / "tune"),
                             base={"epochs": 2, "seed": 0}, protocols=kw.pop("protocols", PROTOCOLS),
                             weights=w.values, weight_sources=w.sources, **kw)


def _grid(s):
    """The trials Tune's BasicVariantGenerator makes of the settings' param space."""
    return [cfg for _, cfg in generate_variants(s.param_space())]


def test_the_grid_is_methods_x_protocols_x_seeds_with_each_methods_weights(tmp_path):
    w = ablation.Weights({"lambda_asyirm": 2.0, "lambda_mmsd": 0.3, "lr": 0.002, "asyirm.margin": 0.25},
                         {})
    s = _settings(tmp_path, weights=w, seeds=3, seed=5)
    grid = _grid(s)
    assert len(grid) == s.n_trials == 4 * 4 * 3
    keys = {(c["method"], c["protocol"], c["seed"]) for c in grid}
    assert len(keys) == len(grid)
    assert {c["seed"] for c in grid} == {5, 6, 7}  # seed s of the grid = first seed + s
    want = {"erm": (0.0, 0.0), "asyirm": (2.0, 0.0), "mmsd": (0.0, 0.3), "rise": (2.0, 0.3)}
    for c in grid:
        cfg = s.config_for(c)
        assert (cfg.lambda_asyirm, cfg.lambda_mmsd) == want[c["method"]]
        assert cfg.method == c["method"] and cfg.protocol == c["protocol"] and cfg.seed == c["seed"]
        assert cfg.lr == 0.002 and cfg.asyirm.margin == 0.25 and cfg.epochs == 2


def test_a_sensitivity_grid_sweeps_one_value_and_keeps_the_others(tmp_path):
    name, values = ablation.parse_sensitivity("lambda_asyirm=0,0.01,0.1,1")
    assert name == "lambda_asyirm" and values == [0.0, 0.01, 0.1, 1.0]
    s = _settings(tmp_path, sensitivity=name, values=values, seeds=2, protocols=["CPS_W"])
    grid = _grid(s)
    assert len(grid) == 4 * 1 * 2
    for c in grid:
        cfg = s.config_for(c)
        assert cfg.lambda_asyirm == c["lambda_asyirm"]
        assert cfg.lambda_mmsd == METHOD_WEIGHTS["rise"][1]
    assert ablation.parse_sensitivity("asyirm.warmup_epochs=0,2") == ("asyirm.warmup_epochs", [0, 2])


@pytest.mark.parametrize("spec, field", [
    ("lambda_asyirm", "NAME=v1,v2"), ("lamda_asyirm=0,1", "lamda_asyirm"),
    ("seed=0,1", "seed"), ("model.backbone=1,2", "model.backbone"),
    ("asyirm.warmup_epochs=0,1.5", "'1.5'"), ("lambda_mmsd=0.1,0.1", "distinct"),
    ("lambda_mmsd=", "lambda_mmsd")])
def test_a_bad_sensitivity_spec_names_what_is_wrong(spec, field):
    with pytest.raises(ConfigError, match="--sensitivity") as e:
        ablation.parse_sensitivity(spec)
    assert field in str(e.value)


def test_an_out_of_range_sensitivity_value_names_the_field_before_ray_starts(tmp_path):
    with pytest.raises(ConfigError, match="lambda_asyirm"):
        _settings(tmp_path, sensitivity="lambda_asyirm", values=[0.1, -1.0])


def test_unknown_methods_are_an_error_naming_them(tmp_path):
    with pytest.raises(ConfigError, match="unknown: \\['irm'\\]"):
        _settings(tmp_path, methods=["erm", "irm"])


def test_weights_default_to_method_weights_and_a_file_overrides_them(tmp_path):
    w = ablation.choose_weights(None)
    assert w.values == {"lambda_asyirm": METHOD_WEIGHTS["asyirm"][0],
                        "lambda_mmsd": METHOD_WEIGHTS["mmsd"][1]}
    assert set(w.sources.values()) == {ablation.DEFAULTS}
    f = tmp_path / "w.yaml"
    f.write_text("lambda_asyirm: 0.5\nmmsd.temperature: 0.2\nuse_mmsd: false\nlambda_mmsd: 3\n")
    w = ablation.choose_weights(str(f))
    # use_mmsd false: the file's lambda_mmsd is 0, which cannot stand for MMSD -> default, said so
    assert w.values == {"lambda_asyirm": 0.5, "mmsd.temperature": 0.2,
                        "lambda_mmsd": METHOD_WEIGHTS["mmsd"][1]}
    assert w.sources["lambda_asyirm"] == str(f.resolve())
    assert "lambda_mmsd = 0" in w.sources["lambda_mmsd"]
    j = tmp_path / "w.json"
    j.write_text(json.dumps({"lambda_asyirm": 0.7}))
    assert ablation.choose_weights(str(j)).values["lambda_asyirm"] == 0.7


@pytest.mark.parametrize("text, field", [
    ("lambda_asyrm: 1.0\n", "'lambda_asyrm'"), ("lambda_asyirm: big\n", "lambda_asyirm = 'big'"),
    ("- 1\n- 2\n", "mapping"), ("use_asyirm: 3\n", "use_asyirm"), ("{a: [\n", "not YAML")])
def test_a_bad_weights_file_names_the_field(tmp_path, text, field):
    f = tmp_path / "w.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match="--weights") as e:
        ablation.choose_weights(str(f))
    assert field in str(e.value)


def _sweep_run(out, trial, protocol, val_hters, *, status="completed", epochs=2, la=1.0, lm=0.1,
               lr=1e-3, margin=0.5):
    run_id = f"{trial}-{protocol}"
    rows = [{"run_id": run_id, "trial_id": trial, "protocol": protocol, "epoch": e + 1,
             "epochs": epochs, "status": status, "status_reason": "", "method": "x", "seed": 0,
             "val_hter": v, "test_hter": 0.3, "lambda_asyirm": la, "lambda_mmsd": lm, "lr": lr,
             "asyirm.margin": margin, "asyirm.warmup_epochs": 1, "mmsd.temperature": 0.1,
             # as a Run writes them: the lr column is the schedule's rate after the epoch
             "config": json.dumps({"lr": lr, "lambda_asyirm": la, "lambda_mmsd": lm,
                                   "asyirm": {"margin": margin, "warmup_epochs": 1},
                                   "mmsd": {"temperature": 0.1}})}
            for e, v in enumerate(val_hters)]
    for r in rows:
        r["lr"] = lr / 2
    results.write_run(out, run_id, rows)


def test_best_of_takes_the_complete_trial_with_the_lowest_mean_source_val_hter(tmp_path):
    sw = tmp_path / "sweep"
    # t1: mean selected val HTER (0.2 + 0.3) / 2 = 0.25
    _sweep_run(sw, "t1", "CPS_W", [0.4, 0.2], la=2.0, lm=0.5)
    _sweep_run(sw, "t1", "CPW_S", [0.3, 0.35], la=2.0, lm=0.5)
    # t2: 0.15, the best complete one; its MMSD gate was off (lambda_mmsd 0)
    _sweep_run(sw, "t2", "CPS_W", [0.1, 0.3], la=0.4, lm=0.0, lr=0.003, margin=1.25)
    _sweep_run(sw, "t2", "CPW_S", [0.25, 0.2], la=0.4, lm=0.0, lr=0.003, margin=1.25)
    # t3 is better but was stopped by ASHA; t4 failed: neither counts
    _sweep_run(sw, "t3", "CPS_W", [0.01], status="stopped_early", la=9.0)
    _sweep_run(sw, "t3", "CPW_S", [0.01], status="stopped_early", la=9.0)
    _sweep_run(sw, "t4", "CPS_W", [0.0, 0.0], status="failed", la=8.0)
    _sweep_run(sw, "t4", "CPW_S", [0.0, 0.0], la=8.0)
    values, origin = ablation.best_of(sw)
    assert values == {"lambda_asyirm": 0.4, "lambda_mmsd": 0.0, "asyirm.margin": 1.25,
                      "asyirm.warmup_epochs": 1, "mmsd.temperature": 0.1, "lr": 0.003}
    assert "trial t2 of 2 complete" in origin and "15.00%" in origin
    w = ablation.choose_weights(f"best-of:{sw}")
    assert w.values["lambda_asyirm"] == 0.4 and w.sources["lambda_asyirm"] == origin
    assert w.values["lambda_mmsd"] == METHOD_WEIGHTS["mmsd"][1]
    assert "lambda_mmsd = 0" in w.sources["lambda_mmsd"]
    json.dumps(w.values)  # plain Python values: they go to ablation.json


def test_best_of_without_a_complete_trial_or_store_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        ablation.choose_weights(f"best-of:{tmp_path / 'none'}")
    _sweep_run(tmp_path / "sw", "t3", "CPS_W", [0.1], status="stopped_early")
    with pytest.raises(ConfigError, match="no trial of that sweep completed"):
        ablation.best_of(tmp_path / "sw")


def test_settings_round_trip(tmp_path):
    s = _settings(tmp_path, methods=["erm", "rise"], seeds=2)
    s.save()
    assert (tmp_path / "ablation.json").exists()
    assert ablation.Settings.load(tmp_path) == s


def test_the_summary_is_mean_and_std_over_seeds_at_the_source_val_epoch(tmp_path):
    s = _settings(tmp_path, methods=["erm", "rise"], seeds=2, protocols=["CPS_W", "CPW_S"])

    def run(method, protocol, seed, test, status="completed"):
        rid = f"t-{method}-{protocol}-{seed}"
        # epoch 2 has the lower val HTER: source_val selects it, whatever its test HTER
        results.write_run(tmp_path, rid, [
            {"run_id": rid, "trial_id": "t", "protocol": protocol, "method": method, "seed": seed,
             "epoch": e, "status": status, "val_hter": v, "test_hter": t}
            for e, v, t in ((1, 0.3, 0.01), (2, 0.2, test))])

    run("erm", "CPS_W", 0, 0.10)
    run("erm", "CPS_W", 1, 0.20)
    run("erm", "CPW_S", 0, 0.30)
    run("erm", "CPW_S", 1, 0.50)
    run("rise", "CPS_W", 0, 0.05)
    run("rise", "CPS_W", 1, 0.9, status="failed")
    run("rise", "CPW_S", 0, 0.9, status="failed")
    run("rise", "CPW_S", 1, 0.9, status="failed")
    summary = ablation.summarize(s)
    assert summary["counts"] == {"completed": 5, "failed": 3, "other": 0}
    assert summary["cells"][("erm", "CPS_W")]["test_hter"] == pytest.approx([0.10, 0.20])
    text = ablation.format_summary(s, summary)
    sd1, sd2 = 100 * math.sqrt(2 * 0.05**2), 100 * math.sqrt(2 * 0.1**2)  # sample std over seeds (%)
    erm = next(line for line in text.splitlines() if line.strip().startswith("erm"))
    assert erm.split() == ["erm", f"15.00±{sd1:.2f}", f"40.00±{sd2:.2f}", "27.50"]
    rise = next(line for line in text.splitlines() if line.strip().startswith("rise"))
    assert rise.split() == ["rise", "5.00", "(1/2)", "failed", "-"]
    assert "source_val" in text and str(tmp_path) in text
