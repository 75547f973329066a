"""How stages hand small results to each other: safetensors bundles and CSV, never pickles.

A bundle is one ``.safetensors`` file: tensors in its body, the other (JSON-able) values in
its header (see ``auggen.infra.files``). Datasets travel as indexes (``auggen.data.index``), never
as pixels. A planted or corrupt file fails to load with an error that names it.
"""

from __future__ import annotations

import csv

from auggen.infra.files import atomic_path, load_bundle, save_bundle

FORMAT = "indexed-v2"  # part of every stage's fingerprint: a format change reruns stages

save_atomic = save_bundle
load = load_bundle


def write_csv(path, rows: list[dict]) -> None:
    keys = list(rows[0]) if rows else []
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
