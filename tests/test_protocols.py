"""Protocols: names, parts, and that no held-out sample ever reaches training or selection."""

import pytest

from rise_dist.config import SyntheticConfig
from rise_dist.data.cache import DOMAINS, open_cache
from rise_dist.data.protocols import (
    LEAVE_ONE_OUT,
    PROTOCOLS,
    Protocol,
    get_protocol,
    parse_protocols,
)
from rise_dist.data.synthetic import write_synthetic


def test_leave_one_out_holds_out_exactly_one_domain():
    for name in LEAVE_ONE_OUT:
        p = get_protocol(name)
        assert len(p.targets) == 1 and set(p.sources) | set(p.targets) == set(DOMAINS)
        assert p.train_parts == tuple((d, "train") for d in p.sources)
        assert p.val_parts == tuple((d, "val") for d in p.sources)
        assert p.test_parts == ((p.targets[0], "test"),)
    assert {get_protocol(n).targets[0] for n in LEAVE_ONE_OUT} == set(DOMAINS)


def test_limited_source_and_missing_modality():
    p = get_protocol("CW_PS")
    assert p.sources == ("C", "W") and p.test_parts == (("P", "test"), ("S", "test"))
    assert get_protocol("PS_CW").targets == ("C", "W")
    m = get_protocol("CPS_W-no_depth_ir")
    assert m.missing_at_test == ("depth", "ir") and m.base == "CPS_W"
    assert get_protocol("PSW_C-no_ir").missing_at_test == ("ir",)
    assert get_protocol("CPS_W").missing_at_test == ()


def test_unknown_protocol_lists_known_ones():
    with pytest.raises(ValueError, match="unknown protocol 'CPS_X'.*CPS_W.*PS_CW"):
        get_protocol("CPS_X")
    with pytest.raises(ValueError, match="unknown protocol 'nope'"):
        parse_protocols("CPS_W,nope")
    with pytest.raises(ValueError, match="no protocol"):
        parse_protocols(" , ")


def test_parse_protocols():
    assert [p.name for p in parse_protocols("all")] == list(LEAVE_ONE_OUT)
    assert [p.name for p in parse_protocols("CW_PS, CPS_W-no_ir")] == ["CW_PS", "CPS_W-no_ir"]


def test_check_disjoint_catches_a_leak():
    with pytest.raises(ValueError, match="target domain"):
        Protocol("bad", ("C", "W"), ("W",)).check_disjoint()


def test_no_held_out_sample_reaches_training_or_selection(tmp_path):
    """On a real cache: the rows each protocol trains and selects on share no sample, no video
    and no domain with the rows it tests on."""
    write_synthetic(tmp_path, SyntheticConfig(n_train=16, n_val=8, n_test=8, size=(8, 8)))
    cache = open_cache(tmp_path)
    for p in PROTOCOLS.values():
        def rows(parts):
            return cache.index[cache.index[["domain", "split"]].apply(tuple, axis=1).isin(parts)]
        seen, test = rows(p.train_parts + p.val_parts), rows(p.test_parts)
        assert len(seen) and len(test)
        assert not set(seen["domain"]) & set(test["domain"]), p.name
        assert not set(seen["video"]) & set(test["video"]), p.name
        assert not set(seen["source"]) & set(test["source"]), p.name
