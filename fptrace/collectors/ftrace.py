"""The ftrace backend (`record --backend ftrace`): no BCC, no compiler, no headers.

In the spirit of perf-tools: a private tracing instance under tracefs, the same tracepoints
enabled there, ``trace_pipe`` read with the ``mono`` clock (so times match the BPF backend),
and the same cumulative snapshots as :class:`~fptrace.collectors.bpf_session.BpfSession`,
so the recorder and the recording are unchanged.  Pointers in ftrace's text are already
hashed by the kernel (``%p``); fptrace hashes them again with its per-run key.

What it cannot see, and says so: ``fpstate->size``/``user_size`` (sizes come from
``xcomp_bv`` and CPUID), ``is_valloc``/``is_guest``, and exact end-of-life switch counters.
Parsing is in Python, so at very high event rates the kernel buffer overruns; overruns are
read from the instance's per-CPU stats and reported as drops.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from fptrace.collectors.bpf_session import CountKey, CountVal, Snapshot
from fptrace.collectors.procfs import process_running, task_counters
from fptrace.collectors.ring import EVENT_DTYPE
from fptrace.errors import EnvironmentProblem
from fptrace.probes.plan import AUX_EVENT_IDS, FPU_EVENT_IDS
from fptrace.xstate import COMPACTED_BIT, Layout, unsized_vso_size

INSTANCE_PREFIX = "fptrace-"
LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+\(\s*(?P<tgid>[\d-]+)\)\s+\[(?P<cpu>\d+)\]\s+\S+\s+"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<rest>.*)$"
)
FPU = re.compile(
    r"x86/fpu: (?P<fpu>[0-9a-f]+) (?:load|initialized): (?P<load>\d+) "
    r"xfeatures: (?P<xf>[0-9a-f]+) xcomp_bv: (?P<xc>[0-9a-f]+)"
)
KV = re.compile(r"(\w+)=(\S+)")
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


def remove_instance(inst: Path) -> None:
    with contextlib.suppress(OSError):
        (inst / "tracing_on").write_text("0")
        (inst / "events" / "enable").write_text("0")
    with contextlib.suppress(OSError):
        inst.rmdir()


class FtraceSession:
    """A private tracefs instance with the FPU, scheduler and signal events enabled."""

    ring = None  # no BPF ring: with --events the parser keeps the rows itself (take_events)
    calibrating = False
    tif_bit_index = 0  # load_bits carry the record's own load_fpu in bit 0
    load_method = "the tracepoint record's own load_fpu field (ftrace)"

    def __init__(
        self,
        tracefs: Path,
        layout: Layout | None,
        self_pid: int,
        events: bool = False,
        xstate: dict[str, Any] | None = None,
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
        self._events: list[tuple[int, int, int, int, int, int, int, int]] = []
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

    def add_targets(self, tgids: list[int]) -> None:
        """Trace these processes and everything they fork.

        Filtered here, not with set_event_pid: ftrace decides that at sched_switch for the
        *next* task, while regs_deactivated fires during the switch for the previous one, so
        a kernel pid filter drops a traced task's saves whenever the next task is untraced.
        """
        self.targets = set(tgids)

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

    def take_events(self) -> np.ndarray:
        """The events parsed since the last call, as ring-format records (ns are monotonic)."""
        with self._lock:
            rows, self._events = self._events, []
        out = np.zeros(len(rows), dtype=EVENT_DTYPE)
        if rows:
            cols = list(zip(*rows, strict=True))
            for name, col in zip(
                ("ts", "cpu", "pid", "tgid", "vso", "event", "xfeatures", "load_bits"),
                cols,
                strict=True,
            ):
                out[name] = np.array(col, dtype=EVENT_DTYPE[name])
        return out

    @property
    def tif_bit(self) -> int | None:
        return None

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join()
        remove_instance(self.inst)

    def snapshot(self) -> Snapshot:
        with self._lock:
            counts: dict[CountKey, CountVal] = {
                k: (v[0], v[1], v[2]) for k, v in self.counts.items()
            }
            vsos = {k: dict(v) for k, v in self.vsos.items()}
            tasks = {k: dict(v) for k, v in self.tasks.items()}
        for pid, t in tasks.items():  # the live end of the counters, as BpfSession gives
            if t["exit_ns"] and t["end_switches"]:
                continue
            live = task_counters(t["tgid"] or pid, pid)
            if live is not None:
                t["end_runtime"], t["end_switches"] = live
                with self._lock:
                    self.tasks[pid]["end_runtime"], self.tasks[pid]["end_switches"] = live
        return Snapshot(
            counts=counts, vsos=vsos, tasks=tasks, drops={"ftrace_overrun": self.overruns()}
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

    def _read(self) -> None:
        fd = os.open(self.inst / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        buf = b""
        try:
            while True:
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    chunk = b""
                if chunk:
                    buf += chunk
                    lines = buf.split(b"\n")
                    buf = lines.pop()
                    with self._lock:
                        for raw in lines:
                            self._line(raw.decode("utf-8", "replace"))
                elif self._stop.is_set():
                    break
                else:
                    time.sleep(0.005)
        finally:
            os.close(fd)

    def _task(self, pid: int, tgid: int, comm: str, ns: int) -> dict[str, Any]:
        t = self.tasks.get(pid)
        if t is None:
            base = task_counters(tgid, pid) or (0, 0)
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

    def _line(self, text: str) -> None:
        m = LINE.match(text)
        if m is None:
            return
        pid, cpu_tgid = int(m["pid"]), m["tgid"]
        tgid = int(cpu_tgid) if cpu_tgid.isdigit() else pid
        if tgid == self.self_pid or pid == 0:
            return
        if self.targets is not None and tgid not in self.targets and pid not in self.targets:
            return
        ns = round(float(m["ts"]) * 1e9)
        event, rest = m["event"], m["rest"]
        if event.startswith("x86_fpu_"):
            f = FPU.search(rest)
            if f is None:
                return
            short = event.removeprefix("x86_fpu_")
            code = FPU_EVENT_IDS.get(short)
            if code is None:
                return
            fpu, xf, xc = int(f["fpu"], 16), int(f["xf"], 16), int(f["xc"], 16)
            load = int(f["load"]) & 1
            if short == "copy_dst":  # the child's buffer; the child is named at fork
                self._pending_copy[pid] = (fpu, xf, xc)
                return
            self._task(pid, tgid, m["comm"], ns)
            self._vso(fpu, pid, tgid, xc, ns)
            self._bump((pid, tgid, fpu, xf, code, load, 0), ns)
            if self.keep_events:
                self._events.append((ns, int(m["cpu"]), pid, tgid, fpu, code, xf, load))
            return
        kv = dict(KV.findall(rest))
        if event == "sched_process_fork":
            child = int(kv.get("child_pid", 0))
            if self.targets is not None:
                self.targets.add(child)  # followed, as the BPF backend does in the kernel
            t = self._task(child, 0, kv.get("child_comm", m["comm"]), ns)
            t["ppid"], t["forked"] = tgid, 1
            t["base_runtime"] = t["base_switches"] = 0
            pending = self._pending_copy.pop(pid, None)
            if pending is not None:
                fpu, xf, xc = pending
                ctgid = tgid if child_is_thread(child, tgid) else child
                t["tgid"] = ctgid
                self._vso(fpu, child, ctgid, xc, ns)
                code = FPU_EVENT_IDS["copy_dst"]
                self._bump((child, ctgid, fpu, xf, code, 0, 0), ns)
                if self.keep_events:
                    self._events.append((ns, int(m["cpu"]), child, ctgid, fpu, code, xf, 0))
        elif event == "sched_process_exec":
            t = self._task(pid, tgid, m["comm"], ns)
            t["execs"] += 1
            t["comm"] = Path(kv.get("filename", m["comm"])).name[:15]
        elif event == "sched_process_exit":
            t = self.tasks.get(pid)
            if t is not None:
                t["exit_ns"] = ns
        elif event == "signal_deliver":
            handler = int(kv.get("sa_handler", "0"), 16)
            if handler > 1:
                sig = int(kv.get("sig", 0))
                code = AUX_EVENT_IDS["signal_deliver"]
                self._bump((pid, tgid, 0, sig, code, 0x8000, 0), ns)
                if self.keep_events:
                    self._events.append((ns, int(m["cpu"]), pid, tgid, 0, code, sig, 0x8000))


def child_is_thread(child: int, parent_tgid: int) -> bool:
    """A clone with CLONE_THREAD shares the parent's tgid (checked in procfs while it lives)."""
    return os.path.exists(f"/proc/{parent_tgid}/task/{child}")
