"""Numbers papers report on the real benchmark (CASIA-CeFA, PADISI-Face, CASIA-SURF, WMCA), kept
as data in ``published.csv`` with where each one comes from.

Columns: ``method``, ``protocol`` (this project's names: ``CPS_W`` is the paper's CPS -> W),
``metric`` (``rise_dist.metrics`` names), ``value`` (percent, as printed in the source),
``source`` (short, shown in the table row), ``reference`` (the full citation and address).
Only numbers read in the source itself are kept; a value that could not be checked is left out,
never filled in. They are the papers' numbers, not ours: different models, training and data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
COLUMNS = ("method", "protocol", "metric", "value", "source", "reference")


@dataclass
class PublishedRow:
    method: str
    source: str
    references: list[str]
    values: dict[str, float]  # protocol -> percent


def load(path=PUBLISHED_CSV) -> pd.DataFrame:
    df = pd.read_csv(path)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
    return df


def rows(metric: str, protocols: list[str], path=PUBLISHED_CSV) -> list[PublishedRow]:
    """One row per (method, source) with a value for ``metric`` on any of ``protocols``, in the
    file's order."""
    df = load(path)
    df = df[(df["metric"] == metric) & df["protocol"].isin(protocols)]
    out = []
    for (method, source), g in df.groupby(["method", "source"], sort=False):
        out.append(PublishedRow(method, source, list(dict.fromkeys(g["reference"])),
                                dict(zip(g["protocol"], g["value"].astype(float), strict=True))))
    return out
