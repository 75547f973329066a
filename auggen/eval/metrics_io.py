"""Metrics as JSON, written atomically (temp file + os.replace) so a killed run leaves no stub."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(_plain(metrics), f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_metrics(path: str | Path) -> dict:
    with open(path) as f:
        return json.load(f)
