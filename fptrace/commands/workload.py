"""`fptrace workload`: build (once) and exec one of the package's C workloads."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from rich.console import Console

from fptrace.commands.common import after_dashes
from fptrace.workloads.build import WORKLOADS


def add_parser(sub: Any) -> None:
    wp = sub.add_parser(
        "workload",
        help="run one of fptrace's C workloads (pingpong, fpbench), built on first use",
        description="Build (once, with gcc, cached) and exec one of the package's C workloads, "
        "so a command line can name them on any machine, a lab guest included. "
        "pingpong: two processes on one CPU exchange --rounds messages over pipes with a "
        "chosen xstate live (--mode none|init|sse|avx|avx512|amx).",
        epilog="example:\n  sudo fptrace record -- fptrace workload pingpong --mode avx "
        "--rounds 5000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wp.add_argument("name", choices=WORKLOADS, help="workload")
    wp.add_argument("--path", action="store_true", help="print the binary's path, do not run")
    wp.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    """Exec the workload: it keeps its own name as comm and its own exit code."""
    from fptrace.workloads.build import workload_binary

    binary = workload_binary(args.name)
    if args.path:
        print(binary)
        return 0
    argv = after_dashes(args.args)
    sys.stdout.flush()
    os.execv(binary, [str(binary), *argv])
    return 0  # not reached
