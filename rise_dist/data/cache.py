"""The decoded-sample cache: the one format every code path after decoding reads.

Real benchmarks (``data/prepare.py``) and the synthetic benchmark (``data/synthetic.py``) both
write it, so loaders, protocols and training never know where the pixels came from.

Layout of a cache directory::

    CACHE/
      meta.json                 what wrote it (synthetic config or real roots), format version
      index.parquet             one row per sample of every shard (columns: INDEX_COLUMNS)
      C/train/                  one shard per (domain, split)
        rgb.npy                 uint8 (n, 3, H, W)   memory-mapped on read
        depth.npy               uint8 (n, 1, H, W)
        ir.npy                  uint8 (n, 1, H, W)
        index.parquet           the shard's rows, ``row`` = position in the arrays
        shard.json              what the shard was built from (for skip-if-valid) and counts

Arrays are channel-first so a slice is a ready (B, C, H, W) batch after ``/ 255``.
Shards are written into a temporary directory and renamed into place, so a crash never
leaves a half-written shard that looks valid.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

FORMAT_VERSION = 1
DOMAINS = ("C", "P", "S", "W")
SPLITS = ("train", "val", "test")
MODALITIES = ("rgb", "depth", "ir")
CHANNELS = {"rgb": 3, "depth": 1, "ir": 1}
LIVE, SPOOF = 1, 0

# Columns of every index. ``source`` is the sample's path relative to the dataset root (the RGB
# path for C/S/W, the .npz for P; a generated name for synthetic data); ``list_line`` is its
# 1-based line in the list file (0 for synthetic); ``attack`` is the spoof type where known
# ("live" for lives, "" when the dataset does not say).
INDEX_COLUMNS = ("domain", "split", "row", "label", "video", "source", "list_line", "attack")
SHARD_COLUMNS = INDEX_COLUMNS[2:]


class CacheError(RuntimeError):
    """A cache directory that is missing, incomplete or not of this format."""


def shard_dir(cache_dir: str | os.PathLike, domain: str, split: str) -> Path:
    return Path(cache_dir) / domain / split


def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


class ShardWriter:
    """Fill one shard's arrays in place, then ``commit`` it atomically.

    >>> w = ShardWriter(cache, "C", "train", n=1000, size=(32, 32))
    >>> w.arrays["rgb"][i] = rgb_uint8_3hw          # memory-mapped, nothing held in RAM
    >>> w.commit(index_df, info={...})              # or w.abort()

    ``index_df`` needs the columns of SHARD_COLUMNS except ``row`` (added here, 0..n-1).
    """

    def __init__(self, cache_dir, domain: str, split: str, n: int, size: tuple[int, int]):
        if domain not in DOMAINS or split not in SPLITS:
            raise ValueError(f"unknown shard {domain}/{split}; domains {DOMAINS}, splits {SPLITS}")
        self.final = shard_dir(cache_dir, domain, split)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.final.parent / f".{split}.{uuid.uuid4().hex}.tmp"
        self.tmp.mkdir()
        self.domain, self.split, self.n, self.size = domain, split, n, tuple(size)
        h, w = self.size
        self.arrays = {
            m: np.lib.format.open_memmap(
                self.tmp / f"{m}.npy", mode="w+", dtype=np.uint8, shape=(n, CHANNELS[m], h, w)
            )
            for m in MODALITIES
        }

    def commit(self, index: pd.DataFrame, info: dict) -> Path:
        if len(index) != self.n:
            raise ValueError(f"{self.domain}/{self.split}: index has {len(index)} rows, arrays {self.n}")
        for a in self.arrays.values():
            a.flush()
        self.arrays = {}
        df = index.reset_index(drop=True).copy()
        df["row"] = np.arange(self.n, dtype=np.int64)
        missing = [c for c in SHARD_COLUMNS if c not in df.columns]
        if missing:
            raise ValueError(f"{self.domain}/{self.split}: index lacks columns {missing}")
        df = df[list(SHARD_COLUMNS)].astype(
            {"label": "int8", "list_line": "int64", "video": str, "source": str, "attack": str}
        )
        df.to_parquet(self.tmp / "index.parquet", index=False)
        info = {**info, "format_version": FORMAT_VERSION, "domain": self.domain, "split": self.split,
                "n": self.n, "size": list(self.size)}
        _write_json_atomic(self.tmp / "shard.json", info)
        if self.final.exists():
            trash = self.final.parent / f".{self.split}.{uuid.uuid4().hex}.old"
            os.replace(self.final, trash)
            os.replace(self.tmp, self.final)
            shutil.rmtree(trash)
        else:
            os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        self.arrays = {}
        shutil.rmtree(self.tmp, ignore_errors=True)


def read_shard_info(cache_dir, domain: str, split: str) -> dict | None:
    """The shard's ``shard.json`` if the shard is complete and its arrays match it, else None."""
    d = shard_dir(cache_dir, domain, split)
    try:
        info = json.loads((d / "shard.json").read_text())
        if info.get("format_version") != FORMAT_VERSION:
            return None
        h, w = info["size"]
        for m in MODALITIES:
            a = np.load(d / f"{m}.npy", mmap_mode="r")
            if a.shape != (info["n"], CHANNELS[m], h, w) or a.dtype != np.uint8:
                return None
        if len(pd.read_parquet(d / "index.parquet", columns=["row"])) != info["n"]:
            return None
    except (OSError, ValueError, KeyError, json.JSONDecodeError):
        return None
    return info


