"""The results store: the one contract between the runs and the analysis.

A results directory holds ``results/<run_id>.parquet``, one file per run (one protocol, one
config, one seed), with one row per finished epoch. A run rewrites its own file atomically
(temporary file + rename) after every epoch, so concurrent runs never touch the same file and a
reader never sees half a file. ``load(DIR)`` reads them all into one DataFrame.

Columns (docs/results.md lists them all):

- identity: ``run_id``, ``trial_id`` (None outside a sweep), ``protocol``, ``method``, ``seed``,
  ``epoch`` (1-based), ``status`` (STATUSES) and ``status_reason``;
- every config field, nested ones flattened with a dot (``lambda_asyirm``, ``model.backbone``,
  ``asyirm.tau``, ``synthetic.spurious``);
- metrics: ``val_<m>`` on the sources' val split at its own EER threshold; ``test_<m>`` on the
  target's test split at its own EER threshold (the ``test_eer`` rule); ``test_<m>@val_threshold``
  at the sources' val EER threshold (the ``val_threshold`` rule); m in ``metrics.METRICS``;
- training losses of the epoch: ``loss/ce``, ``loss/asyirm``, ``loss/mmsd``, ``loss/total`` and
  sub-terms; ``epoch_seconds``;
- provenance: ``code_version``, ``environment`` (JSON), ``config`` (the full config as JSON).

This module imports neither torch nor Ray: the analysis package reads the store through it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from rise_dist.metrics import HTER, ORACLE, SOURCE_VAL, TEST_EER, VAL_THRESHOLD

STATUSES = ("running", "completed", "stopped_early", "failed", "diverged")
RESULTS_SUBDIR = "results"
SCORES_SUBDIR = "scores"
KEY = ("run_id", "protocol", "epoch")


def column(split: str, metric: str, rule: str = TEST_EER) -> str:
    """The column of ``metric`` on ``split`` ("val" or "test") under a threshold rule.

    >>> column("test", "hter"), column("test", "hter", "val_threshold"), column("val", "auc")
    ('test_hter', 'test_hter@val_threshold', 'val_auc')
    """
    if split == "val" or rule == TEST_EER:
        return f"{split}_{metric}"
    if rule == VAL_THRESHOLD:
        return f"{split}_{metric}@{VAL_THRESHOLD}"
    raise ValueError(f"unknown threshold rule {rule!r}")


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> {"a.b": value}; lists become tuples' JSON for Parquet-friendliness."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


def run_path(results_dir, run_id: str) -> Path:
    return Path(results_dir) / RESULTS_SUBDIR / f"{run_id}.parquet"


def write_run(results_dir, run_id: str, rows: list[dict]) -> Path:
    """Replace the run's file with ``rows`` (all its epochs so far), atomically."""
    path = run_path(results_dir, run_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_run(results_dir, run_id: str) -> pd.DataFrame | None:
    path = run_path(results_dir, run_id)
    return pd.read_parquet(path) if path.exists() else None


def write_scores(results_dir, run_id: str, scores: pd.DataFrame) -> Path:
    """Per-sample scores of a run's last epoch (ROC curves, feature plots), atomically."""
    path = Path(results_dir) / SCORES_SUBDIR / f"{run_id}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    scores.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def load(results_dir, columns: list[str] | None = None) -> pd.DataFrame:
    """Every row of every run under ``results_dir`` (searched recursively, so a sweep's
    directory of trials loads as one), one row per (run, protocol, epoch)."""
    root = Path(results_dir)
    if not root.exists():
        raise FileNotFoundError(f"results directory {root} does not exist")
    files = sorted(p for p in root.rglob(f"{RESULTS_SUBDIR}/*.parquet") if not p.name.startswith("."))
    if not files:
        return pd.DataFrame(columns=list(columns or KEY))
    schemas = []
    for f in files:
        try:
            schemas.append(pq.read_schema(f))
        except (OSError, ValueError) as e:
            raise ValueError(f"{f}: not a readable results file: {e}") from e
    # One dataset over every file, read by pyarrow's threads, columns pruned at the source. Files
    # from older code or other kinds of run may lack a column (it reads as null for their rows)
    # or hold it as null-typed (all NaN): the permissive union of their schemas covers both.
    try:
        schema = pa.unify_schemas(schemas, promote_options="permissive")
        wanted = [c for c in columns if c in schema.names] if columns else None
        table = ds.dataset(files, schema=schema, format="parquet").to_table(columns=wanted)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"{root}: results files that disagree on a column's type: {e}") from e
    df = table.to_pandas()
    if columns:
        df = df.reindex(columns=list(columns))
    if set(KEY) <= set(df.columns):
        df = df.drop_duplicates(subset=list(KEY), keep="last").reset_index(drop=True)
    return df


def select(df: pd.DataFrame, rule: str = SOURCE_VAL, threshold_rule: str = TEST_EER) -> pd.DataFrame:
    """One row per run: the epoch a selection rule picks.

    ``source_val``: lowest sources' val HTER (honest). ``oracle``: lowest target test HTER under
    ``threshold_rule`` (the lineage's practice; an upper bound). Ties go to the later epoch
    (more training at equal validation error). Runs with no finished epoch are absent.
    """
    if rule == SOURCE_VAL:
        key = column("val", HTER)
    elif rule == ORACLE:
        key = column("test", HTER, threshold_rule)
    else:
        raise ValueError(f"unknown selection rule {rule!r}")
    ok = df[np.isfinite(df[key].astype(float))]
    if ok.empty:
        return ok
    order = ok.sort_values(["run_id", key, "epoch"], ascending=[True, True, False])
    return order.groupby("run_id", sort=False).head(1).reset_index(drop=True)
