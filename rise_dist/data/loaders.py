"""Batches for one protocol, read from the cache: domain-balanced training, sequential evaluation.

Batches are dicts of uint8 tensors (``rgb`` (B, 3, H, W), ``depth``/``ir`` (B, 1, H, W)) plus
``label`` (B,) float (1 = live), ``domain`` (B,) long (index into the protocol's sources, or
targets for test parts) and ``row`` (B,) long (row in the protocol's evaluation table). The
step converts images to float on its own device: uint8 moves a quarter of the bytes.

Training order is a pure function of (seed, epoch): every epoch's batches can be recomputed
after a resume with nothing but the epoch number, and every DDP rank computes the same global
batch and keeps its own slice of it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from rise_dist.data.cache import MODALITIES, Cache, Part
from rise_dist.data.protocols import Protocol


def _gather(part: Part, idx: np.ndarray, domain: int) -> dict[str, torch.Tensor]:
    """Rows ``idx`` of ``part``: uint8 images, float labels, the domain id repeated."""
    order = np.argsort(idx, kind="stable")  # sorted reads are sequential in the memmap
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    batch = {m: torch.from_numpy(np.ascontiguousarray(part.arrays[m][idx[order]][inv]))
             for m in MODALITIES}
    batch["label"] = torch.from_numpy(part.index["label"].to_numpy()[idx]).float()
    batch["domain"] = torch.full((len(idx),), domain, dtype=torch.long)
    return batch


@dataclass
class TrainBatches:
    """Domain-balanced batches over the protocol's source train parts.

    Each global batch holds ``batch_size // k`` samples of each of the k source domains (the
    remainder goes to the first domains), drawn without replacement from a per-domain shuffle
    that is redrawn when it runs out. An epoch has ``ceil(total / batch_size)`` batches, so every
    sample is seen about once per epoch on average whatever the domain sizes.
    """

    parts: list[Part]
    batch_size: int
    seed: int
    rank: int = 0
    world_size: int = 1

    def __post_init__(self):
        if self.batch_size < len(self.parts) * self.world_size:
            raise ValueError(f"batch_size {self.batch_size} is smaller than domains x workers "
                             f"({len(self.parts)} x {self.world_size})")
        for p in self.parts:
            if len(p) == 0:
                raise ValueError(f"source part {p.domain}/{p.split} is empty")

    def __len__(self) -> int:
        return -(-sum(len(p) for p in self.parts) // self.batch_size)

    def indices(self, epoch: int) -> list[list[np.ndarray]]:
        """For every batch of ``epoch``: per domain, the row indices of the whole global batch."""
        rng = np.random.default_rng([self.seed, epoch])
        k = len(self.parts)
        share = [self.batch_size // k + (i < self.batch_size % k) for i in range(k)]
        streams = []
        for p, s in zip(self.parts, share, strict=True):
            need = s * len(self)
            reps = -(-need // len(p))
            streams.append(np.concatenate([rng.permutation(len(p)) for _ in range(reps)])[:need])
        return [[streams[d][b * share[d]:(b + 1) * share[d]] for d in range(k)]
                for b in range(len(self))]

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        for per_domain in self.indices(epoch):
            chunks = []
            for d, (part, idx) in enumerate(zip(self.parts, per_domain, strict=True)):
                mine = idx[self.rank::self.world_size]  # this rank's shard of the global batch
                chunks.append(_gather(part, mine, d))
            yield {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}


@dataclass
class EvalSet:
    """The concatenated val (or test) parts of a protocol, read in order.

    ``table`` has one row per sample (domain, split, row, label, video, source, attack) in the
    order scores come out of ``batches``.
    """

    parts: list[Part]
    absent: tuple[str, ...] = ()

    @property
    def table(self) -> pd.DataFrame:
        return pd.concat([p.index for p in self.parts], ignore_index=True)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts)

    def batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[dict]:
        offset = 0
        for d, part in enumerate(self.parts):
            for start in range(0, len(part), batch_size * world_size):
                idx = np.arange(start, min(start + batch_size * world_size, len(part)))
                idx = idx[rank::world_size]
                if len(idx):
                    batch = _gather(part, idx, d)
                    batch["row"] = torch.from_numpy(idx + offset)
                    yield batch
            offset += len(part)


@dataclass
class ProtocolData:
    """Everything a run reads: train batches from the sources, val and test sets."""

    protocol: Protocol
    train: TrainBatches
    val: EvalSet
    test: EvalSet
    image_size: tuple[int, int]

    @classmethod
    def from_cache(cls, cache: Cache, protocol: Protocol, batch_size: int, seed: int,
                   rank: int = 0, world_size: int = 1) -> ProtocolData:
        parts = {key: cache.part(*key) for key in
                 protocol.train_parts + protocol.val_parts + protocol.test_parts}
        return cls(
            protocol=protocol,
            train=TrainBatches([parts[k] for k in protocol.train_parts], batch_size, seed,
                               rank, world_size),
            val=EvalSet([parts[k] for k in protocol.val_parts]),
            test=EvalSet([parts[k] for k in protocol.test_parts], protocol.missing_at_test),
            image_size=cache.size,
        )


def to_float(batch: dict[str, torch.Tensor], device: torch.device,
             absent: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """uint8 images -> float in [0, 1] on ``device``; absent modalities become zeros."""
    out = {}
    for m in MODALITIES:
        x = batch[m].to(device, non_blocking=True).float().div_(255)
        out[m] = torch.zeros_like(x) if m in absent else x
    return out
