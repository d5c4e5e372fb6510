"""The synthetic benchmark: deterministic, in the cache format, and each knob does what it says.

Knob effects are measured on the rendered pixels, not on the generator's internals: the marker
polarity is read back from the background corners, relief from the depth image, colour cast
from the RGB channels.
"""

import dataclasses

import numpy as np
import pytest

from rise_dist.config import SyntheticConfig
from rise_dist.data.cache import DOMAINS, INDEX_COLUMNS, open_cache, shard_dir
from rise_dist.data.synthetic import (
    EXCLUSIVE_TYPE,
    MARKER_PERIOD_PX,
    SHARED_TYPES,
    SPURIOUS_SIGN,
    generate,
    write_synthetic,
)

SMALL = SyntheticConfig(n_train=64, n_val=16, n_test=32, size=(16, 16))


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    write_synthetic(a, SMALL)
    write_synthetic(b, SMALL)
    write_synthetic(c, dataclasses.replace(SMALL, seed=1))
    for d in DOMAINS:
        for s in ("train", "val", "test"):
            for m in ("rgb", "depth", "ir"):
                fa, fb = (shard_dir(x, d, s) / f"{m}.npy" for x in (a, b))
                assert fa.read_bytes() == fb.read_bytes()
            assert (shard_dir(a, d, s) / "index.parquet").read_bytes() == \
                   (shard_dir(b, d, s) / "index.parquet").read_bytes()
    assert (shard_dir(a, "C", "train") / "rgb.npy").read_bytes() != \
           (shard_dir(c, "C", "train") / "rgb.npy").read_bytes()


def test_written_in_the_cache_format_with_the_promised_counts(tmp_path):
    summary = write_synthetic(tmp_path, SMALL)
    cache = open_cache(tmp_path)
    assert list(cache.index.columns) == list(INDEX_COLUMNS)
    assert cache.meta["kind"] == "synthetic" and cache.meta["config"]["size"] == [16, 16]
    assert "code_version" in cache.meta and "torch" in cache.meta["environment"]
    assert list(summary) == list(DOMAINS)
    for d in DOMAINS:
        for split, n in (("train", 64), ("val", 16), ("test", 32)):
            c = summary[d][split]
            assert c["live"] + c["spoof"] == n and c["missing"] == 0
            assert c["videos"] == n // SMALL.frames_per_video
            part = cache.part(d, split)
            assert part.arrays["rgb"].shape == (n, 3, 16, 16)
            # a video is one subject and one presentation: one label, one attack type
            assert (part.index.groupby("video")[["label", "attack"]].nunique() == 1).all().all()


def test_rerun_with_the_same_config_skips_and_a_new_config_rewrites(tmp_path):
    write_synthetic(tmp_path, SMALL)
    info = shard_dir(tmp_path, "C", "train") / "shard.json"
    first = info.stat().st_mtime_ns
    write_synthetic(tmp_path, SMALL)
    assert info.stat().st_mtime_ns == first
    write_synthetic(tmp_path, dataclasses.replace(SMALL, spurious=0.0))
    assert info.stat().st_mtime_ns != first
    assert open_cache(tmp_path).meta["config"]["spurious"] == 0.0


def _polarity(x: np.ndarray) -> np.ndarray:
    """(n, C, H, W) uint8 -> (n,) sign of the background grating's phase, read off the corners."""
    h, w = x.shape[-2:]
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    g = np.sin(2 * np.pi * (xx + yy) * (w / 2) / (MARKER_PERIOD_PX * np.sqrt(2)))
    x = x.astype(np.float64).mean(axis=1)
    k = 6
    score = 0.0
    for sy in (slice(0, k), slice(h - k, h)):
        for sx in (slice(0, k), slice(w - k, w)):
            patch = x[:, sy, sx]
            score = score + ((patch - patch.mean(axis=(1, 2), keepdims=True)) * g[sy, sx]).sum((1, 2))
    return np.sign(score)


def _agreement_gap(cfg, domain):
    """P(all three polarities agree | live) - P(agree | spoof), and the largest per-modality
    gap P(polarity + | live) - P(+ | spoof)."""
    arrays, index = generate(cfg, domain, "train")
    pol = np.stack([_polarity(arrays[m]) for m in ("rgb", "depth", "ir")], axis=1)
    live = index["label"].to_numpy() == 1
    agree = (pol == pol[:, :1]).all(axis=1)
    single = max(abs((pol[live, i] > 0).mean() - (pol[~live, i] > 0).mean()) for i in range(3))
    return agree[live].mean() - agree[~live].mean(), single


def test_spurious_knob_ties_modality_agreement_to_the_label_with_a_domain_sign():
    cfg = SyntheticConfig(n_train=800)
    for d in DOMAINS:
        gap, single = _agreement_gap(cfg, d)
        assert gap * SPURIOUS_SIGN[d] > 0.4, (d, gap)   # agreement predicts the label ...
        assert single < 0.15, (d, single)               # ... but no modality alone does
        off, _ = _agreement_gap(dataclasses.replace(cfg, spurious=0.0), d)
        assert abs(off) < 0.12, (d, off)


def _centre_depth(cfg, domain="C"):
    arrays, index = generate(cfg, domain, "train")
    h, w = cfg.size
    c = arrays["depth"][:, 0, h // 2 - 2:h // 2 + 2, w // 2 - 2:w // 2 + 2].mean(axis=(1, 2))
    live = index["label"].to_numpy() == 1
    return c[live], c[~live]


def test_intrinsic_knob_sets_the_depth_relief_gap():
    cfg = SyntheticConfig(n_train=800)
    live, spoof = _centre_depth(cfg)
    live0, spoof0 = _centre_depth(dataclasses.replace(cfg, intrinsic=0.0))
    assert live.mean() - spoof.mean() > 15
    assert abs(live0.mean() - spoof0.mean()) < 3


def test_asymmetry_knob_gives_compact_lives_diverse_spoofs_and_unseen_types():
    cfg = SyntheticConfig(n_train=800)
    types = {d: set(generate(cfg, d, "train")[1]["attack"]) - {"live"} for d in DOMAINS}
    for d in DOMAINS:
        assert types[d] == set(SHARED_TYPES) | {EXCLUSIVE_TYPE[d]}
        others = set().union(*(types[o] for o in DOMAINS if o != d))
        assert EXCLUSIVE_TYPE[d] not in others  # unseen when d is held out
    live, spoof = _centre_depth(cfg)
    assert spoof.std() > 1.5 * live.std()
    flat = dataclasses.replace(cfg, asymmetry=0.0)
    assert all(set(generate(flat, d, "train")[1]["attack"]) == {"live", "print"} for d in DOMAINS)


def test_camera_shift_knob_separates_the_domains_colour():
    def cast_spread(shift):
        ratios = []
        for d in DOMAINS:
            rgb = generate(SyntheticConfig(n_train=200, camera_shift=shift), d, "train")[0]["rgb"]
            ratios.append(rgb[:, 0].mean() / rgb[:, 2].mean())
        return np.std(ratios)

    assert cast_spread(1.0) > 4 * cast_spread(0.0)


@pytest.mark.parametrize("bad", [{"spurious": 2.0}, {"size": (2, 2)}])
def test_bad_config_is_refused_before_anything_is_written(tmp_path, bad):
    with pytest.raises(ValueError):
        write_synthetic(tmp_path / "x", dataclasses.replace(SMALL, **bad))
    assert not (tmp_path / "x").exists()
