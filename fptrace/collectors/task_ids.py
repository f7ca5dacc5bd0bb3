"""Task identity within one recording: a pid names a task only from its start to its end.

The kernel reuses pids, so the recording gives each task its own id (in the order fptrace
first saw it) and keys counts, tasks and VSOs on it.  Counts are named at the drain that
reads them, while the task is still known.  Events are not: one can wait in a CPU's
unfinished batch (collectors/ring.py) for as long as that CPU is quiet, and reach user
space after its task has exited, been removed from the maps and had its pid reused.  So an
event is named by *when* it happened: the pid's tasks that are gone keep their span
[start, until] here until no event older than ``until`` can still arrive.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping

import numpy as np


class TaskIds:
    """pid -> the recording's task id, now and (for events that arrive late) in the past."""

    def __init__(self, history: bool = True) -> None:
        self.history = history  # keep ended tasks (only events need them)
        self.now: dict[int, tuple[int, int]] = {}  # pid -> (start_ns, task id)
        self.past: dict[int, list[tuple[int, int, int]]] = {}  # pid -> [(until, start, id)]
        self.next = 1

    def __call__(self, pid: int) -> int:
        """The id of the task that has ``pid`` now (one is made if the pid is unknown: a
        task counted whose entry could not be recorded, the task map being full)."""
        known = self.now.get(pid)
        if known is None:
            known = self.now[pid] = (0, self._new())
        return known[1]

    def _new(self) -> int:
        self.next += 1
        return self.next - 1

    def identify(self, starts: Mapping[int, int]) -> None:
        """Take the start times of the tasks in a snapshot (pid -> start_ns, 0 if not read):
        a pid with a new start time is a new task, and the one before it has ended."""
        for pid, start in starts.items():
            known = self.now.get(pid)
            if known is not None and (not start or known[0] == start):
                continue
            if known is not None and known[0] == 0:  # its start time was not read yet
                self.now[pid] = (start, known[1])
                continue
            if known is not None:  # pid reused between two snapshots: the old task ended
                self._keep(pid, known, until=start)
            self.now[pid] = (start, self._new())

    def retire(self, pid: int, until: int) -> None:
        """The task that has ``pid`` has ended (its entries were removed at ``until``)."""
        known = self.now.pop(pid, None)
        if known is not None:
            self._keep(pid, known, until)

    def _keep(self, pid: int, known: tuple[int, int], until: int) -> None:
        if self.history:
            bisect.insort(self.past.setdefault(pid, []), (until, known[0], known[1]))

    def prune(self, horizon: int) -> None:
        """Forget ended tasks whose every event has arrived: no event older than
        ``horizon`` can still come."""
        for pid in [p for p, spans in self.past.items() if spans[0][0] < horizon]:
            spans = [s for s in self.past[pid] if s[0] >= horizon]
            if spans:
                self.past[pid] = spans
            else:
                del self.past[pid]

    def of_events(self, pids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The task id of each event (pid, ts): the task that had the pid at that time."""
        import pandas as pd  # only --events needs it: kept off every record's start-up

        out = np.full(len(pids), -1, dtype=np.int64)
        if self.past:
            inv, upids = pd.factorize(pids)
            in_past = np.fromiter((int(p) in self.past for p in upids), bool, len(upids))
            rows = np.flatnonzero(in_past[inv])
            rows = rows[np.argsort(pids[rows], kind="stable")]
            groups = np.split(rows, np.flatnonzero(np.diff(pids[rows])) + 1) if rows.size else []
            for grp in groups:
                spans = self.past[int(pids[grp[0]])]
                until = np.array([s[0] for s in spans], dtype=np.uint64)
                start = np.array([s[1] for s in spans], dtype=np.uint64)
                ids = np.array([s[2] for s in spans], dtype=np.int64)
                when = ts[grp].astype(np.uint64)
                k = np.searchsorted(until, when, side="left")  # the first span not over
                inside = k < len(spans)
                kk = np.minimum(k, len(spans) - 1)
                inside &= start[kk] <= when  # 0: start not read, the span is open below
                out[grp[inside]] = ids[kk[inside]]
        rest = out < 0
        if rest.any():
            out[rest] = self.of_pids(pids[rest])
        return out

    def held(self, pids: np.ndarray) -> np.ndarray:
        """For each pid, whether a task that has not ended has it now."""
        if not len(pids) or not self.now:
            return np.zeros(len(pids), dtype=bool)
        return np.isin(pids, np.fromiter(self.now, dtype=np.int64, count=len(self.now)))

    def of_pids(self, pids: np.ndarray) -> np.ndarray:
        """The id of the task that has each pid now (:meth:`__call__` for each distinct
        pid, which makes one for an unknown pid)."""
        upids, inv = np.unique(pids, return_inverse=True)
        return np.array([self(int(p)) for p in upids], dtype=np.int64)[inv.reshape(-1)]
