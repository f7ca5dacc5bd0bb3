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


def _fleet_checks() -> list[Any]:
    """Optional: what per-container attribution and the agent's metrics need."""
    import importlib.util

    from fptrace.collectors.cgroups import cgroup2_root
    from fptrace.probes.requirements import Check

    root = cgroup2_root()
    metrics = importlib.util.find_spec("prometheus_client") is not None
    return [
        Check(
            "cgroup v2 (cgroup paths, --cgroup)",
            root is not None,
            False,
            f"mounted at {root}" if root else "no cgroup2 mount: tasks get no cgroup",
            "mount -t cgroup2 none /sys/fs/cgroup/unified (or boot with "
            "systemd.unified_cgroup_hierarchy=1)",
        ),
        Check(
            "prometheus-client (agent --metrics)",
            metrics,
            False,
            "importable" if metrics else "not installed",
            "pip install prometheus-client (make setup)",
        ),
    ]


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.probes.kernel import LiveKernel, find_tracefs, tracefs_mounts, tracefs_problem
    from fptrace.probes.requirements import run_checks
    from fptrace.reports.plain import print_table

    tracefs = find_tracefs(mount=os.geteuid() == 0)
    problem = tracefs_problem(tracefs, tracefs_mounts(), os.geteuid())
    checks = run_checks(LiveKernel(tracefs), problem)
    checks += _fleet_checks()
    # Three columns and the fixes below: a row per line in 100 columns (with the fix as a
    # fourth column each row wrapped over three or four lines).
    table = Table(title="fptrace doctor", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column("requirement", overflow="fold", max_width=44)
    table.add_column("found / reason", overflow="fold")
    fixes = []
    for c in checks:
        mark = "ok" if c.ok else ("MISSING" if c.required else "skip")
        style = "green" if c.ok else ("bold red" if c.required else "yellow")
        table.add_row(Text(mark, style=style), Text(c.name), Text(c.detail))
        if not c.ok and c.fix:
            fixes.append((c.required, c.name, c.fix))
    print_table(console, table)
    if fixes:
        console.print("To fix:")
        for required, name, fix in fixes:
            console.print(Text(f"  {name}{'' if required else ' (optional)'}: {fix}"))
    bad = sum(required for required, _, _ in fixes) + sum(
        1 for c in checks if not c.ok and c.required and not c.fix
    )
    console.print(
        "fptrace record can run here." if bad == 0 else f"{bad} required item(s) missing."
    )
    return 0 if bad == 0 else 1
