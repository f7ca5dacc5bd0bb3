"""`fptrace fleet`: the compare figures per host, kernel, cgroup, comm, date or CPU over every
recording under a directory (the agent's partitions, or any tree of recordings), in place."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from fptrace.commands.common import write_text

EPILOG = """\
examples:
  fptrace fleet /srv/fp --group-by cgroup                   which container saves most
  fptrace fleet /srv/fp --group-by kernel --where date=2026-12-0*   kernels, in the first week
  fptrace fleet /srv/fp --group-by host --where cgroup=/kubepods.slice/* -f json

Keys: host and date (the agent's partitions, else the manifest), kernel (release), cpu
(model name), cgroup and comm (per task), or any dotted manifest key for --where.  A
host/date condition skips other partitions' directories unread.  Rates are per traced
second of the recordings a group appears in.  The same layout reads in DuckDB and Spark
(docs/fleet.md).
"""


def add_parser(sub: Any) -> None:
    from fptrace.analysis.fleet_keys import GROUP_KEYS

    fp = sub.add_parser(
        "fleet",
        help="figures per host, kernel, cgroup, comm, date or CPU over many recordings",
        description="Read every recording under DIR in place (DuckDB over the Parquet files) "
        "and give the compare figures per group.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fp.add_argument("dir", type=Path, help="a directory of recordings (e.g. the agent's -o)")
    fp.add_argument(
        "--group-by", choices=GROUP_KEYS, default="host", help="one row per … (default host)"
    )
    fp.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="K=V",
        help="only rows whose K is V (a shell pattern); repeatable, all must hold",
    )
    fp.add_argument("-f", "--format", choices=("text", "json", "html"), default="text")
    fp.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")
    fp.add_argument("--calibration", type=Path, help="cost table for the CPU-time estimates")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.fleet import fleet_runs, fleet_table, parse_where
    from fptrace.reports import fleet as render

    where = parse_where(args.where)
    runs = fleet_runs(args.dir, where)
    table = fleet_table(runs, args.group_by, where, lambda m: choose_model(m, args.calibration))
    title = f"{len(runs)} recordings under {args.dir}, by {args.group_by}"
    if args.format == "text":
        out = Console(highlight=False, width=max(console.width, 100))
        if args.output is None:
            render.render_text(table, args.group_by, title, out)
            return 0
        text = render.text_string(table, args.group_by, title)
    elif args.format == "json":
        text = render.render_json(table, args.group_by, where, [str(r.path) for r in runs])
    else:
        text = render.render_html(table, args.group_by, title)
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_text(args.output, text)
    return 0
