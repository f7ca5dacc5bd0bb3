"""`fptrace record`: wire probes, collectors and the recording writer together.

Order matters for correctness:
1. validate everything the user gave (root, targets, output) before touching the kernel;
2. fork the command *blocked* on a pipe, so that nothing it does precedes the probes;
3. load the program, seed the target map, attach the switch-path probes, release the command;
4. every interval: snapshot the cumulative maps, write the deltas as a part;
5. on exit of the command / Ctrl-C / SIGTERM / --duration: final snapshot, merge, manifest.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import mmap
import os
import pwd
import secrets
import shutil
import signal
import struct
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from fptrace import __version__
from fptrace.cache import cache_dir, cache_write_dir, write_atomic
from fptrace.collectors import counting
from fptrace.collectors.bpf_session import BpfSession
from fptrace.collectors.counting import Deltas
from fptrace.collectors.host import collect_host
from fptrace.collectors.procfs import (
    TaskMeta,
    descendants,
    own_rss,
    pid_max,
    process_running,
    task_counters,
    task_meta,
)
from fptrace.collectors.ring import EVENT_DTYPE as RING_DTYPE
from fptrace.collectors.ring import RingReader
from fptrace.collectors.session import Session, Snapshot
from fptrace.collectors.task_ids import TaskIds
from fptrace.errors import EnvironmentProblem, PrivilegeError, TargetError
from fptrace.probes.headers import choose_headers
from fptrace.probes.kernel import LiveKernel, find_tracefs
from fptrace.probes.plan import (
    EVENT_NAMES,
    LOAD_NOT_READ,
    PlanOptions,
    ProbePlan,
    plan_probes,
)
from fptrace.recording.manifest import Drains, Events, LoadFpu, Manifest, Probe, Probes, Target
from fptrace.recording.writer import RecordingWriter, chown_tree
from fptrace.xstate import Layout, unsized_vso_size

Status = Callable[[str], None]


@dataclass
class RecordOptions:
    """What to record; built by the CLI, never holds argparse objects."""

    output: Path | None = None
    force: bool = False
    system: bool = False  # -a
    pids: list[int] = field(default_factory=list)  # -p
    command: list[str] = field(default_factory=list)  # -- CMD ARGS…
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
        return "command" if self.command else "pids"


@dataclass
class RecordResult:
    path: Path
    exit_code: int  # the command's, or 0
    manifest: Manifest
    notes: list[str]


class VsoNamer:
    """Opaque VSO ids: a keyed hash of (kernel address, owner pid) with a per-run secret.

    The secret never leaves this process, so ids cannot be turned back into addresses.
    """

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def __call__(self, addr: int, task: int) -> str | None:
        """The id of buffer ``addr`` of task ``task`` (the recording's task id, not the
        pid: a pid and even an address can be reused by a later task)."""
        if not addr:
            return None
        raw = struct.pack("<QQ", addr, task)
        return hashlib.blake2b(raw, key=self._key, digest_size=8).hexdigest()


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


def choose_backend(opts: RecordOptions, plan: ProbePlan, say: Status) -> str:
    """BCC when it can run here; ftrace (no BCC, compiler or headers) otherwise, said aloud."""
    import importlib.util

    if opts.backend == "ftrace":
        return "ftrace"
    problem = None
    if importlib.util.find_spec("bcc") is None:
        problem = "BCC (python3-bpfcc) is not installed"
    elif not plan.ok:
        problem = plan.fatal[0]
    if problem is None:
        return "bcc"
    if opts.backend == "bcc":
        raise EnvironmentProblem(f"cannot trace with BCC: {problem} (run `fptrace doctor`)")
    say(f"{problem}: using the ftrace backend")
    return "ftrace"


def plan_options(opts: RecordOptions) -> PlanOptions:
    """The probe-plan inputs a recording with these options uses (also for --ebpf)."""
    return PlanOptions(
        filter_targets=not opts.system,
        self_tgid=os.getpid(),
        calibrated_tif_bit=load_tif_bit(),
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
    if not opts.system and not opts.pids and not opts.command:
        raise TargetError("nothing to trace: give -- CMD ARGS…, -p PID[,PID…], or -a")
    if opts.pids and opts.command:
        raise TargetError("give either -p or a command, not both")
    if opts.interval <= 0 or opts.interval > 3600:
        raise TargetError(f"--interval {opts.interval} is out of range: use 0.1 to 3600 seconds")
    if opts.duration is not None and opts.duration <= 0:
        raise TargetError(f"--duration {opts.duration} must be positive")
    for pid in opts.pids:
        if pid <= 0 or not process_running(pid):
            raise TargetError(f"no process with PID {pid}: check it with `ps -p {pid}`")
        if pid == os.getpid():
            raise TargetError("fptrace does not trace itself: choose another PID")
    if opts.command and shutil.which(opts.command[0]) is None:
        raise TargetError(f"command not found: {opts.command[0]} (not on PATH, or not executable)")


def _drop_identity(keep_root: bool) -> tuple[int, int, list[int], dict[str, str]] | None:
    """Under sudo, the command runs as the invoking user (least privilege)."""
    uid = os.environ.get("SUDO_UID")
    if keep_root or os.geteuid() != 0 or not uid or not uid.isdigit() or int(uid) == 0:
        return None
    try:
        pw = pwd.getpwuid(int(uid))
    except KeyError:
        return None
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    return pw.pw_uid, pw.pw_gid, groups, env


class BlockedChild:
    """A forked command that waits for a byte on a pipe before it execs."""

    def __init__(self, argv: list[str], keep_root: bool) -> None:
        drop = _drop_identity(keep_root)
        go_r, self._go_w = os.pipe()
        self._err_r, err_w = os.pipe()
        os.set_inheritable(err_w, False)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 127
            try:
                os.close(self._go_w)
                os.close(self._err_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if os.read(go_r, 1) != b"g":
                    os._exit(code)  # fptrace gave up before starting us
                os.close(go_r)
                env = dict(os.environ)
                if drop is not None:
                    uid, gid, groups, extra = drop
                    os.setgroups(groups)
                    os.setgid(gid)
                    os.setuid(uid)
                    env.update(extra)
                os.execvpe(argv[0], argv, env)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.write(err_w, f"{exc.errno}:{exc.strerror}".encode())
                code = 126 if exc.errno == 13 else 127
            os._exit(code)
        os.close(go_r)
        os.close(err_w)
        self.pid = pid
        self.argv = argv
        self.status: int | None = None
        self.released = False

    def release(self) -> None:
        self.released = True
        os.write(self._go_w, b"g")
        os.close(self._go_w)
        err = os.read(self._err_r, 256)
        os.close(self._err_r)
        if err:
            self.wait()
            raise TargetError(f"cannot run {self.argv[0]}: {err.decode().split(':', 1)[-1]}")

    def abandon(self) -> None:
        """Let the child exit without running the command."""
        with contextlib.suppress(OSError):
            os.close(self._go_w)
        self.wait()

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self) -> int:
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def signal(self, signum: int) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    @property
    def exit_code(self) -> int:
        code = self.wait()
        return 128 - code if code < 0 else code


def _factorize(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(codes, uniques) of ``values``, as pandas.factorize (but uniques sorted)."""
    uniq, inv = np.unique(values, return_inverse=True)
    return inv.reshape(-1), uniq


