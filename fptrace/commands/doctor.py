"""`fptrace doctor`: what `record` needs on this machine, found or missing, and the fix."""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text


def add_parser(sub: Any) -> None:
    sub.add_parser(
        "doctor",
        help="check what `fptrace record` needs on this machine",
        description="List every requirement (privilege, tracefs, BTF, BCC, headers, "
        "tracepoints, struct fields) with ok/missing, the reason and the fix.",
    )


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.probes.kernel import LiveKernel, find_tracefs, tracefs_mounts, tracefs_problem
    from fptrace.probes.requirements import run_checks

    tracefs = find_tracefs(mount=os.geteuid() == 0)
    problem = tracefs_problem(tracefs, tracefs_mounts(), os.geteuid())
    checks = run_checks(LiveKernel(tracefs), problem)
    table = Table(title="fptrace doctor", title_justify="left", expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("requirement", ratio=3, overflow="fold")
    table.add_column("found / reason", ratio=3, overflow="fold")
    table.add_column("fix", ratio=2, overflow="fold")
    bad = 0
    for c in checks:
        mark = "ok" if c.ok else ("MISSING" if c.required else "skip")
        if not c.ok and c.required:
            bad += 1
        style = "green" if c.ok else ("bold red" if c.required else "yellow")
        table.add_row(Text(mark, style=style), c.name, Text(c.detail), "" if c.ok else c.fix)
    console.print(table)
    console.print(
        "fptrace record can run here." if bad == 0 else f"{bad} required item(s) missing."
    )
    return 0 if bad == 0 else 1
