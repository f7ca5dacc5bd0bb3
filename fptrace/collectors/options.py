"""What `fptrace record` was asked to do, checked before the kernel is touched, and the
probe plan and backend that follow from it."""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from fptrace.cache import cache_dir, cache_write_dir, write_atomic
from fptrace.collectors.procfs import (
    pid_max,
    process_running,
)
from fptrace.errors import EnvironmentProblem, PrivilegeError, TargetError, UsageError
from fptrace.probes.plan import (
    MAX_CGROUP_TARGETS,
    PlanOptions,
    ProbePlan,
)

Status = Callable[[str], None]

INTERVAL_S = (0.01, 3600.0)  # --interval: drains more often than this cost more than they help
RING_MB = (1, 2048)  # --ring-mb: the BPF ring's size is a power of two below 4 GiB
STACKS_PER_S = (1, 100_000)  # --stacks=RATE: stacks per second per task (and CPU)
STACKS_DEFAULT = 100  # --stacks with no RATE


@dataclass
class RecordOptions:
    """What to record; built by the CLI, never holds argparse objects."""

    output: Path | None = None
    force: bool = False
    system: bool = False  # -a
    pids: list[int] = field(default_factory=list)  # -p
    command: list[str] = field(default_factory=list)  # -- CMD ARGS…
    cgroups: list[str] = field(default_factory=list)  # --cgroup: v2 paths, and below
    stacks: int = 0  # --stacks=RATE: stack samples per second per key and CPU; 0 = off
    reason: bool = True  # counts.reason (the agent leaves it out by default: its cost)
    duration: float | None = None  # -d
    interval: float = 1.0
    keep_root: bool = False  # run CMD as root even under sudo
    load_fpu: bool = False  # read load_fpu on switch-path events too (costs ~2.5%)
    arch_prctl: bool | None = None  # None: on unless -a (a syscall tracepoint taxes all syscalls)
    events: bool = False  # --events: also stream one record per event
    backend: str = "auto"  # auto | bcc | ftrace
    ring_mb: int = 256  # --ring-mb: BPF ring buffer size (64 MiB lost a few batches here)
    argv: list[str] = field(default_factory=list)  # fptrace's own command line, for the manifest

    @property
    def mode(self) -> str:
        if self.system:
            return "system"
        if self.cgroups:
            return "cgroup"
        return "command" if self.command else "pids"

    @property
    def follows_processes(self) -> bool:
        """-p or a command: a target map of process trees, and an end when they exit."""
        return bool(self.pids or self.command)


def choose_backend(opts: RecordOptions, plan: ProbePlan, say: Status) -> str:
    """BCC when it can run here; ftrace (no BCC, compiler or headers) otherwise, said aloud."""
    import importlib.util

    if opts.backend == "ftrace":
        if opts.stacks:
            raise UsageError("--stacks needs the bcc backend (stacks are taken in BPF)")
        if opts.cgroups:
            raise UsageError("--cgroup needs the bcc backend (the kernel filters by cgroup)")
        return "ftrace"
    problem = None
    if importlib.util.find_spec("bcc") is None:
        problem = "BCC (python3-bpfcc) is not installed"
    elif not plan.ok:
        problem = plan.fatal[0]
    if problem is None:
        return "bcc"
    if opts.backend == "bcc" or opts.cgroups or opts.stacks:
        raise EnvironmentProblem(f"cannot trace with BCC: {problem} (run `fptrace doctor`)")
    say(f"{problem}: using the ftrace backend")
    return "ftrace"


def plan_options(opts: RecordOptions) -> PlanOptions:
    """The probe-plan inputs a recording with these options uses (also for --ebpf)."""
    return PlanOptions(
        filter_targets=opts.follows_processes,
        filter_cgroups=bool(opts.cgroups),
        stacks_per_s=opts.stacks,
        reason=opts.reason,
        self_tgid=os.getpid(),
        calibrated_tif_bit=load_tif_bit(),
        hold_calibration=bool(opts.command),
        load_on_switch=opts.load_fpu,
        arch_prctl=opts.arch_prctl if opts.arch_prctl is not None else not opts.system,
        events_pages=ring_pages(opts.ring_mb) if opts.events else 0,
        raw_tp=os.environ.get("FPTRACE_RAW_TP") == "1",
        pid_max=pid_max(),
    )


