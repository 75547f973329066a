"""``python -m auggen.pipeline``: run AugGen end to end (see ``--help``)."""

from auggen.cli.pipeline import main
from auggen.infra.runtime import exit_process

if __name__ == "__main__":
    exit_process(main())  # under torchrun: without the interpreter's teardown (see there)