def load_fpu_column(load_bits: np.ndarray, events: np.ndarray, bit: int | None) -> pa.Array:
    """TIF_NEED_FPU_LOAD per row from the events' load_bits: null for aux events, where it
    was not read (LOAD_NOT_READ) or where the TIF bit is unknown."""
    load = load_bits.astype(np.int64)
    unread = (events >= 32) | (bit is None) | ((load & LOAD_NOT_READ) != 0)
    return pa.array(((load >> (bit or 0)) & 1).astype(np.int8), mask=unread, type=pa.int8())


def event_names(codes: np.ndarray) -> pa.DictionaryArray:
    """Event codes -> their names, as a dictionary array over :func:`event_name_table`."""
    return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), event_name_table())


@functools.cache
def event_name_table() -> pa.Array:
    """Event code -> name, indexable by the code itself (codes are small integers).

    Built on first use: pa.array() probes for pandas, which would otherwise be imported on
    every `record`'s way to attached probes.
    """
    names = [EVENT_NAMES.get(code, f"event{code}") for code in range(max(EVENT_NAMES) + 1)]
    return pa.array(names, type=pa.string())


POLL_S = 0.005  # ring consumer period


class EventStream:
    """Empties the BPF ring in a thread (so it never fills), converts in bulk at each drain."""

    def __init__(self, ring: RingReader, pending: Callable[[], np.ndarray]) -> None:
        self.ring = ring
        self.pending = pending  # the events still in the per-CPU batches, not in the ring
        self.horizon = 0  # at the last take: no event older than this was still unread
        self._chunks: list[np.ndarray] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fptrace-ring", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Read every few ms, not in a tight loop: batches arrive every ~20 us at full rate, and
        # per-call overhead on tiny reads would cost more CPU than the events themselves.  The
        # ring holds far more than a pause's worth (256 MiB: ~4 s at 1.5 M events/s).
        while not self._stop.is_set():
            with self._lock:  # take() reads too: one reader at a time moves the position
                got = self.ring.read()
                if len(got):
                    self._chunks.append(got)
            time.sleep(POLL_S)

    def stop(self, partial: np.ndarray) -> None:
        """Stop the thread; take what is still in the ring, then the unfinished batches."""
        self._stop.set()
        self._thread.join()
        while len(got := self.ring.read()):
            self._chunks.append(got)
        self._chunks.append(partial)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def abort(self) -> None:
        """Stop the thread without reading (the session is going away)."""
        self._stop.set()
        self._thread.join()

    def take(self) -> np.ndarray:
        """Every event committed so far.  Sets ``horizon``: an event not taken yet is either
        in a CPU's unfinished batch (looked at first) or newer than that look, except a
        batch being committed at that very moment, which the next take will have."""
        if self.running:
            seen = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            waiting = self.pending()["ts"]
            self.horizon = min(seen, int(waiting.min())) if len(waiting) else seen
            with self._lock:
                if len(got := self.ring.read()):
                    self._chunks.append(got)
        with self._lock:
            chunks, self._chunks = self._chunks, []
        return np.concatenate(chunks) if chunks else np.empty(0, dtype=RING_DTYPE)


