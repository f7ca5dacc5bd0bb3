"""The ftrace backend (`record --backend ftrace`): no BCC, no compiler, no headers.

In the spirit of perf-tools: a private tracing instance under tracefs, the same tracepoints
enabled there, each CPU's ``trace_pipe_raw`` read as binary pages with the ``mono`` clock
(so times match the BPF backend) and decoded in bulk (:mod:`fptrace.collectors.ftrace_raw`,
using the instance's own ``format`` files), and the same cumulative snapshots as
:class:`~fptrace.collectors.bpf_session.BpfSession`, so the recorder and the recording are
unchanged.  The raw records carry the real ``struct fpu`` address: like the BPF backend's
keys it stays in memory and is keyed-hashed before anything is written.

What it cannot see, and says so: ``fpstate->size``/``user_size`` (sizes come from
``xcomp_bv`` and CPUID), ``is_valloc``/``is_guest``, and exact end-of-life switch counters.
Records hold the thread id only: the process (tgid) and name come from procfs at first
sight, or from ftrace's ``saved_tgids``/``saved_cmdlines`` for a task already gone.  When
the reader falls behind, the kernel buffer overruns; overruns are read from the instance's
per-CPU stats and reported as drops.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fptrace.collectors import counting, ftrace_watchdog
from fptrace.collectors.counting import CountKey, CountVal
from fptrace.collectors.ftrace_raw import (
    EventFormat,
    Field,
    PageLayout,
    gather,
    record_string,
    walk_pages,
)
from fptrace.collectors.ftrace_watchdog import remove_instance
from fptrace.collectors.procfs import proc_comm, proc_tgid, process_running, task_counters
from fptrace.collectors.ring import EVENT_DTYPE
from fptrace.collectors.session import Snapshot
from fptrace.errors import EnvironmentProblem, UsageError
from fptrace.probes.plan import AUX_EVENT_IDS, FPU_EVENT_IDS
from fptrace.recording.manifest import Probe, Probes
from fptrace.xstate import COMPACTED_BIT, Layout, unsized_vso_size

INSTANCE_PREFIX = "fptrace-"
FLAGS = os.O_RDONLY | os.O_NONBLOCK
POLL_S = 0.02  # between rounds: the walk costs per round, so rounds should be large; the
#              8 MiB per-CPU buffer holds ~0.3 s at the fastest switch rates here
MAX_PAGES_PER_ROUND = 4096  # per CPU: 16 MiB, a bound on one round's memory
COMMON_TYPE = Field(0, 2, False, False)  # struct trace_entry: the same on every kernel
COMMON_PID = Field(4, 4, True, False)
COPY_DST = FPU_EVENT_IDS["copy_dst"]
# A decoded switch-path record, before its process is known.
FPU_ROW = np.dtype(
    [
        ("ts", "<u8"),
        ("vso", "<u8"),
        ("xfeatures", "<u8"),
        ("xcomp_bv", "<u8"),
        ("pid", "<u4"),
        ("tgid", "<u4"),
        ("cpu", "<u2"),
        ("event", "<u2"),
        ("load", "<u2"),
    ]
)
SCHED_EVENTS = ("sched_process_fork", "sched_process_exec", "sched_process_exit")


def leftover_instances(tracefs: Path) -> list[Path]:
    """fptrace instances whose process is gone (a killed run)."""
    root = tracefs / "instances"
    if not root.is_dir():
        return []
    out = []
    for inst in root.glob(INSTANCE_PREFIX + "*"):
        pid = inst.name.removeprefix(INSTANCE_PREFIX)
        if not pid.isdigit() or not process_running(int(pid)):
            out.append(inst)
    return out


class FtraceSession:
    """A private tracefs instance with the FPU, scheduler and signal events enabled."""

    ring = None  # no BPF ring: with --events the parser keeps the rows itself (take_events)
    calibrating = False
    removes_tasks = False  # no kernel maps: every task stays until the end
    tif_bit_index = 0  # load_bits carry the record's own load_fpu in bit 0
    load_method = "the tracepoint record's own load_fpu field (ftrace)"

    def __init__(
        self,
        tracefs: Path,
        layout: Layout | None,
        self_pid: int,
        events: bool = False,
        xstate: Mapping[str, Any] | None = None,
    ) -> None:
        self.tracefs = tracefs
        self.layout = layout
        self.xstate = xstate or {}  # the manifest's host.xstate: format and context size
        self.cleaned: list[str] = []
        for old in leftover_instances(tracefs):
            remove_instance(old)
            self.cleaned.append(old.name)
        self.inst = tracefs / "instances" / f"{INSTANCE_PREFIX}{self_pid}"
        try:
            self.inst.mkdir()
        except OSError as exc:
            raise EnvironmentProblem(
                f"cannot create a tracing instance in {tracefs}/instances: {exc.strerror}"
            ) from exc
        # Removes the instance if this process is killed (SIGKILL included) before close().
        self._watchdog = ftrace_watchdog.start(self.inst)
        self.self_pid = self_pid
        self._lock = threading.Lock()
        self.counts: dict[CountKey, list[int]] = {}
        self.vsos: dict[tuple[int, int], dict[str, int]] = {}
        self.tasks: dict[int, dict[str, Any]] = {}
        self._last_vso: dict[int, int] = {}
        self._pending_copy: dict[int, tuple[int, int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.keep_events = events
        self._events: list[np.ndarray] = []
        self._carry_fpu = np.zeros(0, FPU_ROW)  # decoded, stamped after the last round's mark
        self._carry_rare: list[tuple[int, int, int, str, dict[str, Any]]] = []
        self._tgids: dict[int, int] = {}
        self._saved_tgids: dict[int, int] | None = None
        self.enabled: list[str] = []
        self._write("trace_clock", "mono")
        self._write("options/record-tgid", "1")
        self._write("buffer_size_kb", "8192")
        self.targets: set[int] | None = None  # None: the whole system

    # ---- the same surface as BpfSession ----

    def __enter__(self) -> FtraceSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, rel: str, value: str) -> None:
        try:
            (self.inst / rel).write_text(value)
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {self.inst / rel}: {exc.strerror}") from exc

    def add_cgroups(self, ids: list[int]) -> None:
        raise UsageError("--cgroup needs the bcc backend (the kernel filters by cgroup)")

    def add_targets(self, tgids: list[int]) -> None:
        """Trace these processes and everything they fork.

        Filtered here, not with set_event_pid: ftrace decides that at sched_switch for the
        *next* task, while regs_deactivated fires during the switch for the previous one, so
        a kernel pid filter drops a traced task's saves whenever the next task is untraced.
        """
        self.targets = (self.targets or set()) | set(tgids)

    def attach_fpu(self) -> None:
        events = self.inst / "events"
        wanted = [f"x86_fpu/{p.name}" for p in sorted((events / "x86_fpu").glob("x86_fpu_*"))]
        wanted += [f"sched/{e}" for e in SCHED_EVENTS] + ["signal/signal_deliver"]
        for ev in wanted:
            if (events / ev / "enable").exists():
                self._write(f"events/{ev}/enable", "1")
                self.enabled.append(ev.replace("/", ":"))
        if not any(e.startswith("x86_fpu:") for e in self.enabled):
            raise EnvironmentProblem("this kernel has no x86_fpu tracepoints")
        try:
            self._formats()
        except (OSError, ValueError) as exc:
            raise EnvironmentProblem(
                f"cannot read the event formats in {self.inst}: {exc}"
            ) from exc
        self._thread = threading.Thread(target=self._read, name="fptrace-ftrace", daemon=True)
        self._thread.start()

    def detach_fpu(self) -> None:
        with contextlib.suppress(EnvironmentProblem):
            self._write("tracing_on", "0")
        time.sleep(0.05)
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def calibrate(self) -> int | None:
        return 0

    def partial_events(self) -> np.ndarray:
        """Nothing: no per-CPU batches (events are parsed from ftrace's buffer)."""
        return np.empty(0, EVENT_DTYPE)

    def take_counts(
        self, ids: np.ndarray, pids: np.ndarray
    ) -> tuple[counting.Gone, counting.CountTable]:
        """Nothing to take: counts live in this process, and no task is removed
        (``removes_tasks`` is False, so the recorder does not ask)."""
        return counting.Gone(
            ids[:0], np.zeros(0, np.int64), np.zeros(0, np.int64)
        ), counting.empty()

    def forget(
        self, tasks: dict[int, int], vsos: Iterable[tuple[int, int]], targets: Iterable[int]
    ) -> None:
        """Nothing to forget (see :meth:`take_counts`)."""

    def describe_probes(self, probes: Probes) -> Probes:
        """The manifest's ``probes``: the events enabled in the tracefs instance."""
        return Probes(
            attached=tuple(
                Probe(name=n, kind="ftrace", required=n.startswith("x86_fpu")) for n in self.enabled
            ),
            notes=("ftrace backend: sizes computed from xcomp_bv and CPUID",),
        )

    def take_events(self) -> np.ndarray:
        """The events decoded since the last call, as ring-format records (ns are monotonic)."""
        with self._lock:
            parts, self._events = self._events, []
        return np.concatenate(parts) if parts else np.zeros(0, EVENT_DTYPE)

    @property
    def tif_bit(self) -> int | None:
        return None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        remove_instance(self.inst)
        if self._watchdog.stdin is not None:
            self._watchdog.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._watchdog.wait(timeout=5)

    def snapshot(self) -> Snapshot:
        with self._lock:
            counts: dict[CountKey, CountVal] = {
                k: CountVal(v[0], v[1], v[2]) for k, v in self.counts.items()
            }
            vsos = {k: dict(v) for k, v in self.vsos.items()}
            tasks = {k: dict(v) for k, v in self.tasks.items()}
        for pid, t in tasks.items():  # the live end of the counters, as BpfSession gives
            if t["exit_ns"] and t["end_switches"]:
                continue
            live = task_counters(t["tgid"] or pid, pid)
            if live is not None:
                t["end_runtime"], t["end_switches"] = live.runtime_ns, live.switches
                with self._lock:
                    self.tasks[pid]["end_runtime"] = live.runtime_ns
                    self.tasks[pid]["end_switches"] = live.switches
        return Snapshot(
            counts=counting.table_of(counts),
            vsos=vsos,
            tasks=tasks,
            drops={"ftrace_overrun": self.overruns()},
        )

    def overruns(self) -> int:
        total = 0
        for stats in (self.inst / "per_cpu").glob("cpu*/stats"):
            try:
                for line in stats.read_text().splitlines():
                    if line.startswith("overrun:"):
                        total += int(line.split(":", 1)[1])
            except (OSError, ValueError):
                continue
        return total

    # ---- reading and aggregating ----

    def _task(self, pid: int, tgid: int, comm: str | None, ns: int) -> dict[str, Any]:
        t = self.tasks.get(pid)
        if t is None:
            if comm is None:
                comm = proc_comm(tgid, pid)
            if comm is None:
                comm = saved_map(self.tracefs / "saved_cmdlines", str).get(pid, "")
            counters = task_counters(tgid, pid)
            base = (counters.runtime_ns, counters.switches) if counters else (0, 0)
            t = self.tasks[pid] = {
                "tgid": tgid,
                "ppid": 0,
                "first_ns": ns,
                "exit_ns": 0,
                "base_runtime": base[0],
                "base_switches": base[1],
                "end_runtime": base[0],
                "end_switches": base[1],
                "last_vso": 0,
                "execs": 0,
                "forked": 0,
                "comm": comm,
            }
        elif not t["tgid"]:
            t["tgid"] = tgid
        return t

    def _bump(self, key: CountKey, ns: int) -> None:
        v = self.counts.get(key)
        if v is None:
            self.counts[key] = [1, ns, ns]
        else:
            v[0] += 1
            v[2] = ns

    def _vso(self, fpu: int, pid: int, tgid: int, xc: int, ns: int) -> None:
        if (fpu, pid) in self.vsos:
            return
        size = unsized_vso_size(self.xstate, self.layout, xc) or 0
        prev = self._last_vso.get(pid, 0)
        self._last_vso[pid] = fpu
        self.vsos[(fpu, pid)] = {
            "tgid": tgid,
            "size": size,  # computed: ftrace cannot read fpstate->size
            "user_size": 0,
            "xfeatures": xc & ~COMPACTED_BIT,
            "user_xfeatures": 0,
            "xfd": 0,
            "xcomp_bv": xc,
            "first_ns": ns,
            "prev_vso": prev,
            "flags": 0,
        }

    def _formats(self) -> None:
        """Record layouts of the enabled events, by the ID in each record's common_type."""
        self.page = PageLayout.parse((self.inst / "events" / "header_page").read_text())
        self.formats: dict[int, EventFormat] = {}
        for ev in self.enabled:
            group, name = ev.split(":", 1)
            fmt = EventFormat.read(self.inst / "events" / group / name)
            self.formats[fmt.id] = fmt
        self._fpu_code = {
            i: FPU_EVENT_IDS.get(f.name.removeprefix("x86_fpu_"), 0)
            for i, f in self.formats.items()
            if f.name.startswith("x86_fpu_")
        }

    def _read(self) -> None:
        """Poll every CPU's ``trace_pipe_raw``; decode and aggregate what each round read.

        A round first notes the clock, then reads every CPU: an event stamped before that
        moment is in this round or an earlier one on every CPU, so those are processed in
        time order now (a fork before its child's events) and later ones wait a round.
        """
        cpus = sorted(
            int(d.name[3:]) for d in (self.inst / "per_cpu").glob("cpu*") if d.name[3:].isdigit()
        )
        fds = {
            c: os.open(self.inst / "per_cpu" / f"cpu{c}" / "trace_pipe_raw", FLAGS) for c in cpus
        }
        size = self.page.page_size
        try:
            while True:
                mark = time.monotonic_ns()
                chunks: list[bytes] = []
                page_cpu: list[int] = []
                behind = False  # a CPU had more than one round's worth: go again at once
                for cpu, fd in fds.items():
                    for _ in range(MAX_PAGES_PER_ROUND):
                        try:
                            chunk = os.read(fd, size)
                        except BlockingIOError:
                            break
                        if len(chunk) != size:  # 0: nothing ready; never a partial page here
                            break
                        chunks.append(chunk)
                        page_cpu.append(cpu)
                    else:
                        behind = True
                stopping = self._stop.is_set()
                self._ingest(b"".join(chunks), page_cpu, None if stopping else mark)
                if stopping and not chunks:
                    break
                if not behind:
                    time.sleep(POLL_S)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _ingest(self, raw: bytes, page_cpu: list[int], mark: int | None) -> None:
        """Decode pages; process events stamped before ``mark`` (all if None), keep the rest."""
        buf = np.frombuffer(raw, np.uint8)
        recs = walk_pages(buf, self.page)
        common_type = gather(buf, recs.offset, COMMON_TYPE)
        pid = gather(buf, recs.offset, COMMON_PID)
        cpu = np.asarray(page_cpu, np.int64)[recs.page] if len(recs) else recs.page
        code = np.zeros(len(recs), np.int64)
        for type_id, c in self._fpu_code.items():
            code[common_type == type_id] = c
        fpu_rows = np.flatnonzero((code > 0) & (code != COPY_DST))
        new = np.zeros(len(fpu_rows), FPU_ROW)
        if len(fpu_rows):
            off = recs.offset[fpu_rows]
            new["ts"], new["cpu"], new["pid"] = recs.ts[fpu_rows], cpu[fpu_rows], pid[fpu_rows]
            new["event"] = code[fpu_rows]
            types = common_type[fpu_rows]
            for type_id in np.unique(types):
                sel = types == type_id
                f = self.formats[int(type_id)].fields
                load = f.get("load_fpu") or f.get("initialized")
                new["vso"][sel] = gather(buf, off[sel], f["fpu"])
                new["xfeatures"][sel] = gather(buf, off[sel], f["xfeatures"])
                new["xcomp_bv"][sel] = gather(buf, off[sel], f["xcomp_bv"])
                if load is not None:
                    new["load"][sel] = gather(buf, off[sel], load) & 1
        rare_rows = np.flatnonzero((code == 0) | (code == COPY_DST))  # a few per second
        rare = [
            self._rare(
                buf,
                int(recs.offset[i]),
                int(recs.ts[i]),
                int(cpu[i]),
                int(pid[i]),
                int(common_type[i]),
            )
            for i in rare_rows
        ]
        fpu = np.concatenate([self._carry_fpu, new])
        kept = [r for r in self._carry_rare + rare if r is not None]
        if mark is None:
            ready_fpu, self._carry_fpu = fpu, fpu[:0]
            ready_rare, self._carry_rare = kept, []
        else:
            early = fpu["ts"] < mark
            ready_fpu, self._carry_fpu = fpu[early], fpu[~early]
            ready_rare = [r for r in kept if r[0] < mark]
            self._carry_rare = [r for r in kept if r[0] >= mark]
        if len(ready_fpu) or ready_rare:
            with self._lock:
                self._process(ready_fpu, sorted(ready_rare, key=lambda r: r[0]))

    def _rare(
        self, buf: np.ndarray, off: int, ts: int, cpu: int, pid: int, type_id: int
    ) -> tuple[int, int, int, str, dict[str, Any]] | None:
        """One of the few non-switch events, decoded into Python: (ts, cpu, pid, name, fields)."""
        fmt = self.formats.get(type_id)
        if fmt is None:
            return None
        vals: dict[str, Any] = {}
        for name, f in fmt.fields.items():
            if name.startswith("common_"):
                continue
            if f.text:
                vals[name] = record_string(buf, off, f)
            elif f.size <= 8:
                vals[name] = int(gather(buf, np.array([off]), f)[0])
        return ts, cpu, pid, fmt.name, vals

    def _process(self, fpu: np.ndarray, rare: list[tuple[int, int, int, str, dict]]) -> None:
        """Aggregate in time order: the rare events one by one, the switch events in bulk."""
        pids = {int(p) for p in np.unique(fpu["pid"])} | {r[2] for r in rare}
        self._saved_tgids = None  # read at most once a round, and only for a task gone
        tgid_of = {p: self._tgid(p) for p in pids}
        rows: list[tuple[int, ...]] = []  # event rows of the rare events
        for ts, cpu, pid, name, vals in rare:
            self._rare_event(ts, cpu, pid, tgid_of.get(pid, pid), name, vals, rows)
        if rows and self.keep_events:
            self._events.append(np.array(rows, EVENT_DTYPE))
        if not len(fpu):
            return
        known = np.array(sorted(tgid_of), np.int64)
        fpu["tgid"] = np.array([tgid_of[p] for p in known], np.uint32)[
            np.searchsorted(known, fpu["pid"])
        ]
        keep = (fpu["tgid"] != self.self_pid) & (fpu["pid"] != 0)
        if self.targets is not None:
            targets = np.fromiter(self.targets, np.int64)
            keep &= np.isin(fpu["tgid"], targets) | np.isin(fpu["pid"], targets)
        fpu = fpu[keep]
        if not len(fpu):
            return
        cols = ("pid", "vso", "xfeatures", "event", "load")
        order = np.lexsort([fpu[c] for c in reversed(cols)])
        srt = fpu[order]
        change = np.zeros(len(srt), bool)
        change[0] = True
        for c in cols:
            change[1:] |= srt[c][1:] != srt[c][:-1]
        starts = np.flatnonzero(change)
        n = np.diff(np.append(starts, len(srt)))
        first = np.minimum.reduceat(srt["ts"], starts)
        last = np.maximum.reduceat(srt["ts"], starts)
        for i in np.argsort(first, kind="stable"):  # first sights in time order (prev_vso)
            row = srt[starts[i]]
            p, tg, vso = int(row["pid"]), int(row["tgid"]), int(row["vso"])
            f_ns, l_ns = int(first[i]), int(last[i])
            self._task(p, tg, None, f_ns)
            self._vso(vso, p, tg, int(row["xcomp_bv"]), f_ns)
            key = CountKey(
                p, tg, vso, int(row["xfeatures"]), int(row["event"]), int(row["load"]), 0
            )
            v = self.counts.get(key)
            if v is None:
                self.counts[key] = [int(n[i]), f_ns, l_ns]
            else:
                v[0] += int(n[i])
                v[1], v[2] = min(v[1], f_ns), max(v[2], l_ns)
        if self.keep_events:
            out = np.zeros(len(fpu), EVENT_DTYPE)
            for name in ("ts", "cpu", "pid", "tgid", "vso", "event", "xfeatures"):
                out[name] = fpu[name]
            out["load_bits"] = fpu["load"]
            if rows:  # one time order with the rare events' rows (stable: per CPU as read)
                out = np.concatenate([self._events.pop(), out])
                out = out[np.argsort(out["ts"], kind="stable")]
            self._events.append(out)

    def _rare_event(
        self,
        ns: int,
        cpu: int,
        pid: int,
        tgid: int,
        name: str,
        kv: dict[str, Any],
        rows: list[tuple[int, ...]],
    ) -> None:
        if tgid == self.self_pid or pid == 0:
            return
        if name == "x86_fpu_copy_dst":  # the child's buffer; the child is named at fork
            if self._traced(pid, tgid):
                self._pending_copy[pid] = (kv["fpu"], kv["xfeatures"], kv["xcomp_bv"])
            return
        if not self._traced(pid, tgid):
            return
        if name == "sched_process_fork":
            child = int(kv.get("child_pid", 0))
            if self.targets is not None:
                self.targets.add(child)  # followed, as the BPF backend does in the kernel
            ctgid = tgid if child_is_thread(child, tgid) else child
            self._tgids[child] = ctgid
            t = self._task(child, ctgid, kv.get("child_comm") or None, ns)
            t["ppid"], t["forked"] = tgid, 1
            t["base_runtime"] = t["base_switches"] = 0
            pending = self._pending_copy.pop(pid, None)
            if pending is not None:
                fpu, xf, xc = pending
                self._vso(fpu, child, ctgid, xc, ns)
                code = FPU_EVENT_IDS["copy_dst"]
                self._bump(CountKey(child, ctgid, fpu, xf, code, 0, 0), ns)
                rows.append(event_row(ns, cpu, child, ctgid, fpu, code, xf, 0))
        elif name == "sched_process_exec":
            t = self._task(pid, tgid, None, ns)
            t["execs"] += 1
            t["comm"] = Path(kv.get("filename", "")).name[:15] or t["comm"]
        elif name == "sched_process_exit":
            ended = self.tasks.get(pid)
            if ended is not None:
                ended["exit_ns"] = ns
                ended["comm"] = kv.get("comm") or ended["comm"]  # its name at the end
            self._tgids.pop(pid, None)  # the pid may be reused
        elif name == "signal_deliver" and kv.get("sa_handler", 0) > 1:
            code = AUX_EVENT_IDS["signal_deliver"]
            sig = int(kv.get("sig", 0))
            self._bump(CountKey(pid, tgid, 0, sig, code, 0x8000, 0), ns)
            rows.append(event_row(ns, cpu, pid, tgid, 0, code, sig, 0x8000))

    def _traced(self, pid: int, tgid: int) -> bool:
        return self.targets is None or tgid in self.targets or pid in self.targets

    def _tgid(self, pid: int) -> int:
        """A thread's process: the raw record has only the thread id (common_pid)."""
        got = self._tgids.get(pid)
        if got is None:
            got = proc_tgid(pid)
            if got is None:  # gone already: what ftrace saw (options/record-tgid)
                if self._saved_tgids is None:
                    self._saved_tgids = saved_map(self.tracefs / "saved_tgids")
                got = self._saved_tgids.get(pid, pid)
            self._tgids[pid] = got
        return got


def event_row(
    ts: int, cpu: int, pid: int, tgid: int, vso: int, event: int, xf: int, bits: int
) -> tuple[int, ...]:
    """A row of EVENT_DTYPE, in its field order."""
    return (ts, vso, xf, pid, tgid, event, bits, cpu, 0)


def child_is_thread(child: int, parent_tgid: int) -> bool:
    """A clone with CLONE_THREAD shares the parent's tgid (checked in procfs while it lives)."""
    return os.path.exists(f"/proc/{parent_tgid}/task/{child}")


def saved_map(path: Path, cast: Any = int) -> dict[int, Any]:
    """ftrace's ``saved_tgids`` / ``saved_cmdlines``: "PID VALUE" lines (tasks already gone)."""
    out: dict[int, Any] = {}
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return out
    for line in text.splitlines():
        pid, _, value = line.partition(" ")
        if pid.isdigit() and value:
            with contextlib.suppress(ValueError):
                out[int(pid)] = cast(value)
    return out
