"""Loaders: domain-balanced, a pure function of (seed, epoch), DDP shards partition a batch."""

import numpy as np
import pytest
import torch

from rise_dist.config import SyntheticConfig
from rise_dist.data.cache import open_cache
from rise_dist.data.loaders import ProtocolData, TrainBatches, to_float
from rise_dist.data.protocols import get_protocol
from rise_dist.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    path = tmp_path_factory.mktemp("syn")
    write_synthetic(path, SyntheticConfig(n_train=40, n_val=16, n_test=24, size=(8, 8)))
    return open_cache(path)


def _data(cache, protocol="CPS_W", batch=12, seed=0, rank=0, world=1):
    return ProtocolData.from_cache(cache, get_protocol(protocol), batch, seed, rank, world)


def test_batches_are_domain_balanced_and_cover_every_sample(cache):
    data = _data(cache)
    seen = {d: set() for d in range(3)}
    batches = list(data.train.epoch(1))
    assert len(batches) == len(data.train) == 10  # ceil(3 * 40 / 12)
    for b in batches:
        assert b["rgb"].dtype == torch.uint8 and b["rgb"].shape == (12, 3, 8, 8)
        assert torch.bincount(b["domain"], minlength=3).tolist() == [4, 4, 4]
    for per_domain in data.train.indices(1):
        for d, idx in enumerate(per_domain):
            seen[d].update(idx.tolist())
    assert all(seen[d] == set(range(40)) for d in range(3))


def test_labels_and_pixels_come_from_the_right_rows(cache):
    data = _data(cache)
    b = next(data.train.epoch(3))
    idx = data.train.indices(3)[0][0]  # the first domain's rows of the first batch
    part = data.train.parts[0]
    assert np.array_equal(b["rgb"][:4].numpy(), part.arrays["rgb"][idx])
    assert b["label"][:4].tolist() == part.index["label"].to_numpy()[idx].astype(float).tolist()


def test_order_is_a_function_of_seed_and_epoch(cache):
    a, b, c = _data(cache, seed=1), _data(cache, seed=1), _data(cache, seed=2)
    flat = lambda d, e: np.concatenate([np.concatenate(x) for x in d.train.indices(e)])  # noqa: E731
    assert np.array_equal(flat(a, 1), flat(b, 1))
    assert not np.array_equal(flat(a, 1), flat(a, 2))
    assert not np.array_equal(flat(a, 1), flat(c, 1))


def test_ranks_partition_the_global_batch(cache):
    full = next(_data(cache).train.epoch(1))
    shards = [next(_data(cache, rank=r, world=2).train.epoch(1)) for r in range(2)]
    assert sum(len(s["label"]) for s in shards) == len(full["label"])
    got = sorted(map(bytes, (x.numpy().tobytes() for s in shards for x in s["rgb"])))
    assert got == sorted(map(bytes, (x.numpy().tobytes() for x in full["rgb"])))


def test_batch_too_small_for_domains_and_workers():
    with pytest.raises(ValueError, match="smaller than domains x workers"):
        TrainBatches(parts=[object()] * 3, batch_size=4, seed=0, world_size=2)


def test_eval_sets_read_every_row_once_in_table_order(cache):
    data = _data(cache, protocol="CW_PS")
    rows = np.concatenate([b["row"].numpy() for b in data.test.batches(7)])
    assert sorted(rows) == list(range(len(data.test))) == list(range(48))
    assert list(data.test.table["domain"].unique()) == ["P", "S"]
    labels = np.concatenate([b["label"].numpy() for b in data.test.batches(7)])
    assert np.array_equal(labels, data.test.table["label"].to_numpy())


def test_missing_modality_protocol_zeroes_it_at_test_only(cache):
    data = _data(cache, protocol="CPS_W-no_depth_ir")
    assert data.test.absent == ("depth", "ir") and data.val.absent == ()
    x = to_float(next(data.test.batches(8)), torch.device("cpu"), data.test.absent)
    assert x["depth"].abs().sum() == 0 and x["ir"].abs().sum() == 0 and x["rgb"].sum() > 0
    assert x["rgb"].dtype == torch.float32 and float(x["rgb"].max()) <= 1.0