class ParsedEvents:
    """The ftrace backend's events: its parser keeps them; the same interface as EventStream."""

    running = False
    horizon = 0  # this backend removes no task: no ended task is kept for its events

    def __init__(self, session: Session) -> None:
        self.session = session
        self._tail: list[np.ndarray] = []

    def stop(self, partial: np.ndarray) -> None:
        self._tail.append(partial)

    def take(self) -> np.ndarray:
        parts = [self.session.take_events(), *self._tail]
        self._tail = []
        return np.concatenate(parts)


class Recorder:
    """Turns snapshots into recording rows; owns the per-run state between drains."""

    def __init__(
        self,
        writer: RecordingWriter,
        session: Session,
        layout: Layout | None,
        xstate: Mapping[str, Any] | None = None,
    ):
        self.writer = writer
        self.session = session
        self.layout = layout
        self.xstate = xstate or {}
        self.name_vso = VsoNamer()
        self.t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self.interval = 0
        self.interval_start = 0  # ns since attach: where the next interval begins
        # Task identity: pids are reused, (pid, start time) is not (collectors/task_ids.py).
        # Ended tasks are kept only for events, which can arrive after their task is gone.
        self.tasks = TaskIds(history=session.ring is not None)
        self.drained_at = self.t0  # CLOCK_MONOTONIC of the last drain's snapshot
        self.horizon = 0  # the previous drain's: no event older than it is still to come
        self.exiting: dict[int, int] = {}  # pid -> start_ns: seen exited at the last drain
        self.pruned_tasks = 0
        self.lateness_ns: list[int] = []  # per scheduled drain: how late it came
        self.deltas = Deltas()
        self.seen_vsos: set[tuple[int, int]] = set()
        self.sizes: dict[tuple[int, int], int | None] = {}  # (xcomp_bv, xfeatures) -> size
        self.meta: dict[int, TaskMeta] = {}
        self.meta_execs: dict[int, int] = {}
        self.live_counters: dict[int, tuple[int, int]] = {}
        self.total_events = 0
        self.last: Snapshot | None = None
        # Events come from the BPF ring (a consumer thread), or straight from the ftrace parser.
        self.events: Any = None
        if session.ring is not None:
            self.events = EventStream(session.ring, session.partial_events)
        elif session.keep_events:
            self.events = ParsedEvents(session)
        self.events_written = 0

    def rel(self, ns: int) -> int:
        return max(ns - self.t0, 0) if ns else 0

    def drain(self, due_ns: int | None = None) -> int:
        """Write one interval; returns the number of events in it.

        ``due_ns`` (CLOCK_MONOTONIC) is when the drain was due: how late it came is kept.
        """
        self.session.calibrate()
        snap = self.session.snapshot()
        self.drained_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        now = self.rel(self.drained_at)
        if due_ns is not None:
            self.lateness_ns.append(max(now - self.rel(due_ns), 0))
        self.last = snap
        bit = self.session.tif_bit_index
        self.tasks.identify({pid: t.get("start_ns", 0) for pid, t in snap.tasks.items()})
        # Only a backend with kernel maps removes tasks; the ftrace one keeps them all, so
        # none is final before the end (else it would be written again at later drains).
        final = self._final_tasks(snap) if self.session.removes_tasks else set()
        gone = self._take_final_counts(snap, final)
        taken, deltas = self.deltas.take(snap.counts, gone)
        if gone is not None and len(gone):  # before _forget retires their pids
            # A key back after an earlier removal has its owner; the others are the task's
            # that has their pid now.
            ids = gone.ids[self.deltas.owners(gone.ids) < 0]
            pids = counting.key_fields(ids)["pid"].astype(np.int64)
            self.deltas.claim(ids, self.tasks.of_pids(pids))
        self.writer.append_table("counts", self._counts_table(taken, deltas, now, bit))
        events = int(deltas.sum())
        self.writer.append(
            "intervals",
            [
                {
                    "interval": self.interval,
                    "start_ns": self.interval_start,
                    "end_ns": now,
                    "due_ns": None if due_ns is None else self.rel(due_ns),
                    "events": events,
                    "map_tasks": len(snap.tasks),
                    "map_keys": 0 if snap.in_map is None else len(snap.in_map),
                    "map_vsos": len(snap.vsos),
                    "recorder_rss_bytes": own_rss(),
                }
            ],
        )
        self.interval_start = now
        self.writer.append("vso", self._new_vsos(snap))
        if self.events is not None:
            table = self.events_table(self.events.take(), bit)
            self.writer.append_table("events", table)
            self.events_written += table.num_rows
            # Records in flight at the previous take have been read by now: no event older
            # than its horizon can still come, so the tasks that ended before it can go.
            self.tasks.prune(self.horizon)
            self.horizon = self.events.horizon
        rows = self._tasks(snap)
        self.writer.append("tasks", [r for r in rows if r["pid"] in final])  # once, for good
        self.writer.replace("tasks", [r for r in rows if r["pid"] not in final])
        self._forget(snap, final)
        self.interval += 1
        self.total_events += events
        return events

    def _final_tasks(self, snap: Snapshot) -> set[int]:
        """Tasks nothing more can come from: freed (sched_process_free follows the final
        switch), or, where that probe is missing, exited already at the previous drain (the
        last event of a task is its final switch, right after it exits)."""
        exited = {pid: t.get("start_ns", 0) for pid, t in snap.tasks.items() if t["exit_ns"]}
        final = {
            pid
            for pid, start in exited.items()
            if snap.tasks[pid].get("freed_ns") or self.exiting.get(pid) == start
        }
        self.exiting = {pid: start for pid, start in exited.items() if pid not in final}
        return final

    def _take_final_counts(self, snap: Snapshot, final: set[int]) -> counting.Gone | None:
        """Take final tasks' keys (and removed keys a cache slot has put back) out of the
        kernel's shared map with their exact counts (collectors/counting.py)."""
        if not self.session.removes_tasks or snap.in_map is None:  # no kernel maps (ftrace)
            return None
        counts = snap.counts
        pids = np.fromiter(final, dtype=np.int64, count=len(final))
        ids = counts.ids[np.isin(counts.keys["pid"], pids)]
        more = np.concatenate(
            [
                self.deltas.of_pids(pids),
                snap.in_map[counting.member(snap.in_map, self.deltas.retired)],
            ]
        )
        if len(more):
            known = set(ids.tolist())
            extra = list(dict.fromkeys(i for i in more.tolist() if i not in known))
            ids = np.concatenate([ids, counting.objects(extra)])
        if not len(ids) and not len(pids):
            return None
        gone, missed = self.session.take_counts(ids, pids)
        new = ~counting.member(missed.ids, counts.pos)  # keys this snapshot did not see
        if new.any():
            snap.counts = counting.CountTable.concat(counts, missed.rows(new))
        return gone

    def _counts_table(
        self, taken: counting.CountTable, deltas: np.ndarray, now: int, bit: int | None
    ) -> pa.Table:
        """The counts rows of one interval, column by column (no Python object per row).

        A key removed with its task and back since (a cache slot put part of it back) is
        named by the task it belonged to (``Deltas.owner``), whoever has the pid now.
        """
        keys = taken.keys
        pid = keys["pid"].astype(np.int64)
        task = self.deltas.owners(taken.ids)
        named = task < 0
        if named.any():
            task[named] = self.tasks.of_pids(pid[named])
        event = keys["event"].astype(np.int64)
        first = taken.first_ns.astype(np.int64)
        last = taken.last_ns.astype(np.int64)
        return pa.table(
            {
                "interval": np.full(len(taken), self.interval, dtype=np.int32),
                "task": task,
                "pid": pid.astype(np.int32),
                "tgid": keys["tgid"].astype(np.int32),
                "vso": self._vso_column(keys["vso"], task, _factorize).cast(pa.string()),
                "event": event_names(event).cast(pa.string()),
                "xfeatures": keys["xfeatures"],
                "load_fpu": load_fpu_column(keys["load_bits"], event, bit),
                "arg": keys["arg"].astype(np.uint32),
                "count": deltas.astype(np.int64),
                "first_ns": np.where(first != 0, np.maximum(first - self.t0, 0), 0),
                # Hits are not timed in the kernel (too costly): last seen no later than
                # the end of this interval, and no earlier than the kernel's own mark.
                "last_ns": np.maximum(np.where(last != 0, np.maximum(last - self.t0, 0), 0), now),
            }
        )

    def _vso_column(
        self, vso: np.ndarray, task: np.ndarray, factorize: Callable[[np.ndarray], Any]
    ) -> pa.DictionaryArray:
        """The VSO ids of (buffer address, task) pairs: each distinct pair named once.

        ``factorize``: (codes, uniques) of an array — pandas' (hashing) for the millions of
        events, numpy's (sorting) for counts, which keeps pandas out of a plain record.
        """
        vinv, vuniq = factorize(vso)
        inv, uniq = factorize(task * max(len(vuniq), 1) + vinv)
        first = np.zeros(len(uniq), dtype=np.int64)
        first[inv[::-1]] = np.arange(len(inv) - 1, -1, -1)  # first row of each pair
        ids = [self.name_vso(int(vso[i]), int(task[i])) for i in first]
        no_vso = np.array([i is None for i in ids], dtype=bool)
        return pa.DictionaryArray.from_arrays(
            pa.array(inv.astype(np.int32), mask=no_vso[inv] if len(inv) else None),
            pa.array([i or "" for i in ids], type=pa.string()),
        )

    def _forget(self, snap: Snapshot, final: set[int]) -> None:
        """Remove final tasks from the kernel's maps and from this recorder's memory, so
        that both stay bounded by the live tasks however many come and go."""
        if not self.session.removes_tasks:  # no kernel maps (ftrace)
            return
        alive_tgids = {t["tgid"] or pid for pid, t in snap.tasks.items() if pid not in final}
        targets = [
            pid
            for pid in final
            if pid != (snap.tasks[pid]["tgid"] or pid) or pid not in alive_tgids
        ]
        self.session.forget(
            {pid: snap.tasks[pid].get("start_ns", 0) for pid in final},
            [(addr, pid) for addr, pid in snap.vsos if pid in final],
            targets,
        )
        for pid in final:
            self.tasks.retire(pid, until=self.drained_at)
            self.live_counters.pop(pid, None)
            if pid not in alive_tgids:  # a process whose every task is gone
                self.meta.pop(pid, None)
                self.meta_execs.pop(pid, None)
        self.seen_vsos = {v for v in self.seen_vsos if v[1] not in final}
        self.pruned_tasks += len(final)

    def events_table(self, recs: np.ndarray, bit: int | None) -> pa.Table:
        """Ring records -> the events table, vectorised: no sort, no Python object per row.

        Event codes index a fixed name table directly; each event's task is the one that had
        its pid at its time (collectors/task_ids.py); (buffer, task) pairs are factorized
        with a hash table, and each distinct pair is named once.
        """
        import pandas as pd  # only --events needs it: kept off every record's start-up

        tasks = self.tasks.of_events(recs["pid"], recs["ts"])
        return pa.table(
            {
                "ts_ns": np.maximum(recs["ts"].astype(np.int64) - self.t0, 0),
                "cpu": recs["cpu"].astype(np.int16),
                "task": tasks,
                "pid": recs["pid"].astype(np.int32),
                "tgid": recs["tgid"].astype(np.int32),
                # Dictionary arrays: no Python object per row (the ring consumer needs the GIL).
                "vso": self._vso_column(recs["vso"].astype(np.uint64), tasks, pd.factorize),
                "event": event_names(recs["event"]),
                "xfeatures": recs["xfeatures"].astype(np.uint64),
                "load_fpu": load_fpu_column(recs["load_bits"], recs["event"], bit),
            }
        )

    def _new_vsos(self, snap: Snapshot) -> list[dict[str, Any]]:
        rows = []
        for (addr, pid), v in snap.vsos.items():
            if (addr, pid) in self.seen_vsos:
                continue
            self.seen_vsos.add((addr, pid))
            task = self.tasks(pid)
            shape = (v["xcomp_bv"], v["xfeatures"])
            if shape not in self.sizes:  # a few shapes, thousands of buffers under churn
                self.sizes[shape] = unsized_vso_size(self.xstate, self.layout, *shape)
            layout_size = self.sizes[shape]
            rows.append(
                {
                    "vso": self.name_vso(addr, task),
                    "task": task,
                    "pid": pid,
                    "tgid": v["tgid"],
                    # Before 5.16 the kernel keeps no size: the layout's is the size.
                    "size": v["size"] or layout_size or 0,
                    "user_size": v["user_size"],
                    "xfeatures": v["xfeatures"],
                    "user_xfeatures": v["user_xfeatures"],
                    "xfd": v["xfd"],
                    "xcomp_bv": v["xcomp_bv"],
                    "layout_size": layout_size,
                    "is_valloc": bool(v["flags"] & 1),
                    "is_guest": bool(v["flags"] & 2),
                    "first_ns": self.rel(v["first_ns"]),
                    "prev_vso": self.name_vso(v["prev_vso"], task),
                }
            )
        return rows

    def _tasks(self, snap: Snapshot) -> list[dict[str, Any]]:
        rows = []
        for pid, t in snap.tasks.items():
            tgid = t["tgid"] or pid
            # procfs once per process, and again after an exec changed its command line
            if not t["exit_ns"] and self.meta_execs.get(tgid) != t["execs"]:
                meta = task_meta(tgid)
                if meta is not None:
                    self.meta[tgid] = meta
                    self.meta_execs[tgid] = t["execs"]
            meta = self.meta.get(tgid, TaskMeta())
            if t["exit_ns"]:
                runtime, switches = t["end_runtime"], t["end_switches"]
            else:
                live = task_counters(tgid, pid)
                if live is not None:
                    self.live_counters[pid] = live
                runtime, switches = self.live_counters.get(
                    pid, (t["base_runtime"], t["base_switches"])
                )
            rows.append(
                {
                    "task": self.tasks(pid),
                    "pid": pid,
                    "tgid": tgid,
                    "ppid": t["ppid"] or meta.ppid,
                    "comm": t["comm"],
                    "cmdline": meta.cmdline,
                    "cgroup": meta.cgroup,
                    "switches": max(switches - t["base_switches"], 0),
                    "oncpu_ns": max(runtime - t["base_runtime"], 0),
                    "first_ns": self.rel(t["first_ns"]),
                    "exit_ns": self.rel(t["exit_ns"]) if t["exit_ns"] else None,
                    "execs": t["execs"],
                    "forked": bool(t["forked"]),
                }
            )
        return rows


