"""`fptrace top`: a live view of the busiest tasks, processes or cgroups by FPU state saves.

The same probes, drains and numbers as `record` (it *is* a recording, written to a temporary
directory that goes away at the end unless ``-o`` keeps it); every drain redraws a table of
the interval's rates.  Keys: ``s`` changes the sort (saves, bytes, CPU), ``g`` the grouping
(task, process, cgroup), ``q`` quits.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace.commands.common import int_in, pid_list, positive
from fptrace.errors import UsageError

EPILOG = """\
examples:
  sudo fptrace top                      the whole system, by task, 1 s refresh
  sudo fptrace top -p 1234 --by process a process and its descendants, threads summed
  sudo fptrace top --by cgroup -o run   by cgroup, and keep the recording in run/

keys: s sort (saves/s, bytes/s, est. CPU), g group (task, process, cgroup), q quit
"""


def add_parser(sub: Any) -> None:
    tp = sub.add_parser(
        "top",
        help="live view of the busiest tasks, processes or cgroups by FPU saves (root)",
        description="Attach the same probes as `record` and show, every interval, the "
        "busiest tasks, processes or cgroups by saves per second, bytes per second, the "
        "widest vector level live at a save and the estimated save/restore CPU time.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tp.add_argument(
        "-p", "--pid", type=pid_list, default=[], help="only PID[,PID…] and their descendants"
    )
    tp.add_argument(
        "--cgroup",
        action="append",
        default=[],
        metavar="PATH",
        help="only tasks in this cgroup (v2 path, e.g. /system.slice/nginx.service) or below; "
        "repeatable",
    )
    tp.add_argument(
        "--by",
        choices=("task", "process", "cgroup"),
        default="task",
        help="one row per task (thread), process (threads summed) or cgroup (default task)",
    )
    tp.add_argument(
        "--sort",
        choices=("saves", "bytes", "cpu"),
        default="saves",
        help="busiest by saves/s, bytes/s or estimated CPU time (default saves)",
    )
    tp.add_argument(
        "--interval", type=positive, default=1.0, help="refresh every SECONDS (default 1)"
    )
    tp.add_argument(
        "-n", "--iterations", type=int_in(1, 1 << 30), help="stop after N refreshes (scripts)"
    )
    tp.add_argument("--rows", type=int_in(1, 1000), default=20, help="rows shown (default 20)")
    tp.add_argument("-o", "--output", type=Path, help="keep the recording in DIR as well")


def _cycle(values: tuple[str, ...], now: str) -> str:
    return values[(values.index(now) + 1) % len(values)]


class View:
    """What is shown: the grouping, the sort, the last interval's rows."""

    def __init__(self, by: str, sort: str, rows: int, cgroups: list[str]) -> None:
        self.by, self.sort, self.rows, self.cgroups = by, sort, rows, cgroups
        self.last: Any = None
        self.drains = 0
        self.lock = threading.Lock()

    def table(self) -> Table:
        from fptrace.analysis.cost import DEFAULT
        from fptrace.analysis.live import live_rows
        from fptrace.reports.html import fmt_bytes, fmt_ns
        from fptrace.reports.plain import text

        with self.lock:
            drained, by, sort = self.last, self.by, self.sort
        title = f"fptrace top — by {by}, sorted by {sort} — s: sort, g: group, q: quit"
        t = Table(title=title, title_justify="left", expand=False)
        first = {"task": "pid", "process": "tgid", "cgroup": "cgroup"}[by]
        for name in (first, "name", "saves/s", "bytes/s", "widest live", "est. CPU/s", "tasks"):
            t.add_column(name, justify="left" if name in ("name", "cgroup") else "right")
        if drained is None:
            return t
        rows = live_rows(
            drained.counts,
            drained.tasks,
            drained.span_s,
            drained.layout,
            DEFAULT,
            by,
            sort,
            self.cgroups,
        )
        for r in rows[: self.rows]:
            t.add_row(
                text(r.key),
                text(r.name) if by != "cgroup" else Text(""),
                f"{r.saves_per_s:,.0f}",
                f"{fmt_bytes(r.bytes_per_s)}/s",
                r.widest or "–",
                fmt_ns(r.cpu_ns_per_s),
                f"{r.threads:,}",
            )
        return t


@contextlib.contextmanager
def _keys(view: View, live: Any) -> Iterator[None]:
    """Single keys from a terminal (cbreak mode, restored at the end)."""
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                key = os.read(fd, 1)
            except OSError:
                return
            if key in (b"q", b"Q", b""):
                os.kill(os.getpid(), signal.SIGINT)  # stops the recording cleanly
                return
            with view.lock:
                if key == b"s":
                    view.sort = _cycle(("saves", "bytes", "cpu"), view.sort)
                elif key == b"g":
                    view.by = _cycle(("task", "process", "cgroup"), view.by)
            live.update(view.table(), refresh=True)

    tty.setcbreak(fd)
    reader = threading.Thread(target=read, name="fptrace-keys", daemon=True)
    reader.start()
    try:
        yield
    finally:
        stop.set()
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    import shutil
    import tempfile

    from rich.live import Live

    from fptrace.collectors.options import RecordOptions
    from fptrace.collectors.record import record

    scratch = None
    output = args.output
    if output is None:  # a recording nobody asked to keep: in a directory that goes away
        scratch = Path(tempfile.mkdtemp(prefix="fptrace-top-"))
        output = scratch / "run"
    opts = RecordOptions(
        output=output,
        system=not args.pid,
        pids=args.pid,
        interval=args.interval,
        argv=["fptrace", *argv],
    )
    if args.cgroup and args.pid:
        raise UsageError("give either -p or --cgroup, not both")
    view = View(args.by, args.sort, args.rows, args.cgroup)
    # On a terminal, a full screen redrawn at every drain; piped, the last table once.
    live = Live(view.table(), console=console, screen=True, auto_refresh=False)

    def drained(d: Any) -> None:
        with view.lock:
            view.last = d
            view.drains += 1
            done = args.iterations is not None and view.drains >= args.iterations
        if console.is_terminal:
            live.update(view.table(), refresh=True)
        if done:
            os.kill(os.getpid(), signal.SIGINT)

    try:
        if console.is_terminal:
            with live, _keys(view, live):
                record(opts, on_drain=drained)
        else:
            record(opts, on_drain=drained)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if not console.is_terminal:
        from fptrace.reports.plain import print_table

        print_table(console, view.table())
    return 0
