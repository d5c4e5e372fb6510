"""Configs: validation names the field, dict round trip, unknown keys rejected."""

import pytest

from rise_dist.config import ConfigError, SyntheticConfig, from_dict, to_dict


def test_round_trip_through_a_plain_dict():
    cfg = SyntheticConfig(seed=3, size=(16, 24), spurious=0.0)
    d = to_dict(cfg)
    assert d["size"] == [16, 24] and d["spurious"] == 0.0
    assert from_dict(SyntheticConfig, d) == cfg


@pytest.mark.parametrize("field, value", [
    ("spurious", 1.5), ("asymmetry", -0.1), ("camera_shift", 4.0), ("intrinsic", -1.0),
    ("size", (4, 4)), ("seed", -1), ("n_train", 3), ("live_fraction", 1.0),
    ("frames_per_video", 0),
])
def test_out_of_range_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"SyntheticConfig\.{field} = "):
        SyntheticConfig(**{field: value})


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['spurius'\]"):
        from_dict(SyntheticConfig, {"spurius": 0.5})
