"""What the command modules share: argument types, writing an output file, the REMAINDER
helper.  Nothing here does a stage's work."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from fptrace.errors import OutputWriteError


def after_dashes(rest: list[str]) -> list[str]:
    """A REMAINDER argument without the ``--`` that separates it from our options."""
    return rest[1:] if rest[:1] == ["--"] else list(rest)


def pid_list(text: str) -> list[int]:
    """``-p 123,456``."""
    try:
        pids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a PID list: {text!r} (use -p 123,456)") from None
    if not pids:
        raise argparse.ArgumentTypeError("empty PID list")
    return pids


def positive(text: str) -> float:
    """A number of seconds greater than zero."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


def print_summary(path: Path, console: Console, calibration: Path | None = None) -> None:
    """The text report of a recording just written (``record``, ``bench --record``)."""
    # Imported here: pandas and the analysis come after the recording, never before the
    # probes attach (a lab guest under emulation spent 14 s on them).
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.report import build
    from fptrace.recording.loader import load_recording
    from fptrace.reports.terminal import WIDTH, render_report

    rec = load_recording(path)
    render_report(
        build(rec, choose_model(rec.manifest, calibration)),
        Console(highlight=False, width=min(console.width, WIDTH)),
    )


def write_text(out: Path, text: str) -> None:
    """Write a report file and print its path; a failure is one line, not a traceback."""
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputWriteError(out, exc) from exc
    print(out)
