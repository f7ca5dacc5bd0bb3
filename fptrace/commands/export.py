"""`fptrace export`: a recording's events or counts for Perfetto, chrome://tracing, CSV and
JSON lines."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from fptrace.commands.common import output_file


def add_parser(sub: Any) -> None:
    ep = sub.add_parser(
        "export",
        help="a recording's data for Perfetto, chrome://tracing, CSV or JSON lines",
        description="Export the events (record --events) or, without them, the counts: "
        "perfetto (protobuf trace for ui.perfetto.dev: a track per CPU and per task, "
        "save/restore instants, saves/s and bytes/s counters), chrome-json (Trace Event "
        "Format), csv and jsonl; with record --stacks, folded (flamegraph.pl, speedscope) "
        "and pprof (go tool pprof, speedscope) stack samples.",
    )
    ep.add_argument("recording", type=Path)
    ep.add_argument(
        "-f",
        "--format",
        choices=("perfetto", "chrome-json", "csv", "jsonl", "folded", "pprof"),
        required=True,
    )
    ep.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.recording.loader import Recording, load_recording
    from fptrace.reports.export import WRITERS, write_pprof_file
    from fptrace.reports.perfetto import write_perfetto

    rec = load_recording(args.recording)
    binary_writers: dict[str, Callable[[Recording, Any], str]] = {
        "perfetto": write_perfetto,
        "pprof": write_pprof_file,
    }
    binary = args.format in binary_writers
    write: Callable[[Recording, Any], str] = (
        binary_writers[args.format] if binary else WRITERS[args.format]
    )
    if args.output is None:
        write(rec, sys.stdout.buffer if binary else sys.stdout)
        return 0
    with output_file(args.output, binary=binary) as f:
        kind = write(rec, f)
    print(f"{args.output} ({kind})", file=sys.stderr)
    return 0
