"""``auggen <command> ...``: one entry point for the pipeline and the model tools.

``auggen pipeline`` is ``python -m auggen.pipeline``, ``auggen embed`` is
``python -m auggen embed``, ``auggen evaluate`` is ``python -m auggen evaluate``, ``auggen
export`` is ``python -m auggen.cli.export``; the arguments after the command go to it
unchanged.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "pipeline": ("auggen.cli.pipeline", "run the AugGen pipeline (stages joined by folders)"),
    "embed": ("auggen.cli.embed", "embeddings of an image folder / RecordIO / .bin into .npy"),
    "evaluate": ("auggen.cli.evaluate", "verification table on .bin sets for any loadable model"),
    "export": ("auggen.cli.export", "a face model to ONNX / TorchScript, checked"),
}


def usage() -> str:
    lines = ["usage: auggen {" + ",".join(COMMANDS) + "} ...", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "auggen <command> --help shows a command's options."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\nauggen: error: unknown command {name!r}; expected one of "
              f"{', '.join(COMMANDS)}", file=sys.stderr)  # fmt: skip
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    if name == "pipeline":
        return module.main(rest)
    return module.main(rest, prog=f"auggen {name}")


def entry() -> None:
    """The ``auggen`` console script: ``main``, then exit (under torchrun without the
    interpreter's teardown; see ``auggen.infra.runtime.exit_process``)."""
    from auggen.infra.runtime import exit_process  # here: `auggen --help` imports no torch

    exit_process(main())


if __name__ == "__main__":
    entry()
