"""Per-task facts from procfs: the live end of the switch/on-CPU counters, and metadata.

The BPF side records a task's counters when first seen and when it exits; for tasks still
alive when a drain happens, the current values come from here.  Both read the same kernel
fields (``se.sum_exec_runtime``, ``nvcsw + nivcsw``), so the differences are consistent.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import psutil

from fptrace.probes.plan import MIN_TASKS


def read_text(path: str | Path) -> str | None:
    """A small text file's content (/proc, /sys, /boot/config-*), None if it cannot be read
    (a task that is gone, a file this kernel lacks); bytes that are not UTF-8 (a command
    line) are replaced, never an error: the one reader of such files in the collectors."""
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def own_rss() -> int:
    """This process's resident memory in bytes (/proc/self/statm), 0 if unreadable."""
    try:
        return int((read_text("/proc/self/statm") or "").split()[1]) * mmap.PAGESIZE
    except (ValueError, IndexError):
        return 0


def pid_max() -> int:
    """The kernel's pid space (sizes the BPF maps); the small-machine default if unreadable."""
    try:
        return int(read_text("/proc/sys/kernel/pid_max") or "")
    except ValueError:
        return MIN_TASKS


def proc_tgid(pid: int) -> int | None:
    """The process a thread id belongs to, while it lives."""
    for line in (read_text(f"/proc/{pid}/status") or "").splitlines():
        if line.startswith("Tgid:"):
            try:
                return int(line.split()[1])
            except (ValueError, IndexError):
                return None
    return None


def proc_comm(tgid: int, pid: int) -> str | None:
    """A thread's name, while it lives (as set: status's Name line escapes some characters)."""
    text = read_text(f"/proc/{tgid}/task/{pid}/comm")
    return None if text is None else text.rstrip("\n")


class TaskCounters(NamedTuple):
    runtime_ns: int  # on-CPU time
    switches: int  # voluntary + involuntary context switches
    name: str  # status's Name line: the comm, but with some characters escaped (proc_comm)


def task_counters(tgid: int, pid: int) -> TaskCounters | None:
    """A live thread's counters and current name, or None if it is gone."""
    base = f"/proc/{tgid}/task/{pid}"
    sched = read_text(f"{base}/schedstat")
    status = read_text(f"{base}/status")
    if sched is None or status is None:
        return None
    try:
        runtime = int(sched.split()[0])
    except (IndexError, ValueError):
        return None
    switches = 0
    name = ""
    for line in status.splitlines():
        if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
            switches += int(line.split(":", 1)[1])
        elif line.startswith("Name:"):
            name = line[5:].lstrip("\t")
    return TaskCounters(runtime, switches, name)


@dataclass
class TaskMeta:
    """What procfs says about a process while it lives (kept after it exits)."""

    cmdline: str | None = None
    cgroup: str | None = None
    ppid: int = 0


def task_meta(tgid: int) -> TaskMeta | None:
    cmdline = read_text(f"/proc/{tgid}/cmdline")
    if cmdline is None:
        return None
    cgroup = read_text(f"/proc/{tgid}/cgroup")
    stat = read_text(f"/proc/{tgid}/stat")
    ppid = 0
    if stat and ")" in stat:
        try:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (IndexError, ValueError):
            ppid = 0
    cg = None
    if cgroup:
        # cgroup v2: "0::/path"; keep the unified path, else the first line.
        lines = cgroup.strip().splitlines()
        unified = [ln.split("::", 1)[1] for ln in lines if ln.startswith("0::")]
        cg = unified[0] if unified else (lines[0] if lines else None)
    return TaskMeta(cmdline.replace("\0", " ").strip() or None, cg, ppid)


def descendants(tgids: list[int]) -> set[int]:
    """Every live process below ``tgids`` in the process tree (by the ppid in /proc/N/stat).

    `record -p` traces what its processes had forked before fptrace came (a server's
    workers), not only what they fork later (which the kernel side follows by itself).
    """
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = read_text(f"/proc/{name}/stat")
        if stat is None:
            continue
        try:
            ppid = int(stat.rsplit(")", 1)[1].split()[1])  # comm may hold spaces and ")"
        except (IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    found: set[int] = set()
    todo = list(tgids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found - set(tgids)


def process_running(pid: int) -> bool:
    """True while ``pid`` exists and has not exited (a zombie has finished running)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
