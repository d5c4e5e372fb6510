"""Decode the real benchmarks once into the cache (``data/cache.py``).

Every sample named by the list files is decoded and resized once, in parallel over cores
(a process pool over chunks of CHUNK samples), and written straight into the shard's
memory-mapped arrays, so memory holds only the chunks in flight, never the dataset.

Decoding conventions (all arrays uint8, channel-first):

- C/S/W: the RGB image -> (3, H, W); the depth and IR images -> grayscale (1, H, W). The RGB
  image must be RGB; depth/IR may be stored as L or as RGB (converted to luma).
- P: ``np.load(npz)["data"]``, shape (frames, 5, H0, W0), floats in [0, 1]; frame 0; channels
  0-2 -> rgb, 3 -> ir, 4 -> depth; ``round(x * 255)`` clipped to [0, 255].
- Then every plane is resized to ``size`` = (H, W) with Pillow's bilinear filter.

A shard (one per (domain, split)) is skipped on a re-run when its ``shard.json`` records the
same list file hash, dataset root and size, and the samples it recorded as missing are still
missing; otherwise it is rebuilt. A sample whose file is missing or does not decode is a
``Problem``: without ``allow_missing`` a shard with problems is not written at all; with it,
those samples are dropped and counted.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from rise_dist.data.cache import (
    LIVE,
    MODALITIES,
    ShardWriter,
    read_shard_info,
    shard_dir,
    write_index,
)
from rise_dist.data.lists import ListEntry, find_lists, list_stats, read_list
from rise_dist.provenance import code_version, environment

CHUNK = 64  # samples per task: large enough to amortise pickling, small enough to balance
NPZ_CHANNELS = {"rgb": slice(0, 3), "ir": slice(3, 4), "depth": slice(4, 5)}
IMAGE_MODES = {"rgb": ("RGB",), "depth": ("L", "RGB"), "ir": ("L", "RGB")}
TARGET_MODES = {"rgb": "RGB", "depth": "L", "ir": "L"}


class PrepareError(RuntimeError):
    """A problem with the inputs as a whole (dataset root, output directory)."""


class SampleError(Exception):
    """One sample that cannot be decoded: ``path`` (relative to the root) and why."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self):
        return type(self), (self.path, self.reason)


@dataclass(frozen=True)
class Problem:
    """A listed sample that is missing or corrupt: where it is listed and which file failed."""

    list_file: str
    line: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.list_file}:{self.line}: {self.path}: {self.reason}"


@dataclass
class ShardSummary:
    """Outcome for one (domain, split). Counts are of samples cached (or, when checking, that
    decode); ``missing`` counts samples dropped as missing or corrupt.

    ``status``: "built", "skipped" (cache already valid), "checked" (check mode) or
    "not written" (problems and missing samples not allowed).
    """

    domain: str
    split: str
    status: str
    live: int = 0
    spoof: int = 0
    videos: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return len(self.problems)

    def counts(self) -> dict[str, int]:
        return {"live": self.live, "spoof": self.spoof, "videos": self.videos,
                "missing": self.missing}


