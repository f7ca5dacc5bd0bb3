"""collectors/recorder.Recorder across drains, on a scripted session (no kernel).

What it checks is the recorder's bookkeeping for counts that come back to a task after the
task was removed (a cache slot put them back, counting.Deltas): they stay that task's, and
its row is where the counts are — in the drain's rows (the agent's cgroup labels come from
them) and in the recording's tasks table, after a rotation too.  The agent's known answer
once fell 18,699 saves short in /metrics, all of them labelled cgroup="unknown": the late
counts of three pingpong tasks removed at the drain before.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pyarrow as pa

from fptrace.analysis.metrics import UNKNOWN, MetricTotals
from fptrace.collectors import counting
from fptrace.collectors.counting import RETIRED_MAX_AGE, CountKey, CountVal
from fptrace.collectors.recorder import Drained, Recorder
from fptrace.collectors.session import Snapshot
from fptrace.probes.plan import FPU_EVENT_IDS

PID = 4_194_305  # above PID_MAX_LIMIT (4,194,304): no task has it, no /proc entry is read
CGROUP_ID, CGROUP = 990_001, "/ctr"
XSTATE_BV = 0xE7  # AVX-512 live
SAVE = CountKey(
    PID, PID, 0xFFFF_8880_0000_1000, XSTATE_BV, FPU_EVENT_IDS["regs_deactivated"], 0, 0, 1
)


class Writer:
    """The RecordingWriter calls the recorder makes, kept in memory."""

    def __init__(self) -> None:
        self.appended: dict[str, list[dict[str, Any]]] = {}
        self.tables: dict[str, list[pa.Table]] = {}
        self.replaced: dict[str, list[dict[str, Any]]] = {}

    def append(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.appended.setdefault(name, []).extend(rows)

    def append_table(self, name: str, table: pa.Table) -> None:
        self.tables.setdefault(name, []).append(table)

    def replace(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.replaced[name] = list(rows)

    def tasks(self) -> list[dict[str, Any]]:
        """The segment's tasks table as it would be finished: appended, then the last
        replaced rows."""
        return self.appended.get("tasks", []) + self.replaced.get("tasks", [])

    def counts(self) -> pa.Table:
        return pa.concat_tables(self.tables["counts"])


class Kernel:
    """A scripted BPF session: one task, one key in the shared map, and what a cache slot
    holds of it; ``take_counts`` removes the key the way BpfSession does."""

    ring = None
    keep_events = False
    partial_events = False
    removes_tasks = True
    tif_bit_index = None

    def __init__(self) -> None:
        self.map: dict[CountKey, int] = {}
        self.slot = 0  # counts of SAVE in a cache slot, seen by take_counts' cache read
        self.task: dict[str, Any] | None = None

    def calibrate(self) -> None:
        pass

    def snapshot(self) -> Snapshot:
        counts = counting.table_of({k: CountVal(n, 1, 1) for k, n in self.map.items()})
        tasks = {PID: dict(self.task)} if self.task else {}
        return Snapshot(counts=counts, tasks=tasks, in_map=counts.ids)

    def take_counts(
        self, ids: np.ndarray, pids: np.ndarray
    ) -> tuple[counting.Gone, counting.CountTable]:
        keys = [CountKey(*(int(x) for x in k)) for k in counting.key_fields(ids).tolist()]
        popped = np.array([self.map.pop(k, 0) for k in keys], dtype=np.int64)
        left = np.array([self.slot if k == SAVE else 0 for k in keys], dtype=np.int64)
        return counting.Gone(ids, popped, left), counting.empty()

    def forget(self, tasks: dict[int, int], vsos: Any, targets: Any) -> None:
        self.task = None


def task(exited: bool) -> dict[str, Any]:
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    return {
        "tgid": PID, "ppid": 1, "comm": "pingpong", "execs": 1, "forked": 1,
        "start_ns": 1, "first_ns": now, "exit_ns": now if exited else 0,
        "freed_ns": now if exited else 0, "cgroup_id": CGROUP_ID,
        "base_runtime": 0, "base_switches": 0, "end_runtime": 10, "end_switches": 5,
    }  # fmt: skip


def recorder(kernel: Kernel, writer: Writer, drained: list[Drained]) -> Recorder:
    rec = Recorder(writer, kernel, None, on_drain=drained.append)  # type: ignore[arg-type]
    rec.cgroups.note(CGROUP_ID, CGROUP)
    return rec


def removed_with_a_late_count(kernel: Kernel, rec: Recorder) -> None:
    """The task saves 5 times and ends with 2 more in a slot: the drain that removes it
    counts 7.  Then a count it had on its way from the slot into the map when the map was
    read comes back: 1 more, the task's own, at a later drain."""
    kernel.task = task(exited=False)
    kernel.map[SAVE] = 5
    rec.drain()
    kernel.task, kernel.slot = task(exited=True), 2
    rec.drain()
    assert kernel.task is None and SAVE not in kernel.map  # removed
    kernel.slot = 0
    kernel.map[SAVE] = 3  # the slot's 2, and the 1 that was on its way


