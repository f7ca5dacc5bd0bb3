"""`fptrace agent`: always on — system-wide (or some cgroups), a complete recording per
rotation in Hive-style partitions, Prometheus metrics, bounded disk."""

from __future__ import annotations

import argparse
import re
import resource
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from fptrace.commands.common import int_in, positive
from fptrace.errors import UsageError

EPILOG = """\
examples:
  sudo fptrace agent -o /var/lib/fptrace --metrics 127.0.0.1:9477
  sudo fptrace agent -o /srv/fp --rotate 600 --retain 7d --retain 20G
  sudo fptrace agent -o /srv/fp --cgroup /kubepods.slice --metrics :9477

Layout: DIR/host=HOST/date=YYYY-MM-DD/YYYYMMDDTHHMMSSZ/ — one complete recording per
rotation, read in place by `fptrace fleet DIR`, DuckDB and Spark (docs/fleet.md).  The probes
stay attached across rotations: every count is in exactly one recording.  A full disk stops
writing (counted in fptrace_parts_dropped_total), never the tracing or the metrics.  Stops
on SIGTERM or SIGINT, finishing the current recording.  deploy/fptrace-agent.service is a
systemd unit.
"""

AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
ROTATE_S = (1.0, 7 * 86400.0)


@dataclass(frozen=True)
class Retention:
    max_age_s: float | None = None
    max_bytes: int | None = None


def retain_spec(text: str) -> tuple[str, float]:
    """``--retain``: an age (30m, 12h, 7d, 2w) or a total size (500M, 20G, 1TiB)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if m and unit in AGE_UNITS:
        return "age", float(m.group(1)) * AGE_UNITS[unit]
    size_unit = unit.removesuffix("ib").removesuffix("b")
    if m and size_unit in SIZE_UNITS and unit:
        return "bytes", float(m.group(1)) * SIZE_UNITS[size_unit]
    raise argparse.ArgumentTypeError(
        f"{text!r} is neither an age (30m, 12h, 7d, 2w) nor a size (500M, 20G, 1T)"
    )


def listen_address(text: str) -> tuple[str, int]:
    """``--metrics``: HOST:PORT, :PORT (all addresses) or PORT (127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host = "127.0.0.1"
    host = host.strip("[]") or "0.0.0.0"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r}: give HOST:PORT, e.g. 127.0.0.1:9477")
    return host, int(port)


