"""Snapshots into recording rows: the per-run state between drains (task ids, VSO names,
the deltas of the cumulative kernel counts, what removed tasks leave behind)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fptrace.collectors import counting
from fptrace.collectors.cgroups import CgroupPaths, id_of
from fptrace.collectors.columns import (
    VsoNamer,
    event_names,
    factorize,
    load_fpu_column,
    reason_column,
)
from fptrace.collectors.counting import Deltas
from fptrace.collectors.events import EventStream, ParsedEvents
from fptrace.collectors.procfs import (
    TaskMeta,
    own_rss,
    proc_comm,
    task_counters,
    task_meta,
)
from fptrace.collectors.session import Session, Snapshot
from fptrace.collectors.stacks import StackCollector
from fptrace.collectors.task_ids import TaskIds
from fptrace.recording.writer import RecordingWriter
from fptrace.xstate import Layout, unsized_vso_size


@dataclass(frozen=True)
class Drained:
    """One drained interval, for a live view: its counts rows (Arrow, as written), the
    tasks' rows, and how long the interval really was."""

    counts: pa.Table
    tasks: list[dict[str, Any]]
    span_s: float
    layout: Layout | None
    drops: Mapping[str, int] | None = None  # the kernel side's losses so far (cumulative)


DrainListener = Callable[[Drained], None]


