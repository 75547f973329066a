"""``python -m auggen.pipeline``: run AugGen end to end (see ``--help``)."""

import sys

from auggen.pipeline.cli import main

if __name__ == "__main__":
    sys.exit(main())
