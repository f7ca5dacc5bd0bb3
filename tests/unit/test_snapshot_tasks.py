"""BpfSession.snapshot's task rows, on a stand-in tasks map (no kernel).

The tasks map is read before the counts (collectors/bpf_session.py says why), so a task
that begins between the two reads has counts and no entry in the first read.  At a
rotation of `fptrace agent` its counts then went into one segment and its row into the
next (3 of 21 agent runs here), and its saves were labelled cgroup="unknown".  The
snapshot reads such tasks once more, after the counts.
"""

from __future__ import annotations

import ctypes

from fptrace.collectors import counting
from fptrace.collectors.bpf_session import BpfSession
from fptrace.collectors.counting import CountKey, CountVal
from fptrace.collectors.session import Snapshot


class TaskInfo(ctypes.Structure):
    """A few of struct task_info's fields (fptrace.bpf.c), comm among them."""

    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("ppid", ctypes.c_uint32),
        ("exit_ns", ctypes.c_uint64),
        ("comm", ctypes.c_char * 16),
        ("cgroup_id", ctypes.c_uint64),
    ]


class TasksMap:
    Key = ctypes.c_uint32
    Leaf = TaskInfo

    def __init__(self, entries: dict[int, TaskInfo]) -> None:
        self.entries = entries
        self.lookups: list[int] = []

    def lookup(self, pid: int) -> TaskInfo | None:
        self.lookups.append(pid)
        return self.entries.get(pid)


def session(tasks: TasksMap) -> BpfSession:
    s = BpfSession.__new__(BpfSession)  # no program: only its maps are used here
    s.maps = {"tasks": tasks}  # type: ignore[dict-item]
    return s


def key(pid: int) -> CountKey:
    return CountKey(pid, pid, 0x1000 + pid, 0xE7, 1, 0, 0, 1)


def test_a_task_counted_after_the_tasks_read_gets_its_row_in_the_same_snapshot():
    tasks = TasksMap(
        {
            7: TaskInfo(7, 1, 0, b"early", 11),
            8: TaskInfo(8, 7, 0, b"late", 12),
        }
    )
    snap = Snapshot()
    snap.tasks[7] = {"tgid": 7, "ppid": 1, "exit_ns": 0, "comm": "early", "cgroup_id": 11}
    # 8 began after the tasks read; 9's entry could not be made (a full tasks map).
    snap.counts = counting.table_of({key(p): CountVal(3, 1, 1) for p in (7, 8, 9)})
    session(tasks)._add_late_tasks(snap)
    assert sorted(tasks.lookups) == [8, 9]  # only the ones missing: not one lookup per task
    assert snap.tasks[8] == {"tgid": 8, "ppid": 7, "exit_ns": 0, "comm": "late", "cgroup_id": 12}
    assert 9 not in snap.tasks


def test_nothing_is_read_again_when_every_counted_task_has_its_row():
    tasks = TasksMap({})
    snap = Snapshot()
    snap.tasks[7] = {"tgid": 7}
    snap.counts = counting.table_of({key(7): CountVal(1, 1, 1)})
    session(tasks)._add_late_tasks(snap)
    assert tasks.lookups == [] and list(snap.tasks) == [7]
