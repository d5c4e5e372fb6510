"""Peak memory (max RSS) of a training process, per backbone, each in a fresh process.

    python benchmarks/memory.py [--quick] [--python PY] [--json FILE]

A child process builds the RiSe model, the objective (AsyIRM + MMSD) and AdamW for a backbone,
runs training steps on a batch of random images of the given size, and reports its peak
resident set size (``ru_maxrss``) and that of a process that only imported torch. Cases: the CPU
default (``cnn`` on the 32x32 synthetic benchmark, batch 96) and ResNet-18 (224x224, batch 32,
as on the real benchmarks). ``--python`` runs the children with another interpreter, e.g. a
venv that has torchvision (which the pinned CPU torch here lacks); a case whose backbone cannot
be built is reported as not measured, with the reason.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from report import figure, write_json  # benchmarks/ is on sys.path: scripts run from it

CASES = {"cnn": (32, 96), "resnet18": (224, 32)}  # backbone: (image side, batch)
REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, resource, sys
import torch
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, "benchmarks")
from step import make_step, step_config
backbone, side, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
torch.set_num_threads(1)
step = make_step(step_config("rise", backbone), (side, side))
x = {"rgb": torch.rand(batch, 3, side, side), "depth": torch.rand(batch, 1, side, side),
     "ir": torch.rand(batch, 1, side, side)}
labels, domains = torch.arange(batch) % 2, torch.arange(batch) % 3
for _ in range(steps):
    step(x, labels, domains)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_mib": peak / 1024, "torch_only_mib": base / 1024}))
"""


def run_case(python: str, backbone: str, side: int, batch: int, steps: int) -> dict:
    p = subprocess.run([python, "-c", CHILD, backbone, str(side), str(batch), str(steps)],
                       capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def measure(quick: bool = False, python: str = sys.executable) -> list[dict]:
    steps = 2 if quick else 5
    figures = []
    for backbone, (side, batch) in CASES.items():
        r = run_case(python, backbone, side, batch, steps)
        name = f"peak_rss_train_{backbone}_{side}px_batch{batch}"
        if "error" in r:
            print(f"{backbone}: not measured ({r['error']})")
            figures.append(figure(name, math.nan, "MiB", note=f"not measured: {r['error']}"))
            continue
        print(f"{backbone} {side}x{side}, batch {batch}, RiSe, {steps} steps: peak RSS "
              f"{r['peak_mib']:,.0f} MiB (a process that only imported torch: {r['torch_only_mib']:,.0f} MiB)")
        figures.append(figure(name, r["peak_mib"], "MiB", torch_only_mib=r["torch_only_mib"]))
    return figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the child processes")
    ap.add_argument("--json", help="write the figures as a JSON list")
    args = ap.parse_args()
    figures = measure(args.quick, args.python)
    if args.json:
        write_json(figures, args.json)


if __name__ == "__main__":
    main()
