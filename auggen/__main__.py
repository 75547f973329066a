"""``python -m auggen <command>``: the ``auggen`` console script (see :mod:`auggen.cli`)."""

from auggen.cli import entry

if __name__ == "__main__":
    entry()
