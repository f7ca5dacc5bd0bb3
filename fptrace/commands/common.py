"""What the command modules share: argument types, writing an output file, the REMAINDER
helper.  Nothing here does a stage's work."""

from __future__ import annotations

import argparse
import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from rich.console import Console


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


def int_in(low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argument type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: use {low} to {high}{unit}")
        return value

    return parse


def memory_size(text: str) -> str:
    """qemu's -m: a number of MiB, or with a unit (512M, 2G)."""
    if not re.fullmatch(r"[1-9][0-9]{0,6}[MG]?", text):
        raise argparse.ArgumentTypeError(f"not a memory size: {text!r} (e.g. 512M, 2G)")
    return text


def _number(text: str, ok: Callable[[float], bool], rule: str) -> float:
    """A finite number that passes ``ok`` (NaN passes no comparison)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not ok(value) or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be {rule}: {text}")
    return value


def not_negative(text: str) -> float:
    """A number of zero or more."""
    return _number(text, lambda v: v >= 0, "zero or more")


def positive(text: str) -> float:
    """A number (of seconds) greater than zero."""
    return _number(text, lambda v: v > 0, "positive")


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


@contextlib.contextmanager
def output_file(out: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file to write ``out`` through: it appears whole when the block ends without an
    error, and is not there at all otherwise (a full disk used to leave a truncated report
    or export behind); the same writer as a recording's files (recording/outdir.py).  A
    failure is one line, not a traceback."""
    from fptrace.recording.outdir import OutputDir

    with OutputDir.existing(out.parent) as d, d.written_whole(out.name, text=not binary) as f:
        yield f


def write_text(out: Path, text: str) -> None:
    """Write a report file whole and print its path."""
    with output_file(out) as f:
        f.write(text)
    print(out)
