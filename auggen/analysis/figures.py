"""matplotlib helpers for the report and the analyses (Agg backend, PNG, atomic writes);
image grids without matplotlib are ``auggen.data.montage``."""

from __future__ import annotations

from auggen.infra.files import atomic_path


def save_figure(fig, path, dpi: int = 110) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def pyplot():
    import matplotlib  # optional heavy dependency: only figures need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