def write_index(cache_dir, meta: dict) -> pd.DataFrame:
    """Gather every valid shard into the top-level ``index.parquet`` and write ``meta.json``."""
    cache_dir = Path(cache_dir)
    frames, sizes = [], set()
    for domain in DOMAINS:
        for split in SPLITS:
            info = read_shard_info(cache_dir, domain, split)
            if info is None:
                continue
            sizes.add(tuple(info["size"]))
            df = pd.read_parquet(shard_dir(cache_dir, domain, split) / "index.parquet")
            df.insert(0, "split", split)
            df.insert(0, "domain", domain)
            frames.append(df)
    if not frames:
        raise CacheError(f"{cache_dir}: no complete shard to index")
    if len(sizes) > 1:
        raise CacheError(f"{cache_dir}: shards have different image sizes {sorted(sizes)}")
    index = pd.concat(frames, ignore_index=True)[list(INDEX_COLUMNS)]
    tmp = cache_dir / f".index.{uuid.uuid4().hex}.tmp"
    index.to_parquet(tmp, index=False)
    os.replace(tmp, cache_dir / "index.parquet")
    _write_json_atomic(cache_dir / "meta.json",
                       {**meta, "format_version": FORMAT_VERSION, "size": list(sizes.pop())})
    return index


@dataclass
class Part:
    """One (domain, split) of a cache: its index rows and memory-mapped (n, C, H, W) arrays."""

    domain: str
    split: str
    index: pd.DataFrame
    arrays: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.index)


@dataclass
class Cache:
    """A cache opened for reading. ``index`` has one row per sample (INDEX_COLUMNS)."""

    path: Path
    meta: dict
    index: pd.DataFrame
    _parts: dict = field(default_factory=dict, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.meta["size"])

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(d for d in DOMAINS if d in set(self.index["domain"]))

    def part(self, domain: str, split: str) -> Part:
        key = (domain, split)
        if key not in self._parts:
            d = shard_dir(self.path, domain, split)
            if not (d / "shard.json").exists():
                have = sorted(set(zip(self.index["domain"], self.index["split"], strict=True)))
                raise CacheError(f"{self.path}: no shard {domain}/{split}; it has {have}")
            rows = self.index[(self.index["domain"] == domain) & (self.index["split"] == split)]
            arrays = {m: np.load(d / f"{m}.npy", mmap_mode="r") for m in MODALITIES}
            self._parts[key] = Part(domain, split, rows.reset_index(drop=True), arrays)
        return self._parts[key]


def open_cache(path) -> Cache:
    """Open a cache written by ``prepare`` or ``synthetic``; a clear error if it is not one."""
    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise CacheError(f"cache directory {path} does not exist; build it with "
                         "experiments/prepare_data.py")
    try:
        meta = json.loads((path / "meta.json").read_text())
        index = pd.read_parquet(path / "index.parquet")
    except FileNotFoundError as e:
        raise CacheError(f"{path} is not a complete cache: {Path(e.filename).name} is missing; "
                         "re-run experiments/prepare_data.py") from e
    except (ValueError, OSError) as e:
        raise CacheError(f"{path}: cannot read the cache index: {e}") from e
    if meta.get("format_version") != FORMAT_VERSION:
        raise CacheError(f"{path}: cache format {meta.get('format_version')}, this code reads "
                         f"{FORMAT_VERSION}; rebuild it")
    return Cache(path, meta, index)