def add_parser(sub: Any) -> None:
    a = sub.add_parser(
        "agent",
        help="always-on tracing: rotated recordings, Prometheus metrics (root)",
        description="Trace the whole system (or some cgroups) until SIGTERM/SIGINT, cutting "
        "the run into complete recordings every --rotate seconds without detaching the probes, "
        "optionally serving per-cgroup counters at /metrics.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.add_argument("-o", "--output", type=Path, required=True, help="the partitioned directory")
    a.add_argument(
        "--rotate",
        type=positive,
        default=3600.0,
        metavar="SECONDS",
        help=f"a new recording every SECONDS ({ROTATE_S[0]:g} to {ROTATE_S[1]:g}; default 3600)",
    )
    a.add_argument(
        "--interval",
        type=positive,
        default=1.0,
        help="drain the kernel maps every SECONDS (default 1): the metrics' resolution",
    )
    a.add_argument(
        "--metrics",
        type=listen_address,
        metavar="HOST:PORT",
        help="serve Prometheus/OpenMetrics at http://HOST:PORT/metrics",
    )
    a.add_argument(
        "--retain",
        type=retain_spec,
        action="append",
        default=[],
        metavar="AGE|SIZE",
        help="remove the oldest recordings past an age (7d) or past a total size (20G); "
        "repeatable (both apply); default: keep everything",
    )
    a.add_argument(
        "--cgroup",
        action="append",
        default=[],
        metavar="PATH",
        help="only the tasks in this cgroup (v2 path) and below; repeatable; default all",
    )
    a.add_argument(
        "--max-cgroups",
        type=int_in(1, 100000),
        default=100,
        help="cgroups with a metrics series of their own (the first seen); later ones are "
        'summed under cgroup="other" (default 100)',
    )
    a.add_argument(
        "--reason",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="split saves by why the task left the CPU (voluntary/involuntary) in the "
        "recordings, as record does (default on: one load per save, no measurable cost, "
        "docs/overhead.md)",
    )
    a.add_argument("-d", "--duration", type=positive, help="stop after SECONDS (for scripts)")
    a.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.analysis.metrics import MetricTotals
    from fptrace.collectors.options import RecordOptions
    from fptrace.collectors.record import record
    from fptrace.collectors.recorder import Drained
    from fptrace.collectors.rotation import Rotation
    from fptrace.recording.partitions import (
        expired,
        host_label,
        remove_segments,
        stored_segments,
    )
    from fptrace.recording.writer import pending
    from fptrace.reports.prometheus import AgentState, serve

    if not ROTATE_S[0] <= args.rotate <= ROTATE_S[1]:
        raise UsageError(
            f"--rotate {args.rotate:g} is out of range: use {ROTATE_S[0]:g} to {ROTATE_S[1]:g} s"
        )
    if args.rotate < args.interval:
        raise UsageError(f"--rotate {args.rotate:g} is shorter than --interval {args.interval:g}")
    keep = Retention(
        max_age_s=min((v for k, v in args.retain if k == "age"), default=None),
        max_bytes=min((int(v) for k, v in args.retain if k == "bytes"), default=None),
    )
    err = Console(stderr=True, highlight=False)

    def say(msg: str) -> None:
        if not args.quiet:
            err.print(msg, markup=False)

    state = AgentState(MetricTotals(max_cgroups=args.max_cgroups))
    root: Path = args.output

    def retain(current: Path | None) -> None:
        if keep.max_age_s is None and keep.max_bytes is None:
            return
        doomed = expired(
            stored_segments(root), datetime.now(UTC), keep.max_age_s, keep.max_bytes, current
        )
        if doomed:
            freed = remove_segments(doomed)
            say(f"retention: removed {len(doomed)} recordings ({freed:,} bytes)")

    def write_error(exc: Exception) -> None:
        with state.lock:
            first = state.parts_dropped == 0
            state.parts_dropped += 1
        if first:
            say(f"cannot write ({exc}): tracing and metrics go on, parts are dropped")
        retain(rotation.current)

    def rotated(path: Path) -> None:
        with state.lock:
            state.rotations += 1
        say(f"finished {path}")
        retain(rotation.current)

    rotation = Rotation(
        root=root,
        host=host_label(),
        every_s=args.rotate,
        on_write_error=write_error,
        on_rotate=rotated,
    )

    def drained(d: Drained) -> None:
        with state.lock:
            state.totals.add(d.counts, d.tasks, d.layout)
            state.drops = dict(d.drops or {})
            if not state.probes and rotation.opening is not None:
                m = rotation.opening
                kinds: dict[str, int] = {}
                for p in m.probes.attached:
                    kinds[p.kind] = kinds.get(p.kind, 0) + 1
                state.probes = kinds
                state.info = {
                    "version": m.fptrace_version or "",
                    "kernel": m.host.kernel.release or "",
                    "backend": m.backend or "",
                    "host": rotation.host,
                }

    opts = RecordOptions(
        system=not args.cgroup,
        cgroups=args.cgroup,
        duration=args.duration,
        interval=args.interval,
        arch_prctl=False,  # a syscall tracepoint would tax every syscall of the host
        reason=args.reason,
        backend="bcc",
        argv=["fptrace", *argv],
    )
    retain(None)
    # What a previous agent handed off and did not live to finish (killed, or a full disk).
    leftover = [s.path for s in stored_segments(root) if pending(s.path)]
    if leftover:
        rotation.finish_in_background(leftover)
        say(f"finishing {len(leftover)} recordings a previous run left unfinished")
    server = None
    if args.metrics is not None:
        host, port = args.metrics
        try:
            server = serve(state, host, port)
        except OSError as exc:
            raise UsageError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror}; choose another --metrics"
            ) from None
        say(f"metrics at http://{host}:{port}/metrics")
    try:
        result = record(opts, note=say, on_drain=drained, rotation=rotation)
    finally:
        if server is not None:
            server.shutdown()
        rotation.reap(wait=True)  # no finisher outlives the agent
    if rotation.finish_failures:
        say(f"{rotation.finish_failures} recordings could not be finished: their parts stay")
    say(f"finished {result.path}; {state.rotations + 1} recordings under {root}")
    if rotation.rotation_cpu_s:
        cpu = sorted(rotation.rotation_cpu_s)
        merge = resource.getrusage(resource.RUSAGE_CHILDREN)
        say(
            f"rotation CPU: median {cpu[len(cpu) // 2] * 1e3:.1f} ms, max {cpu[-1] * 1e3:.1f} ms"
            f" (the agent); merging in niced children: {merge.ru_utime + merge.ru_stime:.2f} s"
        )
    print(result.path, file=sys.stdout if args.quiet else sys.stderr)
    return 0
