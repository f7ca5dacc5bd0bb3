"""`fptrace report`: a recording as an offline HTML page, terminal text or JSON."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from fptrace.commands.common import output_file, write_text


def add_parser(sub: Any) -> None:
    rp = sub.add_parser(
        "report",
        help="analyse a recording: HTML (offline), terminal text, or JSON",
        description="Turn a recording into an overhead analysis: which tasks save and restore "
        "FPU state, how many bytes move, which components are live, and the estimated CPU "
        "time. Needs no root.",
        epilog="examples:\n  fptrace report run1                  writes run1/report.html\n"
        "  fptrace report run1 -f text          terminal summary\n"
        "  fptrace report run1 -f json -o r.json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.add_argument("recording", type=Path, help="a directory written by `fptrace record`")
    rp.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (default: RUN/report.html; text/json: stdout)",
    )
    rp.add_argument("-f", "--format", choices=("html", "text", "json"), default="html")
    rp.add_argument(
        "--calibration",
        type=Path,
        help="cost table from `fptrace bench calibrate` (default: the recording's, else a "
        "documented estimate)",
    )


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.report import build
    from fptrace.recording.loader import load_recording
    from fptrace.recording.schema import REPORT

    rec = load_recording(args.recording)
    data = build(rec, choose_model(rec.manifest, args.calibration))
    if args.format == "text":
        from fptrace.reports.terminal import WIDTH, render_report

        if args.output is None:
            render_report(data, Console(highlight=False, width=min(console.width, WIDTH)))
            return 0
        with output_file(args.output) as f:
            render_report(data, Console(file=f, width=WIDTH, highlight=False))
        return 0
    if args.format == "json":
        from fptrace.reports.json_report import render_json

        text = render_json(data)
    else:
        from fptrace.reports.html import render_html

        text = render_html(data)
    if args.output is None and args.format == "json":
        sys.stdout.write(text)
        return 0
    write_text(args.output or args.recording / REPORT, text)
    return 0