@dataclass
class Summary:
    """What ``prepare`` did, shard by shard, in DOMAINS x SPLITS order."""

    shards: list[ShardSummary]
    root: Path  # absolute dataset root
    check: bool
    allow_missing: bool

    @property
    def problems(self) -> list[Problem]:
        return [p for s in self.shards for p in s.problems]

    @property
    def failed(self) -> bool:
        """True when a listed file is missing or corrupt and that was not allowed."""
        return bool(self.problems) and not self.allow_missing

    def counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{domain: {split: {"live", "spoof", "videos", "missing"}}}`` for the lists present."""
        out: dict[str, dict[str, dict[str, int]]] = {}
        for s in self.shards:
            out.setdefault(s.domain, {})[s.split] = s.counts()
        return out


def usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup cpusets, unlike os.cpu_count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def decode_sample(root: str | Path, entry: ListEntry,
                  size: tuple[int, int]) -> dict[str, np.ndarray]:
    """``{"rgb": (3, H, W), "depth": (1, H, W), "ir": (1, H, W)}`` uint8 for one list entry.

    Raises SampleError naming the first file that is missing or does not decode.
    """
    root = Path(root)
    if entry.is_npz:
        return _decode_npz(root, entry.paths["npz"], size)
    return {m: _decode_image(root, entry.paths[m], m, size) for m in MODALITIES}


def prepare(
    root: str | Path,
    list_dir: str | Path,
    out: str | Path | None,
    size: tuple[int, int] = (224, 224),
    workers: int | None = None,
    check: bool = False,
    allow_missing: bool = False,
    progress: bool = True,
) -> Summary:
    """Decode every sample of the lists in ``list_dir`` into the cache ``out``.

    ``workers`` decoding processes (None: every core this process may run on; 1: decode in
    this process). With ``check`` nothing is written (``out`` may be None): every sample is
    decoded and the summary counts those that decode. Missing/corrupt samples are reported in
    the summary (``Summary.problems``), never raised; ``Summary.failed`` says whether that is
    an error. Raises PrepareError for a missing root, ListError for unusable lists.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise PrepareError(f"dataset root {root} does not exist or is not a directory")
    size = _check_size(size)
    list_dir = Path(list_dir).expanduser().resolve()
    lists = find_lists(list_dir)
    if not check:
        if out is None:
            raise PrepareError("an output directory is needed unless checking")
        out = Path(out).expanduser().resolve()
        if out.exists() and not out.is_dir():
            raise PrepareError(f"output {out} exists and is not a directory")
        out.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or usable_cores())

    plans = []  # (domain, split, list file, its sha256, entries, shard info to reuse or None)
    for (domain, split), path in lists.items():
        sha = _sha256(path)  # before reading, so a list edited meanwhile cannot pass as this one
        entries = read_list(path)
        info = None if check else _reusable(out, domain, split, sha, root, size, entries)
        plans.append((domain, split, path, sha, entries, info))

    total = sum(len(entries) for *_, entries, info in plans if info is None)
    shards = []
    with _Decoder(root, size, workers, keep=not check) as decoder, \
            tqdm(total=total, unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for domain, split, path, sha, entries, info in plans:
            if info is not None:
                shards.append(_skipped(domain, split, path, info))
                continue
            bar.set_description(f"{domain}/{split}")
            if check:
                shards.append(_check_shard(decoder, domain, split, path, entries, bar.update))
            else:
                shards.append(_build_shard(decoder, out, domain, split, path, sha, entries, root,
                                           size, allow_missing, bar.update))

    if not check and any(s.status in ("built", "skipped") for s in shards):
        write_index(out, {"kind": "real", "root": str(root), "lists": str(list_dir),
                          "code_version": code_version(), "environment": environment(),
                          "size": list(size)})
    return Summary(shards, root=root, check=check, allow_missing=allow_missing)


# --- skip-if-valid -----------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reusable(out: Path, domain: str, split: str, list_sha256: str, root: Path,
              size: tuple[int, int], entries: list[ListEntry]) -> dict | None:
    """The shard's recorded info if it was built from this list, root and size and every
    sample it recorded as missing still fails to decode; else None (rebuild)."""
    info = read_shard_info(out, domain, split)
    if info is None or info.get("kind") != "real":
        return None
    if (info.get("list_sha256") != list_sha256 or info.get("root") != str(root)
            or list(info.get("size", ())) != list(size)):
        return None
    by_line = {e.line: e for e in entries}
    for p in info.get("missing", []):
        entry = by_line.get(p["line"])
        if entry is None:
            return None
        try:
            decode_sample(root, entry, size)
        except SampleError:
            continue
        return None  # it decodes now: rebuild to include it
    return info


def _skipped(domain: str, split: str, list_file: Path, info: dict) -> ShardSummary:
    problems = [Problem(str(list_file), p["line"], p["path"], p["reason"])
                for p in info.get("missing", [])]
    return ShardSummary(domain, split, "skipped", info["live"], info["spoof"], info["videos"],
                        problems)


# --- building and checking shards ---------------------------------------------------------------


def _check_shard(decoder: _Decoder, domain: str, split: str, list_file: Path,
                 entries: list[ListEntry], advance: Callable[[int], object]) -> ShardSummary:
    bad: dict[int, Problem] = {}
    for pos, _arrays, error in decoder.run(entries, advance):
        if error is not None:
            bad[pos] = _problem(list_file, entries[pos], error)
    stats = list_stats(e for pos, e in enumerate(entries) if pos not in bad)
    problems = [bad[pos] for pos in sorted(bad)]  # chunks finish out of order; report in order
    return ShardSummary(domain, split, "checked", stats.live, stats.spoof, stats.videos, problems)


