"""Metrics as JSON, written atomically (``auggen.infra.files``) so a killed run leaves no stub."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from auggen.infra.files import atomic_write_bytes


def _plain(x):
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if hasattr(x, "tolist"):  # torch tensors
        return x.tolist()
    return x


def write_metrics(path: str | Path, metrics: dict) -> Path:
    """Write ``metrics`` (numpy / torch values converted) as indented JSON, atomically."""
    path = Path(path)
    atomic_write_bytes(
        path, (json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n").encode()
    )
    return path


def read_metrics(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)
