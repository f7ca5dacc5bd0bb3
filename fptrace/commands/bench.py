"""`fptrace bench`: the FPU-state-aware microbenchmarks, the cost calibration, and with
`--record` the tracer checked against them."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from fptrace.commands.common import int_in
from fptrace.errors import UsageError


def add_parser(sub: Any) -> None:
    bp = sub.add_parser(
        "bench",
        help="FPU-state-aware microbenchmarks and XSAVE cost calibration",
        description="Measure what context switches, signals, forks and execs cost as a function "
        "of the live xstate (init, SSE, AVX, AVX-512, AMX), and calibrate the cost model of "
        "`fptrace report`. Each measurement is its own process; levels are interleaved; "
        "results are medians with 95% confidence intervals, '~' where a difference is not "
        "significant.",
        epilog="examples:\n  fptrace bench --quick                 everything, fast\n"
        "  fptrace bench calibrate -o cal        just the XSAVE/XRSTOR cost table\n"
        "  fptrace report cal -f text            see it again; `fptrace report RUN "
        "--calibration cal/calibration.json`\n"
        "  sudo fptrace bench ctx-pipe --record  also trace it and check the tracer\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    bp.add_argument("names", nargs="*", metavar="NAME", help="benchmarks (default: all; --list)")
    bp.add_argument(
        "-o", "--output", type=Path, help="result directory (default: fptrace-bench-DATE)"
    )
    bp.add_argument("-f", "--force", action="store_true", help="replace an existing result")
    bp.add_argument("--quick", action="store_true", help="fewer iterations and repetitions")
    bp.add_argument(
        "--reps", type=int_in(2, 1000), help="repetitions per level (default 10, --quick 5)"
    )
    bp.add_argument(
        "--states",
        type=lambda t: [x for x in t.split(",") if x],
        help="levels to run, e.g. sse,avx512 (default: all this CPU has)",
    )
    bp.add_argument(
        "--record",
        action="store_true",
        help="run under `fptrace record` (root) and check traced saves against the benchmark",
    )
    bp.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bp.add_argument("-q", "--quiet", action="store_true", help="no progress or table")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    import time
    from datetime import UTC, datetime

    from fptrace.analysis import bench as analysis
    from fptrace.collectors import bench
    from fptrace.collectors.host import collect_host
    from fptrace.recording.loader import load_recording
    from fptrace.recording.schema import CALIBRATION
    from fptrace.recording.writer import RecordingWriter
    from fptrace.reports.terminal import render_bench

    if args.list:
        for b in bench.BENCHMARKS.values():
            console.print(Text(f"{b.name:18} {b.op}"))
        return 0
    benches, states = bench.resolve(args.names, args.states)
    reps = args.reps or (5 if args.quick else 10)  # at least 2: intervals need repetitions
    out = args.output or Path(datetime.now().strftime("fptrace-bench-%Y%m%d-%H%M%S"))
    if args.record:
        return _recorded(args, console, argv, out, reps)
    writer = RecordingWriter(out, force=args.force)
    err = Console(stderr=True, highlight=False)
    progress = None if args.quiet else (lambda line: err.print(Text(f"fptrace bench: {line}")))
    started = datetime.now(UTC).isoformat()
    t0 = time.monotonic()
    result = bench.run(benches, states, reps, args.quick, progress)
    facts = collect_host()
    cal = analysis.calibration(analysis.frame(result.rows), facts.layout)
    bench.write_results(
        writer,
        result,
        benches,
        facts,
        cal,
        started,
        datetime.now(UTC).isoformat(),
        time.monotonic() - t0,
        ["fptrace", *argv],
    )
    if not args.quiet:
        rec = load_recording(out)
        render_bench(
            analysis.summarize(rec.bench, facts.layout),
            analysis.slopes(rec.bench, facts.layout),
            {b.name: b.op for b in benches},
            Console(highlight=False, width=min(console.width, 100)),
        )
        for s in result.skipped:
            console.print(Text(f"skipped {s['bench']} ({s['state']}): {s['reason']}"))
        console.print(
            Text(f"results: {out}" + (f"; cost table: {out}/{CALIBRATION}" if cal else ""))
        )
    return 0


def _recorded(
    args: argparse.Namespace, console: Console, argv: list[str], out: Path, reps: int
) -> int:
    """Run the benchmarks as the command of `fptrace record`, then join and cross-check."""
    import shutil

    from fptrace.analysis.bench import record_check
    from fptrace.collectors.options import RecordOptions
    from fptrace.collectors.record import record
    from fptrace.commands.common import print_summary
    from fptrace.recording.loader import load_recording
    from fptrace.recording.schema import CALIBRATION, KERNEL_CONFIG, TABLES
    from fptrace.recording.writer import RecordingWriter

    final = RecordingWriter(out, force=args.force)  # fail early if it exists
    inner_dir = out.parent / f".{out.name}.bench"
    trace_dir = out.parent / f".{out.name}.trace"
    for d in (inner_dir, trace_dir):
        shutil.rmtree(d, ignore_errors=True)
    inner = [sys.executable, "-m", "fptrace", "bench", "-q", "-o", str(inner_dir)]
    inner += ["--reps", str(reps)]
    if args.quick:
        inner.append("--quick")
    if args.states:
        inner += ["--states", ",".join(args.states)]
    inner += args.names
    result = record(
        RecordOptions(output=trace_dir, command=inner, keep_root=True, argv=["fptrace", *argv]),
        note=lambda line: None,
    )
    if result.exit_code != 0:
        raise UsageError(f"the benchmarks under fptrace record failed (exit {result.exit_code})")
    bench_rec = load_recording(inner_dir)
    trace = load_recording(trace_dir)
    check = record_check(bench_rec.bench, trace.counts)
    manifest = bench_rec.manifest.joined_with_trace(trace.manifest, check)
    final.finish_with(
        {
            trace_dir: [f"{name}.parquet" for name in TABLES],
            inner_dir: ["bench.parquet", CALIBRATION, KERNEL_CONFIG],
        },
        manifest.with_(command_line=("fptrace", *argv)),
    )
    shutil.rmtree(inner_dir, ignore_errors=True)
    shutil.rmtree(trace_dir, ignore_errors=True)
    verdict = "agree" if check.ok else "DISAGREE"
    console.print(
        Text(
            f"traced saves and benchmark round trips {verdict}: {check.tasks_checked} tasks, "
            f"max |difference| {check.max_abs_diff} (tolerance {check.tolerance})"
        )
    )
    if not args.quiet:
        print_summary(out, console)
    return 0 if check.ok else 1
