"""Training-step figures, both sides measured in this one run.

    python benchmarks/train_step.py [--quick] [--backbones cnn,resnet18] [--threads N] [--json FILE]
    python benchmarks/train_step.py --device cuda --backbones resnet18,vit_b16 [--side 224] [--batch 96]

- RiSe step vs ERM step (forward, all loss terms, backward, optimizer step) on the same batch
  and backbone, interleaved so both see the same machine; target: RiSe <= 1.25x ERM.
- Loader vs step: time to gather and convert one domain-balanced batch from the cache vs one
  ERM training step on it; target: the loader >= 5x faster than the step consumes.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it
from step import make_step, step_config

from rise_dist.config import SyntheticConfig
from rise_dist.data.cache import open_cache
from rise_dist.data.loaders import ProtocolData, to_float
from rise_dist.data.protocols import get_protocol
from rise_dist.data.synthetic import write_synthetic


def measure_device(device: str, backbones: str, side: int, batch: int, rounds: int) -> list[dict]:
    """The GPU plan's figures (docs/performance.md): samples/s and peak memory of the ERM and
    RiSe steps per backbone on ``device``, random images of ``side`` x ``side``, batch ``batch``."""
    dev = torch.device(device)
    x = {m: torch.rand(batch, c, side, side, device=dev) for m, c in (("rgb", 3), ("depth", 1), ("ir", 1))}
    labels, domains = (torch.arange(batch, device=dev) % 2), (torch.arange(batch, device=dev) % 3)
    figures = []
    for backbone in backbones.split(","):
        for m in ("erm", "rise"):
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            try:
                step = make_step(step_config(m, backbone), (side, side), dev)
            except ImportError as e:
                print(f"{backbone}: skipped ({str(e).splitlines()[0]})")
                break
            t = time_steps({m: step}, (x, labels, domains), rounds)[m]
            mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
            print(f"{device} {backbone} {m}: {1e3 * t:.1f} ms per step of {batch} at {side}x{side}, "
                  f"{batch / t:,.0f} samples/s, peak memory {mem:.1f} GiB")
            figures.append(figure(f"{device}_{backbone}_{m}_samples_per_s", batch / t, "samples/s",
                                  peak_gib=mem, side=side, batch=batch))
    return figures


def time_steps(steps: dict, batch, rounds: int) -> dict[str, float]:
    """Median seconds per step of each function, interleaved round by round."""
    x, labels, domains = batch
    for f in steps.values():  # warm-up (allocator, first-batch radius init)
        f(x, labels, domains)
    times = {k: [] for k in steps}
    for _ in range(rounds):
        for k, f in steps.items():
            t0 = time.perf_counter()
            f(x, labels, domains)
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def measure(quick: bool = False, backbones: str = "cnn,resnet18", threads: int | None = None) -> list[dict]:
    torch.set_num_threads(threads or torch.get_num_threads())
    rounds = 5 if quick else 20
    figures = []
    with tempfile.TemporaryDirectory() as tmp:
        write_synthetic(tmp, SyntheticConfig())
        cache = open_cache(tmp)
        data = ProtocolData.from_cache(cache, get_protocol("CPS_W"), 96, seed=0)
        raw = next(data.train.epoch(1))
        batch = (to_float(raw, torch.device("cpu")), raw["label"], raw["domain"])
        print(f"batch 96 x (rgb 3, depth 1, ir 1) x {cache.size[0]}x{cache.size[1]}, "
              f"{torch.get_num_threads()} threads, median of {rounds} interleaved steps")
        erm_step = None
        for backbone in backbones.split(","):
            try:
                steps = {m: make_step(step_config(m, backbone), cache.size) for m in ("erm", "rise")}
            except ImportError as e:
                print(f"{backbone}: skipped ({str(e).splitlines()[0]})")
                continue
            t = time_steps(steps, batch, rounds)
            ratio = t["rise"] / t["erm"]
            print(f"{backbone}: ERM step {1e3 * t['erm']:.1f} ms, RiSe step {1e3 * t['rise']:.1f} ms, "
                  f"RiSe / ERM = {ratio:.2f}x (target <= 1.25x: {'met' if ratio <= 1.25 else 'MISSED'})")
            figures.append(figure(f"rise_vs_erm_step_{backbone}", ratio, "x", "<= 1.25", ratio <= 1.25,
                                  erm_ms=1e3 * t["erm"], rise_ms=1e3 * t["rise"]))
            if backbone == "cnn":
                erm_step = t["erm"]
        if erm_step is not None:
            n, t0 = 0, time.perf_counter()
            for raw in data.train.epoch(2):
                to_float(raw, torch.device("cpu"))
                n += 1
            load = (time.perf_counter() - t0) / n
            ratio = erm_step / load
            print(f"loader: {1e3 * load:.2f} ms per batch vs cnn ERM step {1e3 * erm_step:.1f} ms: "
                  f"loader is {ratio:.0f}x faster than the step (target >= 5x: "
                  f"{'met' if ratio >= 5 else 'MISSED'})")
            figures.append(figure("loader_vs_step", ratio, "x", ">= 5", ratio >= 5))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--backbones", default="cnn,resnet18")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", help="e.g. cuda: only the step throughput and memory per backbone "
                    "and method on that device (bf16 autocast), on random images")
    ap.add_argument("--side", type=int, default=224, help="image side with --device")
    ap.add_argument("--batch", type=int, default=96, help="batch with --device")
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    if args.device:
        figures = measure_device(args.device, args.backbones, args.side, args.batch, 5 if args.quick else 20)
    else:
        figures = measure(args.quick, args.backbones, args.threads)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
