"""Data I/O figures: synthetic generation, cache read of one epoch, JPEG decode vs cache read.

    python benchmarks/data_io.py [--quick] [--workers N] [--json FILE]

Prints, measured in this one run:
- the time to generate the default synthetic benchmark (all four domains) into a cache;
- the time to read one epoch of CPS_W's training parts from that cache, in shuffled batches of
  64 gathered into uint8 tensors (what the loader hands the step, which converts to float on
  its device: a quarter of the bytes to move);
- for a tree of real-format JPEG samples: images decoded per second per core by ``prepare``, and
  the ratio of decoding them to reading the same samples back from the cache it wrote.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

from rise_dist.config import SyntheticConfig
from rise_dist.data.cache import MODALITIES, open_cache
from rise_dist.data.prepare import prepare, usable_cores
from rise_dist.data.protocols import get_protocol
from rise_dist.data.synthetic import write_synthetic


def read_epoch(cache, parts, batch=64, seed=0) -> tuple[float, int]:
    """Seconds to read every sample of ``parts`` once in shuffled batches, and the count."""
    rng = np.random.default_rng(seed)
    t0, n = time.perf_counter(), 0
    for d, s in parts:
        part = cache.part(d, s)
        order = rng.permutation(len(part))
        for i in range(0, len(order), batch):
            idx = np.sort(order[i:i + batch])
            x = [torch.from_numpy(part.arrays[m][idx]) for m in MODALITIES]
            n += x[0].shape[0]
    return time.perf_counter() - t0, n


def jpeg_tree(root: Path, n: int, src=(240, 320)) -> Path:
    """n C-style samples (RGB, depth, IR JPEGs of size ``src``) and a C-train.txt naming them."""
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        rel = {m: f"v{i // 4:04d}/{m}/{i % 4:04d}.jpg" for m in MODALITIES}
        for m, r in rel.items():
            (root / r).parent.mkdir(parents=True, exist_ok=True)
            shape = (*src, 3) if m == "rgb" else src
            Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(root / r, quality=90)
        lines.append(f"{rel['rgb']} {rel['depth']} {rel['ir']} {i % 2}")
    lists = root / "lists"
    lists.mkdir()
    (lists / "C-train.txt").write_text("\r\n".join(lines))
    return lists


def measure(quick: bool = False, workers: int | None = None) -> list[dict]:
    workers = workers or usable_cores()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        write_synthetic(tmp / "syn", SyntheticConfig())
        gen = time.perf_counter() - t0
        cache = open_cache(tmp / "syn")
        epoch_read, n_epoch = read_epoch(cache, get_protocol("CPS_W").train_parts)
        print(f"synthetic generation (4 domains, {len(cache.index)} samples, "
              f"{cache.size[0]}x{cache.size[1]}): {gen:.2f} s")
        print(f"cache read, one epoch of CPS_W train ({n_epoch} samples): {epoch_read:.3f} s "
              f"({n_epoch / epoch_read:,.0f} samples/s)")

        n_jpeg = 256 if quick else 1024
        lists = jpeg_tree(tmp / "tree", n_jpeg)
        t0 = time.perf_counter()
        prepare(tmp / "tree", lists, tmp / "real", size=(224, 224), workers=workers, progress=False)
        decode = time.perf_counter() - t0
        read, n = read_epoch(open_cache(tmp / "real"), [("C", "train")])
        per_core = 3 * n_jpeg / decode / workers
        print(f"JPEG decode + resize to 224x224 ({n_jpeg} samples x 3 images, {workers} "
              f"workers): {decode:.2f} s, {per_core:,.0f} images/s per core")
        print(f"cache read of the same samples: {read:.3f} s; decode / cache read = "
              f"{decode / read:.1f}x")
    ratio = decode / read
    return [
        figure("synthetic_generation", gen, "s", note=f"{len(cache.index)} samples"),
        figure("cache_read_epoch_cps_w", n_epoch / epoch_read, "samples/s"),
        figure("decode_images_per_s_per_core", per_core, "img/s/core", note=f"{workers} workers"),
        figure("cache_read_vs_decode", ratio, "x", ">= 10", ratio >= 10),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer JPEG samples")
    ap.add_argument("--workers", type=int, default=usable_cores())
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    figures = measure(args.quick, args.workers)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