def _build_shard(decoder: _Decoder, out: Path, domain: str, split: str, list_file: Path,
                 list_sha256: str, entries: list[ListEntry], root: Path, size: tuple[int, int],
                 allow_missing: bool, advance: Callable[[int], object]) -> ShardSummary:
    writer = ShardWriter(out, domain, split, n=len(entries), size=size)
    try:
        bad: dict[int, Problem] = {}
        for pos, arrays, error in decoder.run(entries, advance):
            if error is None:
                for m in MODALITIES:
                    writer.arrays[m][pos] = arrays[m]
            else:
                bad[pos] = _problem(list_file, entries[pos], error)
        problems = [bad[pos] for pos in sorted(bad)]
        if problems and not allow_missing:
            writer.abort()
            # An older shard here was built from other inputs; left in place it would be indexed
            # as if it matched these lists.
            shutil.rmtree(shard_dir(out, domain, split), ignore_errors=True)
            with contextlib.suppress(OSError):  # the domain folder, if this left it empty
                shard_dir(out, domain, split).parent.rmdir()
            return ShardSummary(domain, split, "not written", problems=problems)
        keep = [pos for pos in range(len(entries)) if pos not in bad]
        if bad:
            writer = _compact(writer, out, domain, split, keep, size)
        kept = [entries[pos] for pos in keep]
        stats = list_stats(kept)
        index = pd.DataFrame({
            "label": [e.label for e in kept],
            "video": [e.video for e in kept],
            "source": [e.source for e in kept],
            "list_line": [e.line for e in kept],
            "attack": ["live" if e.label == LIVE else "" for e in kept],
        })
        info = {"kind": "real", "list_file": str(list_file), "list_sha256": list_sha256,
                "root": str(root), "live": stats.live, "spoof": stats.spoof,
                "videos": stats.videos,
                "missing": [{"line": p.line, "path": p.path, "reason": p.reason}
                            for p in problems]}
        writer.commit(index, info)
    except BaseException:
        writer.abort()
        raise
    return ShardSummary(domain, split, "built", stats.live, stats.spoof, stats.videos, problems)


def _compact(writer: ShardWriter, out: Path, domain: str, split: str, keep: Sequence[int],
             size: tuple[int, int]) -> ShardWriter:
    """A new writer holding only rows ``keep`` of ``writer`` (which is aborted). Copies through
    the memory maps in blocks, so dropping samples never loads a shard into memory."""
    compact = ShardWriter(out, domain, split, n=len(keep), size=size)
    try:
        keep = np.asarray(keep, dtype=np.int64)
        for start in range(0, len(keep), 1024):
            rows = keep[start:start + 1024]
            for m in MODALITIES:
                compact.arrays[m][start:start + len(rows)] = writer.arrays[m][rows]
    except BaseException:
        compact.abort()
        raise
    finally:
        writer.abort()
    return compact


def _problem(list_file: Path, entry: ListEntry, error: SampleError) -> Problem:
    return Problem(str(list_file), entry.line, error.path, error.reason)


# --- parallel decoding ---------------------------------------------------------------------------


class _Decoder:
    """Decodes entries in chunks on a process pool (inline with one worker), yielding
    ``(position, arrays or None, SampleError or None)`` as chunks complete. At most
    ``2 * workers`` chunks are in flight, which bounds memory whatever the dataset size."""

    def __init__(self, root: Path, size: tuple[int, int], workers: int, keep: bool):
        self.root, self.size, self.workers, self.keep = str(root), size, workers, keep
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> _Decoder:
        if self.workers > 1:
            self.pool = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def run(self, entries: list[ListEntry], advance: Callable[[int], object]
            ) -> Iterator[tuple[int, dict[str, np.ndarray] | None, SampleError | None]]:
        chunks = ((start, entries[start:start + CHUNK]) for start in range(0, len(entries), CHUNK))
        if self.pool is None:
            for start, chunk in chunks:
                yield from _decode_chunk(self.root, self.size, start, chunk, self.keep)
                advance(len(chunk))
            return
        pending: set[Future] = set()
        for start, chunk in chunks:
            pending.add(self.pool.submit(_decode_chunk, self.root, self.size, start, chunk,
                                         self.keep))
            if len(pending) >= 2 * self.workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from self._collect(done, advance)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from self._collect(done, advance)

    @staticmethod
    def _collect(done: set[Future], advance: Callable[[int], object]) -> Iterator:
        for future in done:
            results = future.result()
            yield from results
            advance(len(results))