def probe_summary(plan: ProbePlan) -> Probes:
    def item(p: Any) -> Probe:
        return Probe(name=p.name, kind=p.kind, required=p.required, reason=p.reason)

    return Probes(
        attached=tuple(item(p) for p in plan.attached()),
        skipped=tuple(item(p) for p in plan.skipped()),
        notes=tuple(plan.notes),
    )


class _Stop:
    """Signal state: first SIGINT/SIGTERM asks to stop (or is forwarded to the command)."""

    def __init__(self, child: BlockedChild | None) -> None:
        self.child = child
        self.requested = False
        self.count = 0

    def __call__(self, signum: int, _frame: object) -> None:
        self.count += 1
        if self.child is not None and self.child.status is None and self.count == 1:
            if signum == signal.SIGTERM:
                self.child.signal(signum)  # SIGINT from a terminal reaches the child itself
            return
        self.requested = True


def record(
    opts: RecordOptions, status: Status | None = None, note: Status | None = None
) -> RecordResult:
    """Run a recording to completion.  Raises FptraceError subclasses for the user."""
    check_options(opts)
    t_start = time.monotonic()
    out = opts.output or default_output()
    notes: list[str] = []

    def say(msg: str) -> None:
        notes.append(msg)
        if note is not None:
            note(msg)

    # Everything that can refuse the run comes before the output directory exists.
    tracefs = find_tracefs(mount=True)
    if tracefs is None:
        raise EnvironmentProblem(
            "tracefs is not mounted and cannot be: mount -t tracefs nodev /sys/kernel/tracing"
        )
    env = LiveKernel(tracefs)
    plan = plan_probes(env, plan_options(opts))
    backend = choose_backend(opts, plan, say)
    writer = RecordingWriter(out, force=opts.force)
    facts = collect_host()
    if facts.config_text is not None:
        writer.write_kernel_config(facts.config_text)
    layout = facts.layout
    headers = choose_headers(env.release) if backend == "bcc" else None
    if headers is not None and headers.note:
        say(headers.note)

    child = BlockedChild(opts.command, opts.keep_root) if opts.command else None
    started_at = datetime.now(UTC)
    manifest = Manifest(
        fptrace_version=__version__,
        status="recording",
        started_at=started_at.isoformat(),
        command_line=tuple(opts.argv),
        interval_s=opts.interval,
        target=Target(
            mode=opts.mode,
            command=tuple(opts.command) or None,
            pids=tuple(opts.pids) or None,
            follow_children=not opts.system,
        ),
        probes=probe_summary(plan),
        host=facts.host,
        backend=backend,
    )
    stop = _Stop(child)
    old_handlers = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        session: Session
        if backend == "bcc":
            session = BpfSession(plan, headers.path if headers else None)
        else:
            from fptrace.collectors.ftrace import FtraceSession  # only this backend needs it

            traced = FtraceSession(
                tracefs, layout, os.getpid(), events=opts.events, xstate=facts.host.xstate
            )
            for name in traced.cleaned:
                say(f"removed tracing instance {name} left by a killed fptrace")
            session = traced
        with session:
            if not opts.system:  # -a has no target map
                session.add_targets([child.pid] if child is not None else opts.pids)
                if child is None:  # -p: seeded first, so what they fork from now on is
                    # followed in the kernel; then what they had forked already
                    session.add_targets(sorted(descendants(opts.pids)))
            session.attach_fpu()
            manifest = manifest.with_(probes=session.describe_probes(manifest.probes))
            recorder = Recorder(writer, session, layout, facts.host.xstate)
            try:
                exit_code, manifest = _record_session(
                    opts, session, recorder, writer, plan, manifest, child, stop, status, t_start,
                    note,
                )  # fmt: skip
            finally:
                if recorder.events is not None and recorder.events.running:
                    recorder.events.abort()  # before the session (and its ring) goes away
    except BaseException:
        # A fatal error (disk full…) while the command runs: do not leave it running untraced
        # behind the user's back; what was recorded so far stays in .parts/.
        if child is not None and not child.released:
            child.abandon()  # it exits without running the command
        elif child is not None and child.status is None:
            child.signal(signal.SIGTERM)
            child.wait()
        raise
    finally:
        for s, h in old_handlers.items():
            signal.signal(s, h)
        chown_tree(writer.path)
    return RecordResult(writer.path, exit_code, manifest, notes)


