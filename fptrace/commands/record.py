"""`fptrace record`: attach the probes, run or follow the target, write a recording."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.text import Text

from fptrace.commands.common import after_dashes, int_in, pid_list, positive, print_summary

if TYPE_CHECKING:
    from fptrace.collectors.options import RecordOptions

EPILOG = """\
examples:
  sudo fptrace record -- ./my-avx512-app --threads 4   trace a command and all its children
  sudo fptrace record -p 1234,5678 -d 10               trace running processes for 10 s
  sudo fptrace record -a -d 5 -o idle-box              the whole system for 5 s
  sudo fptrace record --cgroup /system.slice/db.service -d 60   one service (cgroup v2)
  sudo fptrace record --stacks -- ./app               which code has AVX state live, and why

The recording is a directory (manifest.json + Parquet tables, see docs/recording-format.md)
that `fptrace report` reads without root.  With a command, fptrace exits with its exit code.
Under sudo the command runs as the invoking user (--keep-root to run it as root) and the
recording belongs to that user.
"""


def add_parser(sub: Any) -> None:
    from fptrace.collectors.options import STACKS_DEFAULT

    r = sub.add_parser(
        "record",
        help="record FPU state saves and restores (root)",
        description="Attach eBPF probes to the kernel's FPU save/restore tracepoints and write "
        "a recording: per task and per VSO, how many saves and restores, with which xstate "
        "components live.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("-o", "--output", type=Path, help="recording directory (default: fptrace-DATE)")
    r.add_argument("-f", "--force", action="store_true", help="replace an existing recording")
    r.add_argument("-a", "--all", action="store_true", help="trace the whole system")
    r.add_argument(
        "-p",
        "--pid",
        type=pid_list,
        default=[],
        help="trace these PIDs and all their descendants (already running or forked later)",
    )
    r.add_argument(
        "--cgroup",
        action="append",
        default=[],
        metavar="PATH",
        help="trace the tasks in this cgroup (v2 path from its root, e.g. "
        "/system.slice/nginx.service) and in the cgroups below it, created later included; "
        "repeatable; runs until Ctrl-C, SIGTERM or -d",
    )
    r.add_argument(
        "--stacks",
        nargs="?",
        type=int,
        const=STACKS_DEFAULT,
        default=0,
        metavar="RATE",
        help="for saves with AVX, AVX-512 or AMX state live, take the user and kernel stacks "
        f"(at most RATE per second per task and CPU; default {STACKS_DEFAULT}) and "
        "symbolize them after the run: which code the state was live in, and whether the "
        "task blocked or was preempted (report, export -f folded)",
    )
    r.add_argument("-d", "--duration", type=positive, help="stop after SECONDS")
    r.add_argument(
        "--interval",
        type=positive,
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
        "--ring-mb",
        type=int_in(1, 2048, " MiB"),
        default=256,
        help="--events ring buffer size in MiB, 1 to 2048 (default 256)",
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


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.collectors.options import RecordOptions
    from fptrace.collectors.record import record

    cmd = after_dashes(args.cmd)
    opts = RecordOptions(
        output=args.output,
        force=args.force,
        system=args.all,
        pids=args.pid,
        command=cmd,
        cgroups=args.cgroup,
        stacks=args.stacks,
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
        err.print(Text(f"fptrace: wrote {result.path}"), soft_wrap=True)
        print_summary(result.path, console)
    return result.exit_code


def _print_ebpf(opts: RecordOptions) -> int:
    """Print the BPF C and the -D flags `record` would use with these options (BCC's --ebpf)."""
    from fptrace.collectors.bpf_session import bpf_source
    from fptrace.collectors.options import plan_options
    from fptrace.probes.kernel import LiveKernel, find_tracefs
    from fptrace.probes.plan import plan_probes

    plan = plan_probes(LiveKernel(find_tracefs()), plan_options(opts))
    print("// cflags: " + " ".join(plan.cflags()))
    for p in plan.probes:
        print(f"// {'attach' if p.attach else 'skip  '} {p.kind} {p.name} {p.reason}".rstrip())
    print(bpf_source())
    return 0
