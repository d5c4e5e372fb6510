"""Per-epoch checkpoints: written atomically, read with torch's safe (weights-only) loading."""

from __future__ import annotations

import os
import pickle
import uuid
import zipfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read (corrupt, truncated, or not one of ours)."""


def save(path, state: dict) -> Path:
    """Write ``state`` (tensors, state dicts and plain Python values only) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path, map_location="cpu") -> dict:
    """Read a checkpoint with ``weights_only=True``: no code in a checkpoint ever runs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile,
            pickle.UnpicklingError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or not a rise-dist checkpoint: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not isinstance(state, dict) or "epoch" not in state or "model" not in state:
        raise CheckpointError(f"checkpoint {path} is not a rise-dist checkpoint (no epoch/model)")
    return state