def _record_session(
    opts: RecordOptions,
    session: Session,
    recorder: Recorder,
    writer: RecordingWriter,
    plan: ProbePlan,
    manifest: Manifest,
    child: BlockedChild | None,
    stop: _Stop,
    status: Status | None,
    t_start: float,
    note: Status | None = None,
) -> tuple[int, Manifest]:
    """From attached probes to a finished recording: the command's exit code, the manifest."""
    manifest = manifest.with_(
        attach_monotonic_ns=recorder.t0, startup_s=round(time.monotonic() - t_start, 3)
    )
    writer.write_manifest(manifest)
    if note is not None:  # scripts wait on this line (or on the manifest) to know it is live
        note(attached_line(manifest, writer.path, opts))
    if child is not None:
        child.release()
    exit_code = _loop(opts, recorder, child, stop, status)
    time.sleep(0.05)  # let the last switches of exiting tasks land
    session.detach_fpu()  # the final snapshot and the events then cover the same span
    if recorder.events is not None:
        partial = session.partial_events() if session.ring is not None else np.empty(0, RING_DTYPE)
        recorder.events.stop(partial)
    recorder.drain()  # calibrates too, if the run was too short to have done it
    if session.tif_bit is not None:
        save_tif_bit(session.tif_bit)
    snap = recorder.last or Snapshot()
    events = Events(counted=recorder.total_events)
    if recorder.events is not None:
        events = Events(
            counted=recorder.total_events,
            recorded=recorder.events_written,
            # The BPF ring's size; the ftrace backend has none (its buffer is ftrace's own).
            ring_bytes=plan.macros.get("EVENT_PAGES", 0) * mmap.PAGESIZE
            if session.ring is not None
            else 0,
            lost=snap.drops.get("ring_full", 0) + snap.drops.get("ftrace_overrun", 0),
        )
    manifest = manifest.with_(
        status="complete",
        ended_at=datetime.now(UTC).isoformat(),
        duration_s=round((time.clock_gettime_ns(time.CLOCK_MONOTONIC) - recorder.t0) / 1e9, 3),
        intervals=recorder.interval,
        drains=drain_lateness(recorder.lateness_ns, opts.interval),
        events=events,
        drops=dict(snap.drops),
        load_fpu=LoadFpu(
            tif_bit=session.tif_bit,
            method=session.load_method
            or (
                "calibrated against the regs_activated record's load_fpu"
                if session.tif_bit is not None
                else "unknown: load_fpu is null"
            ),
        ),
        target=replace(manifest.target, exit_code=exit_code if child is not None else None),
    )
    writer.finalize(manifest)
    return exit_code, manifest