def saves(table: pa.Table) -> dict[int, int]:
    """Saves per task id in counts rows."""
    out: dict[int, int] = {}
    for t, n in zip(
        table.column("task").to_pylist(), table.column("count").to_pylist(), strict=True
    ):
        out[t] = out.get(t, 0) + n
    return out


def test_a_late_count_is_its_ended_task_s_in_the_drain_and_the_segment():
    kernel, writer, drained = Kernel(), Writer(), []
    rec = recorder(kernel, writer, drained)
    removed_with_a_late_count(kernel, rec)
    rec.drain()
    who = rec.deltas.owners(counting.ids_of([SAVE]))[0]
    assert saves(writer.counts()) == {who: 8}  # 5 + 2 + 1: none twice, none lost
    late = drained[-1]
    assert saves(late.counts) == {who: 1}
    # The drain's rows name the task, so its cgroup is known: the agent's label.
    assert [(r["task"], r["cgroup"]) for r in late.tasks] == [(who, CGROUP)]
    totals = MetricTotals()
    for d in drained:
        totals.add(d.counts, d.tasks, None)
    assert {k: c.shown for k, c in totals.saves.items()} == {(CGROUP, "avx512"): 8}
    assert not any(cg == UNKNOWN for cg, _ in totals.saves)
    # The segment has its row once (written when it ended), not once per late count.
    assert [r["task"] for r in writer.tasks()] == [who]


def test_a_late_count_after_a_rotation_brings_its_task_s_row_into_the_new_segment():
    kernel, first, drained = Kernel(), Writer(), []
    rec = recorder(kernel, first, drained)
    removed_with_a_late_count(kernel, rec)
    second = Writer()
    rec.rotate(second)  # type: ignore[arg-type]
    rec.drain()
    who = rec.deltas.owners(counting.ids_of([SAVE]))[0]
    assert saves(second.counts()) == {who: 1}
    rows = second.tasks()
    assert [(r["task"], r["cgroup"]) for r in rows] == [(who, CGROUP)]
    # It ended before this segment began and did nothing in it.
    assert {
        k: rows[0][k] for k in ("first_ns", "exit_ns", "switches", "oncpu_ns")
    } == dict.fromkeys(("first_ns", "exit_ns", "switches", "oncpu_ns"), 0)
    rec.drain()
    assert len(second.tasks()) == 1  # not again at the next drain


def test_an_ended_task_s_row_is_let_go_once_nothing_can_come_back_to_it():
    """Kept while a removed key of it is (counting.Deltas.owned): memory stays bounded by
    what cache slots hold, however many tasks come and go."""
    kernel, writer, drained = Kernel(), Writer(), []
    rec = recorder(kernel, writer, drained)
    removed_with_a_late_count(kernel, rec)
    who = rec.deltas.owners(counting.ids_of([SAVE]))[0]
    assert list(rec.ended_rows) == [who]
    del kernel.map[SAVE]
    for _ in range(RETIRED_MAX_AGE + 1):
        rec.drain()
    assert rec.ended_rows == {} and rec.ended_here == set()