def _decode_chunk(root: str, size: tuple[int, int], start: int, chunk: list[ListEntry],
                  keep: bool) -> list[tuple[int, dict[str, np.ndarray] | None, SampleError | None]]:
    """Worker task: decode ``chunk`` (positions ``start`` ...); arrays only when ``keep``."""
    results = []
    for offset, entry in enumerate(chunk):
        try:
            arrays = decode_sample(root, entry, size)
        except SampleError as e:
            results.append((start + offset, None, e))
        else:
            results.append((start + offset, arrays if keep else None, None))
    return results


# --- decoding one file ---------------------------------------------------------------------------


def _existing(root: Path, rel: str) -> Path:
    path = root / rel
    if not path.is_file():
        raise SampleError(rel, "missing")
    return path


def _resize(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H0, W0) or (H0, W0, 3) uint8 -> (C, H, W) uint8, Pillow bilinear."""
    img = Image.fromarray(plane)
    if img.size != (size[1], size[0]):
        img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
    a = np.asarray(img)
    return a.transpose(2, 0, 1) if a.ndim == 3 else a[None]


def _decode_image(root: Path, rel: str, modality: str, size: tuple[int, int]) -> np.ndarray:
    path = _existing(root, rel)
    # Any exception while decoding one untrusted file (Pillow raises OSError, SyntaxError,
    # struct.error, DecompressionBombError, ... depending on the format) means that file is
    # corrupt, not that the run should stop.
    try:
        with Image.open(path) as img:
            if img.mode not in IMAGE_MODES[modality]:
                raise SampleError(rel, f"image mode {img.mode}, expected "
                                  f"{' or '.join(IMAGE_MODES[modality])} for {modality}")
            img.load()  # decode fully now: a truncated file must fail here, not later
            plane = np.asarray(img.convert(TARGET_MODES[modality]))
    except SampleError:
        raise
    except Exception as e:  # see above
        raise SampleError(rel, f"corrupt: {type(e).__name__}: {e}") from None
    return _resize(plane, size)


def _decode_npz(root: Path, rel: str, size: tuple[int, int]) -> dict[str, np.ndarray]:
    path = _existing(root, rel)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "data" not in npz.files:
                raise SampleError(rel, f"no array 'data' (has {sorted(npz.files)})")
            data = npz["data"]
    except SampleError:
        raise
    except Exception as e:  # a corrupt archive can fail in many ways
        raise SampleError(rel, f"corrupt: {type(e).__name__}: {e}") from None
    if data.ndim != 4 or data.shape[0] < 1 or data.shape[1] != 5 or 0 in data.shape[2:]:
        raise SampleError(rel, f"data has shape {data.shape}, expected (frames, 5, H, W)")
    if not np.issubdtype(data.dtype, np.floating):
        raise SampleError(rel, f"data has dtype {data.dtype}, expected floats in [0, 1]")
    frame = data[0]
    # A little slack for float rounding in whatever wrote the files; clipping absorbs it.
    if not np.isfinite(frame).all() or frame.min() < -1e-3 or frame.max() > 1 + 1e-3:
        raise SampleError(rel, f"frame 0 has values in [{frame.min()}, {frame.max()}], "
                          "expected [0, 1]")
    u8 = np.clip(np.rint(frame * 255.0), 0, 255).astype(np.uint8)  # (5, H0, W0)
    out = {}
    for m, channels in NPZ_CHANNELS.items():
        planes = u8[channels]
        out[m] = _resize(np.ascontiguousarray(planes.transpose(1, 2, 0)) if len(planes) == 3
                         else planes[0], size)
    return out


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
        raise PrepareError(f"size must be (H, W) positive integers, got {size!r}")
    return int(size[0]), int(size[1])
