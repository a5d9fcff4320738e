"""The ``engraft`` command line: a thin layer over library functions.

Each subcommand lives in a module with ``HELP``, ``add_arguments(parser)`` and
``main(args) -> int``; :data:`COMMANDS` maps names to modules, imported only
when needed so ``engraft --help`` stays quick. A user's mistake (a bad config,
a missing file) is one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from engraft._version import __version__
from engraft.errors import RunFailed, UserError, one_line

#: subcommand -> module implementing it
COMMANDS = {
    "run": "engraft.commands.run",
    "validate": "engraft.commands.validate",
    "plot": "engraft.commands.plot",
    "animate": "engraft.commands.animate",
    "view": "engraft.commands.view",
    "sweep": "engraft.commands.sweep",
    "collect": "engraft.commands.collect",
    "bench": "engraft.commands.bench",
    "cohort": "engraft.commands.cohort",
    "sensitivity": "engraft.commands.sensitivity",
    "verify": "engraft.commands.verify",
}


class UsageError(UserError):
    """A command was used wrongly (bad path, incompatible options): exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engraft",
        description="Simulate autologous HSC gene therapy for hemophilia, cell by cell.",
    )
    parser.add_argument("--version", action="version", version=f"engraft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (also used by the tests)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in COMMANDS:
            module = importlib.import_module(COMMANDS[argv[0]])
            if getattr(module, "RAW_ARGS", False):  # the command parses its own options
                rest = argv[1:]
                args = argparse.Namespace(command=argv[0], _module=module,
                                          args=rest[1:] if rest[:1] == ["--"] else rest)
                return _dispatch(args)
        args = build_parser().parse_args(argv)
        return _dispatch(args)
    except BrokenPipeError:
        return _stdout_closed()


def _dispatch(args: argparse.Namespace) -> int:
    try:
        status = int(args._module.main(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return status
    except UserError as err:
        _error(args.command, err)
        return 2
    except RunFailed as err:
        _error(args.command, err)
        return 1
    except KeyboardInterrupt:
        print(f"engraft {args.command}: interrupted", file=sys.stderr)
        return 130


def _error(command: str, err: BaseException) -> None:
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        pass
    print(one_line(f"engraft {command}: error: {err}"), file=sys.stderr)


def _stdout_closed() -> int:
    """The reader of stdout went away (``engraft run ... | head -1``): stop quietly, as Unix tools do.

    Standard output is pointed at /dev/null so the interpreter's final flush
    raises nothing; the exit status is that of a process ended by SIGPIPE.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - stdout is not a file descriptor
        pass
    return 141


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
