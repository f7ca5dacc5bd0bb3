"""`fptrace export`: a recording's events or counts for Perfetto, chrome://tracing, CSV and
JSON lines."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console


def add_parser(sub: Any) -> None:
    ep = sub.add_parser(
        "export",
        help="a recording's data for Perfetto, chrome://tracing, CSV or JSON lines",
        description="Export the events (record --events) or, without them, the counts: "
        "perfetto (protobuf trace for ui.perfetto.dev: a track per CPU and per task, "
        "save/restore instants, saves/s and bytes/s counters), chrome-json (Trace Event "
        "Format), csv and jsonl.",
    )
    ep.add_argument("recording", type=Path)
    ep.add_argument(
        "-f", "--format", choices=("perfetto", "chrome-json", "csv", "jsonl"), required=True
    )
    ep.add_argument("-o", "--output", type=Path, help="output file (default: stdout)")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.errors import OutputWriteError
    from fptrace.recording.loader import load_recording
    from fptrace.reports.export import WRITERS

    rec = load_recording(args.recording)
    if args.format == "perfetto":
        from fptrace.reports.perfetto import write_perfetto

        if args.output is None:
            write_perfetto(rec, sys.stdout.buffer)
            return 0
        try:
            with open(args.output, "wb") as fb:
                write_perfetto(rec, fb)
        except OSError as exc:
            raise OutputWriteError(args.output, exc) from exc
        print(f"{args.output} (perfetto)", file=sys.stderr)
        return 0
    write = WRITERS[args.format]
    if args.output is None:
        write(rec, sys.stdout)
        return 0
    try:
        with open(args.output, "w", newline="") as f:
            kind = write(rec, f)
    except OSError as exc:
        raise OutputWriteError(args.output, exc) from exc
    print(f"{args.output} ({kind})", file=sys.stderr)
    return 0