class Recorder:
    """Turns snapshots into recording rows; owns the per-run state between drains."""

    def __init__(
        self,
        writer: RecordingWriter,
        session: Session,
        layout: Layout | None,
        xstate: Mapping[str, Any] | None = None,
        on_drain: DrainListener | None = None,
    ):
        self.on_drain = on_drain
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
        # Names of live tasks renamed since the kernel's record of them (at fork or exec);
        # the kernel records the name again at exit.
        self.names: dict[int, str] = {}
        self.cgroups = CgroupPaths()
        # Ended tasks' final rows, while counts can still come back to them (a removed key a
        # cache slot still held: counting.Deltas owners), and which of them this segment's
        # tasks table has: such counts find their task's row in the segment (a rotation in
        # between) and in the drain's rows (the agent's cgroup labels).
        self.ended_rows: dict[int, dict[str, Any]] = {}
        self.ended_here: set[int] = set()
        # pid -> (runtime, switches) at the last rotation: a segment counts its own span.
        self.rebased: dict[int, tuple[int, int]] = {}
        self.total_events = 0
        self.last: Snapshot | None = None
        # Events come from the BPF ring (a consumer thread), or straight from the ftrace parser.
        self.events: Any = None
        if session.ring is not None:
            self.events = EventStream(session.ring, session.partial_events)
        elif session.keep_events:
            self.events = ParsedEvents(session)
        self.events_written = 0
        maps = getattr(session, "maps", {})
        self.stacks = StackCollector(maps) if "stack_counts" in maps else None

    def rotate(self, writer: RecordingWriter) -> None:
        """Go on into ``writer``, a new recording, right after a drain: the probes stay
        attached and the counts are deltas, so what the kernel counts from now on goes to the
        new one, and nothing twice.  Its times start at this drain; its tables have every
        live task and VSO again, with the switches and on-CPU time of its own span."""
        self.writer = writer
        self.t0 = self.drained_at
        self.interval = 0
        self.interval_start = 0
        self.lateness_ns = []
        self.total_events = 0
        self.seen_vsos = set()
        for pid, (runtime, switches) in self.live_counters.items():
            self.rebased[pid] = (runtime, switches)
        # An ended task is in the new segment only if counts come back to it: it ended
        # before the segment began, and did nothing in it.
        zero = dict.fromkeys(("first_ns", "exit_ns", "switches", "oncpu_ns"), 0)
        self.ended_rows = {t: row | zero for t, row in self.ended_rows.items()}
        self.ended_here = set()

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
        taken, deltas = self.deltas.take(snap.counts, gone, snap.held)
        if gone is not None and len(gone):  # before _forget retires their pids
            # A key back after an earlier removal has its owner; the others are the task's
            # that has their pid now.
            ids = gone.ids[self.deltas.owners(gone.ids) < 0]
            pids = counting.key_fields(ids)["pid"].astype(np.int64)
            self.deltas.claim(ids, self.tasks.of_pids(pids))
        counts = self._counts_table(taken, deltas, now, bit)
        self.writer.append_table("counts", counts)
        events = int(deltas.sum())
        span_s = (now - self.interval_start) / 1e9
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
        ended = [r for r in rows if r["pid"] in final]
        late = self._late_owners(counts, rows)
        self.writer.append("tasks", ended + [r for r in late if r["task"] not in self.ended_here])
        self.writer.replace("tasks", [r for r in rows if r["pid"] not in final])
        self._keep_ended(ended, late)
        if self.stacks is not None:
            self.stacks.drain(self.tasks)  # maps and task ids of new samples, while they live
        if self.on_drain is not None:  # `fptrace top`: this interval, as it was written
            self.on_drain(Drained(counts, rows + late, span_s, self.layout, dict(snap.drops)))
        self._forget(snap, final)
        self.interval += 1
        self.total_events += events
        return events

    def _late_owners(self, counts: pa.Table, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rows of ended tasks this interval's counts came back to (not in ``rows``)."""
        if not self.ended_rows or not counts.num_rows:
            return []
        here = {r["task"] for r in rows}
        ids = np.unique(counts.column("task").to_numpy()).tolist()
        return [self.ended_rows[t] for t in ids if t not in here and t in self.ended_rows]

    def _keep_ended(self, ended: list[dict[str, Any]], late: list[dict[str, Any]]) -> None:
        """Keep the rows of tasks that own removed keys (counting.Deltas.owned); let go of
        those whose keys are all forgotten."""
        for r in ended:
            if r["task"] in self.deltas.owned:  # else nothing can come back to it
                self.ended_rows[r["task"]] = r
                self.ended_here.add(r["task"])
        self.ended_here.update(r["task"] for r in late)
        for t in self.deltas.take_released():
            self.ended_rows.pop(t, None)
            self.ended_here.discard(t)

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
        named by the task it belonged to (``Deltas.owner``) while no other task has the
        pid.  Once one has, what the key gains is that task's: the kernel gave the pid
        again, and with it the dead task's task_struct (so the same fpstate address, the
        same key), and a cache slot that still held the old key now counts the new task's
        events in it.  (Of the old task's own, only a count on its way from a slot to the
        map as the key was removed comes back, microseconds after; a new task with its pid
        that soon would need a pid wrap in those microseconds.)
        """
        keys = taken.keys
        pid = keys["pid"].astype(np.int64)
        task = self.deltas.owners(taken.ids)
        named = (task < 0) | self.tasks.held(pid)
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
                "vso": self._vso_column(keys["vso"], task, factorize).cast(pa.string()),
                "event": event_names(event).cast(pa.string()),
                "xfeatures": keys["xfeatures"],
                "load_fpu": load_fpu_column(keys["load_bits"], event, bit),
                "arg": keys["arg"].astype(np.uint32),
                "count": deltas.astype(np.int64),
                "first_ns": np.where(first != 0, np.maximum(first - self.t0, 0), 0),
                # Hits are not timed in the kernel (too costly): last seen no later than
                # the end of this interval, and no earlier than the kernel's own mark.
                "last_ns": np.maximum(np.where(last != 0, np.maximum(last - self.t0, 0), 0), now),
                "reason": reason_column(keys["reason"]).cast(pa.string()),
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
            self.rebased.pop(pid, None)
            self.names.pop(pid, None)
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
        self.cgroups.resolve({t.get("cgroup_id") or 0 for t in snap.tasks.values()})
        for pid, t in snap.tasks.items():
            tgid = t["tgid"] or pid
            # procfs once per process, and again after an exec changed its command line
            if not t["exit_ns"] and self.meta_execs.get(tgid) != t["execs"]:
                meta = task_meta(tgid)
                if meta is not None:
                    self.meta[tgid] = meta
                    self.meta_execs[tgid] = t["execs"]
            meta = self.meta.get(tgid, TaskMeta())
            comm = t["comm"]
            if t["exit_ns"]:
                runtime, switches = t["end_runtime"], t["end_switches"]
            else:
                live = task_counters(tgid, pid)
                if live is not None:
                    self.live_counters[pid] = (live.runtime_ns, live.switches)
                    if live.name != comm:  # renamed (prctl PR_SET_NAME), or escaped by status
                        self.names[pid] = proc_comm(tgid, pid) or self.names.get(pid, comm)
                    else:
                        self.names.pop(pid, None)
                comm = self.names.get(pid, comm)
                runtime, switches = self.live_counters.get(
                    pid, (t["base_runtime"], t["base_switches"])
                )
            base_runtime, base_switches = self.rebased.get(
                pid, (t["base_runtime"], t["base_switches"])
            )
            # The kernel's id where it has one (BPF: where the task was last seen), else the
            # process's cgroup when procfs was read (the ftrace backend).
            cgid = t.get("cgroup_id") or id_of(self.cgroups.root, meta.cgroup)
            rows.append(
                {
                    "task": self.tasks(pid),
                    "pid": pid,
                    "tgid": tgid,
                    "ppid": t["ppid"] or meta.ppid,
                    "comm": comm,
                    "cmdline": meta.cmdline,
                    "cgroup": self.cgroups.path(cgid, meta.cgroup),
                    "cgroup_id": cgid,
                    "switches": max(switches - base_switches, 0),
                    "oncpu_ns": max(runtime - base_runtime, 0),
                    "first_ns": self.rel(t["first_ns"]),
                    "exit_ns": self.rel(t["exit_ns"]) if t["exit_ns"] else None,
                    "execs": t["execs"],
                    "forked": bool(t["forked"]),
                }
            )
        return rows
