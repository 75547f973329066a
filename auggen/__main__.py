"""``python -m auggen <command>``: the ``auggen`` console script (see :mod:`auggen.cli`)."""

import sys

from auggen.cli import main

if __name__ == "__main__":
    sys.exit(main())
