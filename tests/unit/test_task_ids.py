"""Task ids: a pid names a task only over its life; late events find the task they came from."""

from __future__ import annotations

import numpy as np

from fptrace.collectors.task_ids import TaskIds

MS = 1_000_000


def ev(*pairs: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    pids = np.array([p for p, _ in pairs], dtype=np.uint32)
    ts = np.array([t for _, t in pairs], dtype=np.uint64)
    return pids, ts


def test_a_reused_pid_is_a_new_task_and_late_events_go_to_the_old_one():
    ids = TaskIds()
    ids.identify({7: 100 * MS, 8: 110 * MS})
    first, other = ids(7), ids(8)
    ids.retire(7, until=300 * MS)  # exited, removed from the maps at the 300 ms drain
    ids.identify({7: 350 * MS})  # the kernel gave pid 7 to a new task
    second = ids(7)
    assert len({first, other, second}) == 3
    # A batch that waited on a quiet CPU: pid 7's events from before and after the reuse.
    got = ids.of_events(*ev((7, 150 * MS), (8, 160 * MS), (7, 299 * MS), (7, 400 * MS)))
    assert got.tolist() == [first, other, first, second]
    # Older than the first task's start: from a task before it, whatever it was, not it.
    assert ids.of_events(*ev((7, 50 * MS))).tolist() != [first]


def test_a_pid_reused_between_two_snapshots_ends_the_old_task_at_the_new_start():
    ids = TaskIds()
    ids.identify({7: 100 * MS})
    first = ids(7)
    ids.identify({7: 200 * MS})  # never seen exited: the new start tells
    second = ids(7)
    got = ids.of_events(*ev((7, 150 * MS), (7, 199 * MS), (7, 250 * MS)))
    assert got.tolist() == [first, first, second] and first != second


def test_a_start_time_read_late_keeps_the_id():
    ids = TaskIds()
    early = ids(9)  # counted before its task entry was read
    ids.identify({9: 0})
    ids.identify({9: 120 * MS})
    assert ids(9) == early


def test_ended_tasks_go_once_no_older_event_can_come():
    ids = TaskIds()
    ids.identify({7: 100 * MS, 8: 100 * MS})
    first = ids(7)
    ids.retire(7, until=300 * MS)
    ids.retire(8, until=500 * MS)
    ids.prune(300 * MS)  # an event at 300 ms could still be read
    assert ids.of_events(*ev((7, 250 * MS))).tolist() == [first]
    ids.prune(301 * MS)
    assert 7 not in ids.past and 8 in ids.past
    late = ids.of_events(*ev((7, 250 * MS)))  # too late: a task of its own, not another's
    assert late.tolist() != [first]


def test_without_events_nothing_ended_is_kept():
    ids = TaskIds(history=False)
    ids.identify({7: 100 * MS})
    ids.retire(7, until=300 * MS)
    ids.identify({8: 100 * MS})
    ids.identify({8: 200 * MS})
    assert ids.past == {} and 7 not in ids.now


def test_many_events_are_named_in_bulk_by_their_time():
    rng = np.random.default_rng(1)
    ids = TaskIds()
    old, new = {}, {}
    for pid in range(1, 200):
        ids.identify({pid: pid * MS})
        old[pid] = new[pid] = ids(pid)
    for pid in range(1, 200, 3):  # a third end at 1 s, and their pids come back at 2 s
        ids.retire(pid, until=1000 * MS)
        ids.identify({pid: 2000 * MS})
        new[pid] = ids(pid)
    pids = rng.integers(1, 200, 50_000).astype(np.uint32)
    ts = rng.integers(500, 3000, 50_000).astype(np.uint64) * MS
    pairs = zip(pids.tolist(), ts.tolist(), strict=True)
    want = [old[p] if t <= 1000 * MS else new[p] for p, t in pairs]
    assert ids.of_events(pids, ts).tolist() == want
