"""Benchmark figures: one dict per figure, printed as a table or written as JSON.

A figure is ``{"name", "value", "unit", "target", "met"}`` (``target`` a readable condition such
as ``"<= 1.15"``, or ``"reported"`` for figures without one; ``met`` a bool), plus optional
context keys (``note``). Every script in benchmarks/ returns a list of them from ``measure``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path


def figure(name: str, value: float, unit: str, target: str = "reported", met: bool | None = None,
           **context) -> dict:
    """One figure; ``met`` defaults to True for a figure that is only reported."""
    return {"name": name, "value": float(value), "unit": unit, "target": target,
            "met": bool(met) if met is not None else target == "reported", **context}


def table(figures: list[dict]) -> str:
    """A fixed-width table: name, value with unit, target, met/MISSED."""
    w = max([len(f["name"]) for f in figures] + [4])
    lines = [f"{'name':<{w}}  {'value':>12}  {'unit':<10} {'target':<10} met"]
    for f in figures:
        v = f["value"]
        shown = "n/a" if v is None or not math.isfinite(v) else (f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}")
        lines.append(f"{f['name']:<{w}}  {shown:>12}  {f['unit']:<10} {f['target']:<10} "
                     f"{'yes' if f['met'] else 'MISSED'}")
    return "\n".join(lines)


def write_json(figures: list[dict], path) -> None:
    """The figures as a JSON list (non-finite values as null)."""
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in f.items()}
             for f in figures]
    Path(path).write_text(json.dumps(clean, indent=2) + "\n")
