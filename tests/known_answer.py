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

Restores have ``NO_SWITCH_RESTORES`` more room: a task's first return to user space after
fork restores the registers fpu_clone gave it, and each exec resets them and sets
TIF_NEED_FPU_LOAD (fpu_flush_thread), neither after a switch of the task's own.  The
parent is the pingpong's process from its fork on: made by fptrace (fork, exec) or by
the agent test's shell (fork, exec sh, exec pingpong), so 1 + 2 at most; the child 1.
Seen: 20,009 restores for 20,004 switches (fork, two execs at XSTATE_BV 0, and two after
the sample), over the bound before this room was made.
"""

from __future__ import annotations

BELOW = 2
AFTER_RUSAGE = 4
NO_SWITCH_RESTORES = {"parent": 3, "child": 1}


def switches(work: dict, who: str) -> int:
    """The context switches the workload counted for ``who`` ("parent" or "child")."""
    return int(work[f"nvcsw_{who}"]) + int(work[f"nivcsw_{who}"])


def bounds(work: dict, who: str, what: str = "saves") -> tuple[int, int]:
    """(fewest, most) saves (or context switches) — or, with ``what="restores"``,
    restores — a correct tracer can report for ``who``."""
    room = NO_SWITCH_RESTORES[who] if what == "restores" else 0
    return int(work["rounds"]) - BELOW, switches(work, who) + AFTER_RUSAGE + room


def check(work: dict, who: str, saves: int, restores: int) -> None:
    lo, hi = bounds(work, who)
    assert lo <= saves <= hi, (who, saves, (lo, hi), work)
    lo, hi = bounds(work, who, "restores")
    assert lo <= restores <= hi, (who, restores, (lo, hi), work)


def sides(work: dict) -> list[tuple[str, int]]:
    return [("parent", int(work["parent_pid"])), ("child", int(work["child_pid"]))]
