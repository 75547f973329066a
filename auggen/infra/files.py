"""Files the project writes and reads back: atomic writes, and formats that cannot run code.

Everything a run folder holds is JSON, CSV, images, or safetensors (tensors plus a JSON
header). ``torch.load`` is only ever called with ``weights_only=True`` (a restricted
unpickler), through :func:`load_torch_weights`, so a file planted in a run folder can make a
read fail but never execute anything. Every read error names the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, load_file, save, save_file

META_KEY = "auggen"  # the safetensors header entry that holds a bundle's JSON-able values


class UnsafeOrCorruptFile(ValueError):
    """A file that is not what the project wrote (wrong format, corrupt, or a planted pickle)."""


# What loading a user's file can raise, each with a message naming the file (the entry
# points turn them into one-line errors).
LOAD_ERRORS = (FileNotFoundError, ValueError, UnsafeOrCorruptFile, OSError)


@contextlib.contextmanager
def atomic_path(path):
    """The one atomic-write helper: yields a temp path beside ``path`` to write; when the block
    succeeds the file is flushed to disk and renamed over ``path``, when it fails (or is
    killed) the temp file goes (``remove_temp_files`` sweeps what a ``kill -9`` leaves).
    Readers see the old file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to a temp file beside ``path`` and rename it over ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_save_tensors(path, tensors: dict, metadata: dict | None = None) -> None:
    """A safetensors file of ``tensors`` (moved to the CPU, contiguous), atomically."""

    cpu = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(cpu, tmp, metadata)


def atomic_write_json(path, obj) -> None:
    """``obj`` as indented JSON with sorted keys, written atomically."""
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True).encode())


def read_json(path):
    path = Path(path)
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UnsafeOrCorruptFile(f"{path}: not valid JSON ({e})") from e


def save_bundle(obj: dict, path) -> None:
    """A dict of tensors and JSON-able values as one safetensors file (atomic).

    Tensors go into the safetensors body, everything else into its JSON header, so reading
    it back needs no unpickler.
    """

    tensors, meta = {}, {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            tensors[k] = v.detach().cpu().contiguous().clone()
        else:
            meta[k] = v
    header = {META_KEY: json.dumps(meta)}
    atomic_write_bytes(path, save(tensors, metadata=header))


def load_bundle(path) -> dict:
    """What :func:`save_bundle` wrote; a file of any other format raises, naming it."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    raw = path.read_bytes()
    try:
        tensors = load(raw)
        header = _safetensors_header(raw)
        meta = json.loads(header.get("__metadata__", {}).get(META_KEY, "{}"))
    except (SafetensorError, ValueError, OSError) as e:
        raise UnsafeOrCorruptFile(
            f"{path}: not a safetensors file written by auggen ({_first_line(e)}); "
            "it was not loaded (pickles are never read)"
        ) from e
    return {**meta, **tensors}


def load_safetensors(path, device="cpu") -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; any other content raises, naming the file."""

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, ValueError, OSError) as e:
        raise UnsafeOrCorruptFile(
            f"{path}: not a readable safetensors file ({_first_line(e)}); nothing in it was run"
        ) from e


def _safetensors_header(raw: bytes) -> dict:
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n])


def load_torch_weights(path, map_location="cpu"):
    """``torch.load`` with the restricted unpickler: tensors and plain containers only."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise UnsafeOrCorruptFile(
            f"{path}: refused or unreadable torch file ({_first_line(e)}); only tensors and "
            "plain containers are loaded (weights_only=True), nothing in it was run"
        ) from e


def remove_temp_files(folder) -> list[Path]:
    """Delete ``*.tmp`` leftovers of interrupted atomic writes under ``folder``."""
    removed = []
    for p in Path(folder).rglob("*.tmp"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
