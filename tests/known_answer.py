"""The pingpong known answer, with bounds that are counted, not guessed.

Two tasks pinned to one CPU ping-pong N round trips over pipes.  In every round each side
leaves the CPU at least once — the other side can only answer after this one is off the
CPU — and each time it leaves with its FPU registers live, so it is saved once, and
restored once when it comes back to user space.  So per task:

- at least N saves and N restores (``BELOW``: measured never below N here; 2 for the edges);
- at most as many as the task's own context switches, which the workload reads from the
  kernel (getrusage: voluntary + involuntary, so preemptions and page-ins are counted,
  not guessed): the parent's after it reaped the child, the child's whole life (RUSAGE_
  CHILDREN).  ``AFTER_RUSAGE`` is what the parent can still do after its sample: its JSON
  line wakes the reader of its stdout, which may preempt it; its exit can block (releasing
  its memory and files) and ends with one last switch; and it may be preempted once more.
  Seen here: 0 to 3 on a busy machine, with two pingpongs and their shell on both CPUs.
"""

from __future__ import annotations

BELOW = 2
AFTER_RUSAGE = 4


def switches(work: dict, who: str) -> int:
    """The context switches the workload counted for ``who`` ("parent" or "child")."""
    return int(work[f"nvcsw_{who}"]) + int(work[f"nivcsw_{who}"])


def bounds(work: dict, who: str) -> tuple[int, int]:
    """(fewest, most) saves — and restores — a correct tracer can report for ``who``."""
    return int(work["rounds"]) - BELOW, switches(work, who) + AFTER_RUSAGE


def check(work: dict, who: str, saves: int, restores: int) -> None:
    lo, hi = bounds(work, who)
    assert lo <= saves <= hi, (who, saves, (lo, hi), work)
    assert lo <= restores <= hi, (who, restores, (lo, hi), work)


def sides(work: dict) -> list[tuple[str, int]]:
    return [("parent", int(work["parent_pid"])), ("child", int(work["child_pid"]))]
