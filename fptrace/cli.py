"""Command line: parse, call a stage, print.  The only place that prints errors or exits."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace import __version__
from fptrace.argv import after_dashes
from fptrace.errors import FptraceError, UsageError

if TYPE_CHECKING:
    from fptrace.collectors.recorder import RecordOptions

EPILOG_RECORD = """\
examples:
  sudo fptrace record -- ./my-avx512-app --threads 4   trace a command and all its children
  sudo fptrace record -p 1234,5678 -d 10               trace running processes for 10 s
  sudo fptrace record -a -d 5 -o idle-box              the whole system for 5 s

The recording is a directory (manifest.json + Parquet tables, see docs/recording-format.md)
that `fptrace report` reads without root.  With a command, fptrace exits with its exit code.
Under sudo the command runs as the invoking user (--keep-root to run it as root) and the
recording belongs to that user.
"""


def _pids(text: str) -> list[int]:
    try:
        pids = [int(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a PID list: {text!r} (use -p 123,456)") from None
    if not pids:
        raise argparse.ArgumentTypeError("empty PID list")
    return pids


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="fptrace",
        description="Trace what saving and restoring FPU/vector state (x87, SSE, AVX, AVX-512, "
        "AMX) costs: per task and per state buffer (VSO).",
    )
    p.add_argument("--version", action="version", version=f"fptrace {__version__}")
    p.add_argument("--debug", action="store_true", help="show Python tracebacks of errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    r = sub.add_parser(
        "record",
        help="record FPU state saves and restores (root)",
        description="Attach eBPF probes to the kernel's FPU save/restore tracepoints and write "
        "a recording: per task and per VSO, how many saves and restores, with which xstate "
        "components live.",
        epilog=EPILOG_RECORD,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("-o", "--output", type=Path, help="recording directory (default: fptrace-DATE)")
    r.add_argument("-f", "--force", action="store_true", help="replace an existing recording")
    r.add_argument("-a", "--all", action="store_true", help="trace the whole system")
    r.add_argument(
        "-p",
        "--pid",
        type=_pids,
        default=[],
        help="trace these PIDs and all their descendants (already running or forked later)",
    )
    r.add_argument("-d", "--duration", type=_positive, help="stop after SECONDS")
    r.add_argument(
        "--interval",
        type=_positive,
        default=1.0,
        help="drain the kernel maps every SECONDS (default 1; a crash loses at most one)",
    )
    r.add_argument("--keep-root", action="store_true", help="run the command as root under sudo")
    r.add_argument(
        "--events",
        action="store_true",
        help="also stream one record per event (time, CPU, task, VSO, XSTATE_BV) into "
        "events.parquet",
    )
    r.add_argument(
        "--ring-mb", type=int, default=256, help="--events ring buffer size in MiB (default 256)"
    )
    r.add_argument(
        "--backend",
        choices=("auto", "bcc", "ftrace"),
        default="auto",
        help="bcc (eBPF, in-kernel aggregation), ftrace (no BCC, compiler or headers: a private "
        "tracefs instance read as binary pages; costs more per event), or auto: BCC when it "
        "works here (default)",
    )
    r.add_argument(
        "--load-fpu",
        action="store_true",
        help="also read load_fpu (TIF_NEED_FPU_LOAD) at regs_deactivated (it is always read "
        "at regs_activated, so restores are exact without it): a read on every switch, about as "
        "much again as the one at regs_activated (up to a percent or two when switch-bound)",
    )
    r.add_argument(
        "--arch-prctl",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="count xstate permission requests (arch_prctl); default on for a command or -p, "
        "off with -a: a syscall tracepoint slows every syscall of every task",
    )
    r.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only errors on stderr: no 'attached' line, live status or summary (a script "
        "can wait for <output>/manifest.json instead, written once the probes are attached)",
    )
    r.add_argument("--ebpf", action="store_true", help="print the BPF C and its -D flags, exit")
    r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS… to run and trace")

    sub.add_parser(
        "doctor",
        help="check what `fptrace record` needs on this machine",
        description="List every requirement (privilege, tracefs, BTF, BCC, headers, "
        "tracepoints, struct fields) with ok/missing, the reason and the fix.",
    )
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

    cp = sub.add_parser(
        "compare",
        help="set runs side by side: what changed, and which differences are significant",
        description="Compare recordings or bench results from different kernels, boot options, "
        "configs or CPUs. First what changed in the setup, then the metrics side by side: "
        "ratio of medians with a 95%% interval and, with repeated runs, a Mann-Whitney test "
        "('~' = not significant).",
        epilog="examples:\n"
        "  fptrace compare old new                         one run a side\n"
        "  fptrace compare --baseline a1 a2 a3 --candidate b1 b2 b3\n"
        "  fptrace compare runs/ --group-by host.kernel.release -f html -o k.html\n"
        "  fptrace compare base new --fail-on-increase 5   exit 1 on a >5%% regression\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    cp.add_argument("runs", nargs="*", type=Path, help="A B [C…]: each compared with A")
    cp.add_argument("--baseline", nargs="+", type=Path, help="repeated runs of the baseline")
    cp.add_argument("--candidate", nargs="+", type=Path, help="repeated runs of the candidate")
    cp.add_argument(
        "--group-by",
        metavar="KEY",
        help="one DIR of runs, grouped by a manifest "
        "key (e.g. host.kernel.release, host.kernel_config.sha256)",
    )
    cp.add_argument("--baseline-group", metavar="VALUE", help="with --group-by: the baseline group")
    cp.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output file (default: stdout; html: fptrace-compare.html)",
    )
    cp.add_argument("-f", "--format", choices=("text", "html", "json"), default="text")
    cp.add_argument(
        "--fail-on-increase",
        type=float,
        metavar="PCT",
        help="exit 1 if --metric grew by more than PCT percent (not '~')",
    )
    cp.add_argument(
        "--metric",
        default="est_cpu_ns_per_s",
        help="metric for --fail-on-increase (default est_cpu_ns_per_s)",
    )
    cp.add_argument(
        "--force", action="store_true", help="compare incomparable runs, with a warning"
    )
    cp.add_argument("--calibration", type=Path, help="cost table for the CPU-time estimates")

    bp = sub.add_parser(
        "bench",
        help="FPU-state-aware microbenchmarks and XSAVE cost calibration",
        description="Measure what context switches, signals, forks and execs cost as a function "
        "of the live xstate (init, SSE, AVX, AVX-512, AMX), and calibrate the cost model of "
        "`fptrace report`. Each measurement is its own process; levels are interleaved; "
        "results are medians with 95%% confidence intervals, '~' where a difference is not "
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
    bp.add_argument("--reps", type=int, help="repetitions per level (default 10, --quick 5)")
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
    wp = sub.add_parser(
        "workload",
        help="run one of fptrace's C workloads (pingpong, fpbench), built on first use",
        description="Build (once, with gcc, cached) and exec one of the package's C workloads, "
        "so a command line can name them on any machine, a lab guest included. "
        "pingpong: two processes on one CPU exchange --rounds messages over pipes with a "
        "chosen xstate live (--mode none|init|sse|avx|avx512|amx).",
        epilog="example:\n  sudo fptrace record -- fptrace workload pingpong --mode avx "
        "--rounds 5000\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    wp.add_argument("name", choices=WORKLOADS, help="workload")
    wp.add_argument("--path", action="store_true", help="print the binary's path, do not run")
    wp.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    from fptrace.cli_lab import add_lab_parser

    add_lab_parser(sub)
    return p


def _cmd_bench(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    import time
    from datetime import UTC, datetime

    from fptrace.analysis import bench as analysis
    from fptrace.collectors import bench
    from fptrace.collectors.host import collect_host
    from fptrace.recording.loader import load_recording
    from fptrace.recording.writer import RecordingWriter, chown_tree, write_json_atomic
    from fptrace.reports.terminal import render_bench

    if args.list:
        for b in bench.BENCHMARKS.values():
            console.print(Text(f"{b.name:18} {b.op}"))
        return 0
    benches, states = bench.resolve(args.names, args.states)
    reps = args.reps or (5 if args.quick else 10)
    if reps < 2:
        raise UsageError("--reps must be at least 2 (intervals need repetitions)")
    out = args.output or Path(datetime.now().strftime("fptrace-bench-%Y%m%d-%H%M%S"))
    if args.record:
        return _bench_recorded(args, console, argv, out, reps)
    writer = RecordingWriter(out, force=args.force)
    err = Console(stderr=True, highlight=False)
    progress = None if args.quiet else (lambda line: err.print(Text(f"fptrace bench: {line}")))
    started = datetime.now(UTC).isoformat()
    t0 = time.monotonic()
    result = bench.run(benches, states, reps, args.quick, progress)
    host, layout = collect_host(writer.path)
    cal = analysis.calibration(analysis.frame(result.rows), layout)
    bench.write_results(
        writer,
        result,
        benches,
        host,
        cal,
        started,
        datetime.now(UTC).isoformat(),
        time.monotonic() - t0,
        ["fptrace", *argv],
    )
    if cal is not None:
        write_json_atomic(writer.path / "calibration.json", cal)
        chown_tree(writer.path)
    if not args.quiet:
        rec = load_recording(out)
        render_bench(
            analysis.summarize(rec.bench, layout),
            analysis.slopes(rec.bench, layout),
            {b.name: b.op for b in benches},
            Console(highlight=False, width=min(console.width, 100)),
        )
        for s in result.skipped:
            console.print(Text(f"skipped {s['bench']} ({s['state']}): {s['reason']}"))
        console.print(
            Text(f"results: {out}" + (f"; cost table: {out}/calibration.json" if cal else ""))
        )
    return 0


def _bench_recorded(
    args: argparse.Namespace, console: Console, argv: list[str], out: Path, reps: int
) -> int:
    """Run the benchmarks as the command of `fptrace record`, then merge and cross-check."""
    import json
    import shutil

    from fptrace.analysis.bench import record_check
    from fptrace.collectors.recorder import RecordOptions, record
    from fptrace.recording.loader import load_recording
    from fptrace.recording.writer import RecordingWriter, chown_tree, write_json_atomic

    final = RecordingWriter(out, force=args.force)  # fail early if it exists
    inner_dir = out.parent / f".{out.name}.bench"
    trace_dir = out.parent / f".{out.name}.trace"
    for d in (inner_dir, trace_dir):
        shutil.rmtree(d, ignore_errors=True)
    inner = [
        sys.executable,
        "-m",
        "fptrace",
        "bench",
        "-q",
        "-o",
        str(inner_dir),
        "--reps",
        str(reps),
    ]
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
    for name in ("counts", "tasks", "vso"):
        shutil.copy(trace_dir / f"{name}.parquet", final.path / f"{name}.parquet")
    for name in ("bench.parquet", "calibration.json", "kernel-config.gz"):
        if (inner_dir / name).exists():
            shutil.copy(inner_dir / name, final.path / name)
    manifest = json.loads((inner_dir / "manifest.json").read_text())
    manifest["bench"]["duration_s"] = manifest.get("duration_s")
    for key in (
        "probes",
        "drops",
        "load_fpu",
        "events",
        "attach_monotonic_ns",
        "interval_s",
        "duration_s",  # rates in the report are per traced second
        "intervals",
    ):
        if key in trace.manifest:
            manifest[key] = trace.manifest[key]
    manifest["record_check"] = check
    manifest["command_line"] = ["fptrace", *argv]
    write_json_atomic(final.path / "manifest.json", manifest)
    shutil.rmtree(final.parts, ignore_errors=True)
    shutil.rmtree(inner_dir, ignore_errors=True)
    shutil.rmtree(trace_dir, ignore_errors=True)
    chown_tree(final.path)
    verdict = "agree" if check["ok"] else "DISAGREE"
    console.print(
        Text(
            f"traced saves and benchmark round trips {verdict}: {check['tasks_checked']} tasks, "
            f"max |difference| {check['max_abs_diff']} (tolerance {check['tolerance']})"
        )
    )
    if not args.quiet:
        _cmd_report(
            argparse.Namespace(recording=out, output=None, format="text", calibration=None), console
        )
    return 0 if check["ok"] else 1


def _cmd_export(args: argparse.Namespace) -> int:
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


def _compare_sides(args: argparse.Namespace) -> list[tuple[str, list, str, list]]:
    """(label A, runs A, label B, runs B) for every comparison asked for."""
    from fptrace.analysis.fleet import discover, group_by
    from fptrace.recording.loader import load_recording

    def load(paths: list[Path]) -> list:
        return [load_recording(p) for p in paths]

    if args.group_by:
        if len(args.runs) != 1 or args.baseline or args.candidate:
            raise UsageError("--group-by takes exactly one directory of runs")
        groups = group_by(load(discover(args.runs[0])), args.group_by)
        if len(groups) < 2:
            raise UsageError(f"{args.runs[0]}: all runs have the same {args.group_by}")
        names = sorted(groups)
        base = args.baseline_group or names[0]
        if base not in groups:
            raise UsageError(f"no group {base!r}: the groups are {', '.join(names)}")
        return [(base, groups[base], n, groups[n]) for n in names if n != base]
    if args.baseline or args.candidate:
        if not (args.baseline and args.candidate) or args.runs:
            raise UsageError("give both --baseline and --candidate runs, and no others")
        return [("A", load(args.baseline), "B", load(args.candidate))]
    if len(args.runs) < 2:
        raise UsageError("compare needs at least two runs (or --baseline/--candidate)")
    base = load([args.runs[0]])
    return [(str(args.runs[0]), base, str(p), load([p])) for p in args.runs[1:]]


def _cmd_compare(args: argparse.Namespace, console: Console) -> int:
    from fptrace.analysis import compare
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.fleet import collapse_many
    from fptrace.collectors.host import parse_config
    from fptrace.reports import compare as render

    if args.metric not in compare.METRICS:
        raise UsageError(f"unknown metric {args.metric}: choose from {', '.join(compare.METRICS)}")
    sides = _compare_sides(args)
    everyone = {id(r): r for _, a, _, b in sides for r in (*a, *b)}
    collapsed = collapse_many(list(everyone.values()))

    def config(rec) -> dict[str, str] | None:
        import gzip

        path = rec.path / "kernel-config.gz"
        try:
            with gzip.open(path, "rt") as f:
                return parse_config(f.read())
        except OSError:
            return None

    comparisons = [
        compare.build(
            (la, lb),
            a,
            b,
            collapsed,
            lambda m: choose_model(m, args.calibration),
            (config(a[0]), config(b[0])),
            force=args.force,
        )
        for la, a, lb, b in sides
    ]
    if args.format == "text":
        if args.output is None:
            render.render_text(comparisons, Console(highlight=False, width=min(console.width, 100)))
        else:
            with open(args.output, "w") as f:
                render.render_text(comparisons, Console(file=f, width=100, highlight=False))
    else:
        text = (
            render.render_json(comparisons)
            if args.format == "json"
            else render.render_html(comparisons)
        )
        out = args.output or (Path("fptrace-compare.html") if args.format == "html" else None)
        if out is None:
            sys.stdout.write(text)
        else:
            write_text(out, text)
    if args.fail_on_increase is not None:
        for comp in comparisons:
            row = comp.regression(args.metric, args.fail_on_increase)
            if row is not None:
                rise = (
                    f"{(row.ratio - 1) * 100:+.1f}%"
                    if row.ratio is not None
                    else f"from 0 to {row.b_median:,.4g}"
                )
                print(
                    f"fptrace: {comp.labels[1]}: {args.metric} rose {rise} "
                    f"(> {args.fail_on_increase}%) vs {comp.labels[0]}",
                    file=sys.stderr,
                )
                return 1
    return 0


def _cmd_record(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.collectors.recorder import RecordOptions, record

    cmd = after_dashes(args.cmd)
    opts = RecordOptions(
        output=args.output,
        force=args.force,
        system=args.all,
        pids=args.pid,
        command=cmd,
        duration=args.duration,
        interval=args.interval,
        keep_root=args.keep_root,
        load_fpu=args.load_fpu,
        arch_prctl=args.arch_prctl,
        events=args.events,
        ring_mb=args.ring_mb,
        backend=args.backend,
        argv=["fptrace", *argv],
    )
    if args.ebpf:
        return _print_ebpf(opts)
    err = Console(stderr=True, highlight=False)
    live = err.is_terminal and not args.quiet

    def status(line: str) -> None:
        if live:
            err.file.write(f"\r\x1b[2K[fptrace] {line}")
            err.file.flush()

    def note(line: str) -> None:
        if not args.quiet:  # one line each, whatever the width: scripts read them
            err.print(Text(f"fptrace: {line}"), soft_wrap=True)

    result = record(opts, status=status, note=note)
    if live:
        err.file.write("\r\x1b[2K")
    if not args.quiet:
        # The summary's imports (pandas) come after the recording: never before the probes
        # attach (a lab guest under emulation spent 14 s on them).
        from fptrace.analysis.cost import DEFAULT
        from fptrace.analysis.report import build
        from fptrace.recording.loader import load_recording
        from fptrace.reports.terminal import WIDTH, render_report

        err.print(Text(f"fptrace: wrote {result.path}"), soft_wrap=True)
        render_report(
            build(load_recording(result.path), DEFAULT),
            Console(highlight=False, width=min(console.width, WIDTH)),
        )
    return result.exit_code


def _print_ebpf(opts: RecordOptions) -> int:
    """Print the BPF C and the -D flags `record` would use with these options (BCC's --ebpf)."""
    from fptrace.collectors.bpf_session import bpf_source
    from fptrace.collectors.recorder import plan_options
    from fptrace.probes.kernel import LiveKernel, find_tracefs
    from fptrace.probes.plan import plan_probes

    plan = plan_probes(LiveKernel(find_tracefs()), plan_options(opts))
    print("// cflags: " + " ".join(plan.cflags()))
    for p in plan.probes:
        print(f"// {'attach' if p.attach else 'skip  '} {p.kind} {p.name} {p.reason}".rstrip())
    print(bpf_source())
    return 0


WORKLOADS = ("pingpong", "fpbench")


def _cmd_workload(args: argparse.Namespace) -> int:
    """Exec the workload: it keeps its own name as comm and its own exit code."""
    from fptrace.workloads.build import workload_binary

    binary = workload_binary(args.name)
    if args.path:
        print(binary)
        return 0
    argv = after_dashes(args.args)
    sys.stdout.flush()
    os.execv(binary, [str(binary), *argv])
    return 0  # not reached


def _cmd_doctor(console: Console) -> int:
    from fptrace.probes.kernel import LiveKernel, find_tracefs
    from fptrace.probes.requirements import run_checks

    tracefs = find_tracefs(mount=os.geteuid() == 0)
    checks = run_checks(LiveKernel(tracefs), tracefs is not None)
    table = Table(title="fptrace doctor", title_justify="left", expand=True)
    table.add_column("", no_wrap=True)
    table.add_column("requirement", ratio=3, overflow="fold")
    table.add_column("found / reason", ratio=3, overflow="fold")
    table.add_column("fix", ratio=2, overflow="fold")
    bad = 0
    for c in checks:
        mark = "ok" if c.ok else ("MISSING" if c.required else "skip")
        if not c.ok and c.required:
            bad += 1
        style = "green" if c.ok else ("bold red" if c.required else "yellow")
        table.add_row(Text(mark, style=style), c.name, Text(c.detail), "" if c.ok else c.fix)
    console.print(table)
    console.print(
        "fptrace record can run here." if bad == 0 else f"{bad} required item(s) missing."
    )
    return 0 if bad == 0 else 1


def write_text(out: Path, text: str) -> None:
    """Write a report file and print its path; a failure is one line, not a traceback."""
    from fptrace.errors import OutputWriteError

    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise OutputWriteError(out, exc) from exc
    print(out)


def _cmd_report(args: argparse.Namespace, console: Console) -> int:
    from fptrace.analysis.cost import choose_model
    from fptrace.analysis.report import build
    from fptrace.recording.loader import load_recording

    rec = load_recording(args.recording)
    data = build(rec, choose_model(rec.manifest, args.calibration))
    if args.format == "text":
        from fptrace.reports.terminal import WIDTH, render_report

        if args.output is None:
            render_report(data, Console(highlight=False, width=min(console.width, WIDTH)))
            return 0
        with open(args.output, "w") as f:
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
    write_text(args.output or args.recording / "report.html", text)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    console = Console(highlight=False)
    try:
        args = build_parser().parse_args(argv)
        if args.command == "record":
            return _cmd_record(args, console, argv)
        if args.command == "doctor":
            return _cmd_doctor(console)
        if args.command == "report":
            return _cmd_report(args, console)
        if args.command == "bench":
            return _cmd_bench(args, console, argv)
        if args.command == "compare":
            return _cmd_compare(args, console)
        if args.command == "export":
            return _cmd_export(args)
        if args.command == "workload":
            return _cmd_workload(args)
        if args.command == "lab":
            from fptrace.cli_lab import cmd_lab

            return cmd_lab(args, console)
        build_parser().print_help()
        return 2
    except FptraceError as exc:
        if debug:
            raise
        print(f"fptrace: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("fptrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fptrace export … | head`: the reader is gone, quietly stop
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as exc:  # a bug: one line for users, the traceback with --debug
        if debug:
            raise
        print(
            f"fptrace: internal error: {exc.__class__.__name__}: {exc} "
            "(run with --debug for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":
    sys.exit(main())