def drain_lateness(late_ns: list[int], interval_s: float) -> Drains:
    """How late the recorder's drains came: a busy machine delays them (it is a process too)."""
    if not late_ns:
        return Drains()
    ordered = sorted(late_ns)
    return Drains(
        scheduled=len(ordered),
        late_median_s=round(ordered[len(ordered) // 2] / 1e9, 4),
        late_max_s=round(ordered[-1] / 1e9, 4),
        later_than_interval=sum(n > interval_s * 1e9 for n in ordered),
    )


def attached_line(manifest: Manifest, path: Path, opts: RecordOptions) -> str:
    """The one line that says tracing is live: what, since when, where, and how it ends."""
    kinds: dict[str, int] = {}
    for item in manifest.probes.attached:
        kinds[item.kind] = kinds.get(item.kind, 0) + 1
    how = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    ends = (
        "until the command exits"
        if opts.command
        else f"for {opts.duration:g} s"
        if opts.duration is not None
        else "until the traced processes exit"
        if opts.pids
        else "until Ctrl-C or SIGTERM"
    )
    return (
        f"attached {sum(kinds.values())} probes ({how}) {manifest.startup_s} s after start; "
        f"recording to {path} {ends}"
    )


def _loop(
    opts: RecordOptions,
    recorder: Recorder,
    child: BlockedChild | None,
    stop: _Stop,
    status: Status | None,
) -> int:
    t_begin = time.monotonic()
    next_drain = t_begin + opts.interval
    while True:
        now = time.monotonic()
        if stop.requested:
            break
        if opts.duration is not None and now - t_begin >= opts.duration:
            break
        if child is not None and child.poll() is not None:
            break
        if child is None and not opts.system and not any(process_running(p) for p in opts.pids):
            break
        if recorder.session.calibrating:
            recorder.session.calibrate()  # detach the calibration probe as soon as it is done
        if now >= next_drain:
            events = recorder.drain(due_ns=int(next_drain * 1e9))  # the same clock
            # A late drain is not made up for with a burst of short ones: missed ticks are
            # skipped (intervals.parquet has the real spans).
            next_drain += opts.interval
            while next_drain <= time.monotonic():
                next_drain += opts.interval
            if status is not None:
                snap = recorder.last or Snapshot()
                drops = sum(snap.drops.values())
                status(
                    f"{now - t_begin:7.1f}s  {events / opts.interval:10,.0f} events/s  "
                    f"{len(snap.tasks):5d} tasks  {drops} drops"
                )
        tick = 0.01 if recorder.session.calibrating else 0.1
        time.sleep(min(tick, max(next_drain - time.monotonic(), 0.001)))
    if child is None:
        return 0
    return _stop_child(child, stop)


def _stop_child(child: BlockedChild, stop: _Stop) -> int:
    """The command's exit code, ending it first if it is still running.

    A second SIGINT/SIGTERM to fptrace means "stop at once": the command is killed rather
    than asked, and one that ignores SIGTERM (after --duration, say) is killed as soon as
    another signal arrives, so fptrace never hangs with its probes attached.
    """
    if child.poll() is None:
        if stop.count >= 2:
            child.signal(signal.SIGKILL)
        else:
            child.signal(signal.SIGTERM)
        seen = stop.count
        while child.poll() is None:
            if stop.count > seen:
                child.signal(signal.SIGKILL)
            time.sleep(0.02)
    return child.exit_code