def ring_pages(megabytes: int) -> int:
    """Pages for a ring of about ``megabytes`` MiB: the kernel wants a power of two."""
    pages = max(1, megabytes * 1024 * 1024 // mmap.PAGESIZE)
    return 1 << (pages - 1).bit_length()


def default_output() -> Path:
    return Path(datetime.now().strftime("fptrace-%Y%m%d-%H%M%S"))


def check_options(opts: RecordOptions) -> None:
    """Everything that can be refused before the kernel is touched."""
    if os.geteuid() != 0:
        raise PrivilegeError("fptrace record needs root to load BPF programs: run it with sudo")
    if not opts.system and not opts.pids and not opts.command and not opts.cgroups:
        raise TargetError(
            "nothing to trace: give -- CMD ARGS…, -p PID[,PID…], --cgroup PATH, or -a"
        )
    given = [
        name
        for name, on in (
            ("a command", opts.command),
            ("-p", opts.pids),
            ("--cgroup", opts.cgroups),
            ("-a", opts.system),
        )
        if on
    ]
    if len(given) > 1:
        raise TargetError(
            f"give only one of a command, -p, --cgroup or -a (got {' and '.join(given)})"
        )
    if opts.stacks and not STACKS_PER_S[0] <= opts.stacks <= STACKS_PER_S[1]:
        raise UsageError(
            f"--stacks={opts.stacks} is out of range: use {STACKS_PER_S[0]} to {STACKS_PER_S[1]} "
            "stacks per second"
        )
    if len(opts.cgroups) > MAX_CGROUP_TARGETS:
        raise TargetError(f"at most {MAX_CGROUP_TARGETS} --cgroup paths (got {len(opts.cgroups)})")
    if not INTERVAL_S[0] <= opts.interval <= INTERVAL_S[1]:
        raise UsageError(
            f"--interval {opts.interval:g} is out of range: use {INTERVAL_S[0]:g} to "
            f"{INTERVAL_S[1]:g} seconds"
        )
    if not RING_MB[0] <= opts.ring_mb <= RING_MB[1]:
        # 0 or less made a 4 KiB ring that lost 95 % of the events with exit 0; 4096 and up
        # overflow the kernel's 32-bit ring size.
        raise UsageError(
            f"--ring-mb {opts.ring_mb} is out of range: use {RING_MB[0]} to {RING_MB[1]} MiB"
        )
    if opts.duration is not None and opts.duration <= 0:
        raise TargetError(f"--duration {opts.duration} must be positive")
    for pid in opts.pids:
        if pid <= 0 or not process_running(pid):
            raise TargetError(f"no process with PID {pid}: check it with `ps -p {pid}`")
        if pid == os.getpid():
            raise TargetError("fptrace does not trace itself: choose another PID")
    if opts.command and shutil.which(opts.command[0]) is None:
        raise TargetError(f"command not found: {opts.command[0]} (not on PATH, or not executable)")


def _tif_cache() -> Path:
    u = os.uname()
    build = hashlib.sha256(f"{u.release} {u.version}".encode()).hexdigest()[:16]
    return cache_dir() / f"tif-bit-{build}"


def load_tif_bit() -> int | None:
    """TIF_NEED_FPU_LOAD's bit as calibrated by an earlier run on this exact kernel build."""
    try:
        return int(_tif_cache().read_text().strip())
    except (OSError, ValueError):
        return None


def save_tif_bit(bit: int) -> None:
    write_atomic(cache_write_dir() / _tif_cache().name, f"{bit}\n")  # best effort, as reads
