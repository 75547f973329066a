"""Entry points: the ``auggen`` command (``main``: pipeline | embed | evaluate | export),
``python -m auggen.pipeline`` (``pipeline``), ``embed`` and ``evaluate``. Nothing below
imports them."""

from auggen.cli.main import entry, main

__all__ = ["entry", "main"]
