"""The cache format: atomic shards, validity checks, clear errors on bad directories."""

import json

import numpy as np
import pandas as pd
import pytest

from rise_dist.data.cache import (
    CacheError,
    ShardWriter,
    open_cache,
    read_shard_info,
    shard_dir,
    write_index,
)


def _index(n, domain="C"):
    return pd.DataFrame({"label": np.arange(n) % 2, "video": [f"{domain}v{i // 2}" for i in range(n)],
                         "source": [f"s{i}" for i in range(n)], "list_line": np.arange(1, n + 1),
                         "attack": ["live" if i % 2 else "print" for i in range(n)]})


def _shard(root, domain, split, n=4, size=(6, 5), fill=7):
    w = ShardWriter(root, domain, split, n=n, size=size)
    for a in w.arrays.values():
        a[:] = fill
    w.commit(_index(n, domain), info={"kind": "test"})


def test_written_shards_read_back(tmp_path):
    _shard(tmp_path, "C", "train", fill=7)
    _shard(tmp_path, "W", "test", n=6, fill=9)
    index = write_index(tmp_path, {"kind": "test"})
    assert list(index.columns) == ["domain", "split", "row", "label", "video", "source",
                                   "list_line", "attack"]
    cache = open_cache(tmp_path)
    assert cache.size == (6, 5) and cache.domains == ("C", "W")
    part = cache.part("W", "test")
    assert len(part) == 6 and part.arrays["rgb"].shape == (6, 3, 6, 5)
    assert part.arrays["depth"].shape == (6, 1, 6, 5) and int(part.arrays["ir"][5, 0, 5, 4]) == 9
    assert isinstance(part.arrays["rgb"], np.memmap)
    assert list(part.index["row"]) == list(range(6))
    with pytest.raises(CacheError, match="no shard P/val"):
        cache.part("P", "val")


def test_abort_and_crash_leave_no_valid_shard(tmp_path):
    w = ShardWriter(tmp_path, "C", "train", n=4, size=(6, 5))
    w.abort()
    assert read_shard_info(tmp_path, "C", "train") is None
    ShardWriter(tmp_path, "C", "val", n=4, size=(6, 5))  # never committed: a crash mid-write
    assert read_shard_info(tmp_path, "C", "val") is None
    with pytest.raises(CacheError, match="no complete shard"):
        write_index(tmp_path, {})


def test_commit_replaces_an_existing_shard(tmp_path):
    _shard(tmp_path, "C", "train", n=4, fill=1)
    _shard(tmp_path, "C", "train", n=2, fill=2)
    info = read_shard_info(tmp_path, "C", "train")
    assert info["n"] == 2
    assert int(np.load(shard_dir(tmp_path, "C", "train") / "rgb.npy").max()) == 2


def test_read_shard_info_rejects_arrays_that_do_not_match(tmp_path):
    _shard(tmp_path, "C", "train")
    np.save(shard_dir(tmp_path, "C", "train") / "ir.npy", np.zeros((3, 1, 6, 5), np.uint8))
    assert read_shard_info(tmp_path, "C", "train") is None


def test_commit_checks_rows_and_columns(tmp_path):
    w = ShardWriter(tmp_path, "C", "train", n=4, size=(6, 5))
    with pytest.raises(ValueError, match="index has 3 rows, arrays 4"):
        w.commit(_index(3), info={})
    with pytest.raises(ValueError, match="lacks columns.*attack"):
        w.commit(_index(4).drop(columns="attack"), info={})
    with pytest.raises(ValueError, match="unknown shard X/train"):
        ShardWriter(tmp_path, "X", "train", n=1, size=(2, 2))


def test_mixed_sizes_are_refused(tmp_path):
    _shard(tmp_path, "C", "train", size=(6, 5))
    _shard(tmp_path, "P", "train", size=(8, 8))
    with pytest.raises(CacheError, match="different image sizes"):
        write_index(tmp_path, {})


def test_open_cache_errors_name_the_problem(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        open_cache(tmp_path / "nope")
    with pytest.raises(CacheError, match="meta.json is missing"):
        open_cache(tmp_path)
    _shard(tmp_path, "C", "train")
    write_index(tmp_path, {})
    meta = json.loads((tmp_path / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(CacheError, match="cache format 99"):
        open_cache(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    (tmp_path / "index.parquet").write_bytes(b"not parquet")
    with pytest.raises(CacheError, match="cannot read the cache index"):
        open_cache(tmp_path)
