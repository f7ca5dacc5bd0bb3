"""`fptrace lab …`: record in other kernels and boot options under qemu (parsing and printing;
the lab itself is fptrace/lab/)."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace.commands.common import int_in, memory_size, positive

EPILOG = """\
examples:
  fptrace lab record --kernel debian:bookworm --kernel debian:6.12 -o k -- ./my-app
  fptrace lab record --kernel debian:6.1 --append noxsave -o boot -- \\
      fptrace workload pingpong --mode sse --rounds 2000
  fptrace compare k/6.1.0-*-amd64 k/6.12.*-amd64          then compare what came back
  fptrace lab list                                       cached kernels, what can be fetched
  fptrace lab clean                                      free the cache

SPEC: debian:SUITE (bullseye, bookworm, trixie, sid), debian:VERSION (5.10, 6.1, 6.12, 7, or a
full 6.1.192), or PATH/TO/vmlinuz[:MODULES_DIR] for a kernel of your own.  Debian kernels come
from the host's mirror through a private apt configuration (the host's apt state is untouched)
and are cached with their headers (a few dozen MB each).

The guest sees the host's root filesystem read-only (with a writable tmpfs overlay), so the
command and its files are at their host paths; DIR is shared writable.  Each combination of
kernel and boot options boots once (qemu; KVM when it works, else TCG), runs
`fptrace record [--record ARGS] -- COMMAND` and leaves DIR/<release>[+<options>], a normal
recording whose manifest describes the guest (kernel, config, boot line, xstate layout).
Guest consoles are kept in DIR/.lab/<combination>/console.log.
"""


def add_parser(sub: Any) -> None:
    lab = sub.add_parser(
        "lab",
        help="record a command inside other kernels and boot options (qemu)",
        description="Run a workload under `fptrace record` inside other kernels and boot "
        "options, in qemu, and bring the recordings back to compare them. Needs qemu, not root.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lsub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    rec = lsub.add_parser(
        "record",
        help="boot each kernel × boot options, record COMMAND in it",
        description="Boot every --kernel, once with its default command line and once per "
        "--append, run `fptrace record -- COMMAND` inside, and write one recording per "
        "combination to DIR.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rec.add_argument(
        "--kernel",
        "-k",
        action="append",
        default=[],
        metavar="SPEC",
        required=True,
        help="kernel to boot (repeatable): debian:SUITE, debian:VERSION or PATH/vmlinuz",
    )
    rec.add_argument(
        "--append",
        action="append",
        default=[],
        metavar="OPTIONS",
        help="extra boot options, one combination each (repeatable), e.g. 'noxsave'",
    )
    rec.add_argument(
        "--no-default-boot",
        action="store_true",
        help="with --append: skip the combination without extra boot options",
    )
    rec.add_argument("-o", "--output", type=Path, help="lab directory (default: fptrace-lab-DATE)")
    rec.add_argument("-f", "--force", action="store_true", help="reuse a non-empty directory")
    rec.add_argument(
        "--record",
        default="",
        metavar="ARGS",
        help="options for `fptrace record` in the guest, e.g. '--events' or '--backend ftrace'",
    )
    rec.add_argument(
        "--timeout",
        type=positive,
        default=600.0,
        help="seconds a guest may run before it is stopped (default 600)",
    )
    rec.add_argument(
        "--accel",
        choices=("auto", "kvm", "tcg"),
        default="auto",
        help="kvm, tcg (emulation: slower, a different CPU), or auto: KVM when it boots here",
    )
    rec.add_argument(
        "--root",
        choices=("host", "debootstrap"),
        default="host",
        help="guest root: the host's / read-only with an overlay (default), or a Debian "
        "bookworm built once with debootstrap (root), with only the job's paths from the host",
    )
    rec.add_argument("--memory", type=memory_size, default="2G", help="guest memory (default 2G)")
    rec.add_argument("--smp", type=int_in(1, 64), default=2, help="guest CPUs (default 2)")
    rec.add_argument("--refresh", action="store_true", help="refresh the package lists first")
    rec.add_argument("cmd", nargs=argparse.REMAINDER, help="-- COMMAND ARGS… to run in each guest")
    ls = lsub.add_parser("list", help="cached kernels and the Debian kernels that can be fetched")
    ls.add_argument("--refresh", action="store_true", help="refresh the package lists first")
    ls.add_argument("--cached", action="store_true", help="only the cache (no apt)")
    cl = lsub.add_parser("clean", help="remove cached kernels (and with --all the apt lists)")
    cl.add_argument("--all", action="store_true", help="also the package lists and caches")


def run(args: argparse.Namespace, console: Console, argv: list[str]) -> int:
    from fptrace.errors import UsageError

    if args.lab_command == "record":
        return _record(args, console)
    if args.lab_command == "list":
        return _list(args, console)
    if args.lab_command == "clean":
        from fptrace.lab.kernels import clean, lab_dir

        freed = clean(everything=args.all)
        print(f"freed {freed / 1e6:.0f} MB in {lab_dir()}")
        return 0
    raise UsageError("fptrace lab: name an action: record, list or clean (see fptrace lab --help)")


def _record(args: argparse.Namespace, console: Console) -> int:
    from fptrace.commands.common import after_dashes
    from fptrace.errors import UsageError
    from fptrace.lab.runner import LabOptions, lab_record

    cmd = after_dashes(args.cmd)
    try:
        record_args = shlex.split(args.record)
    except ValueError as exc:
        raise UsageError(f"--record {args.record!r}: {exc}") from None
    appends = [a for a in args.append if a.strip()]
    if args.no_default_boot and not appends:
        raise UsageError("--no-default-boot needs at least one --append")
    opts = LabOptions(
        kernels=args.kernel,
        output=args.output or Path(f"fptrace-lab-{datetime.now():%Y%m%d-%H%M%S}"),
        cmd=cmd,
        appends=([] if args.no_default_boot else [""]) + appends,
        record_args=record_args,
        timeout=args.timeout,
        accel=args.accel,
        memory=args.memory,
        smp=args.smp,
        force=args.force,
        refresh=args.refresh,
        root=args.root,
    )
    err = Console(stderr=True, highlight=False)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # as Ctrl-C: the running guest is killed, lab.json written

    signal.signal(signal.SIGTERM, stop)
    results = lab_record(opts, lambda line: err.print(Text(f"fptrace lab: {line}")))
    table = Table(title=f"fptrace lab: {opts.output}", title_justify="left")
    for col in ("combination", "kernel", "status", "boot s", "recording / reason"):
        table.add_column(col, overflow="fold")
    for r in results:
        style = "green" if r.ok else "bold red"
        table.add_row(
            r.name,
            r.kernel,
            Text(r.status, style=style),
            str(r.boot_s or ""),
            r.recording if r.ok else r.message,
        )
    Console(highlight=False, file=sys.stdout).print(table)
    return 0 if results and all(r.ok for r in results) else 1


def _list(args: argparse.Namespace, console: Console) -> int:
    from fptrace.lab.kernels import dir_size, lab_dir, list_cached

    table = Table(title=f"cached kernels in {lab_dir()}", title_justify="left")
    for col in ("release", "version", "from", "MB"):
        table.add_column(col)
    for k in list_cached():
        table.add_row(
            k.release,
            str(k.info.get("version")),
            str(k.info.get("suite") or k.info.get("source")),
            f"{k.info.get('disk_bytes', 0) / 1e6:.0f}",
        )
    console.print(table)
    console.print(f"cache: {dir_size(lab_dir()) / 1e6:.0f} MB in all")
    if args.cached:
        return 0
    from fptrace.lab.apt import PrivateApt, version_key
    from fptrace.lab.specs import SUITES

    apt = PrivateApt(lab_dir() / "apt")
    note = apt.update(force=args.refresh)
    if note:
        console.print(note)
    versions = apt.madison("linux-image-amd64")
    avail = Table(title=f"Debian kernels on {apt.mirror}", title_justify="left")
    for col in ("spec", "version", "suite"):
        avail.add_column(col)
    for name, suites in SUITES.items():
        cands = [(v, s) for v, s in versions if s in suites]
        if cands and name != "unstable":
            v, s = max(cands, key=lambda c: version_key(c[0]))
            avail.add_row(f"debian:{name}", v, s)
    console.print(avail)
    return 0
