"""Command line: the parser of every command, and the one place that prints errors or exits.

Each command lives in its own module under fptrace/commands/ (options, ``--help`` and the
calls into the stages); this module only builds the parser from them and runs one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from types import ModuleType

from rich.console import Console

from fptrace import __version__
from fptrace.commands import COMMANDS
from fptrace.errors import FptraceError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _command(name: str) -> ModuleType:
    return importlib.import_module(f"fptrace.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fptrace",
        description="Trace what saving and restoring FPU/vector state (x87, SSE, AVX, AVX-512, "
        "AMX) costs: per task and per state buffer (VSO).",
    )
    p.add_argument("--version", action="version", version=f"fptrace {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        _command(name).add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    console = Console(highlight=False)
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        code: int = _command(args.command).run(args, console, argv)
        return code
    except FptraceError as exc:
        if debug:
            raise
        print(f"fptrace: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fptrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fptrace export … | head`: the reader is gone, quietly stop
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: one line for users, the traceback with --debug
        if debug:
            raise
        print(
            f"fptrace: internal error: {exc.__class__.__name__}: {exc} "
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
