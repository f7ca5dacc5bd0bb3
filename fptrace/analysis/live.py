"""One drained interval as rates, for `fptrace top`: per task, process or cgroup, the saves
and bytes per second, the widest vector level live at a save, and the estimated CPU time.

The same definitions as every other view (analysis/measures.py: a save is
regs_deactivated − dropped, a restore a regs_activated with load_fpu set; the cost through
the cost model), applied to one interval's counts rather than a whole recording.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from fptrace.analysis.cost import CostModel
from fptrace.analysis.measures import SAVE_SIGN
from fptrace.xstate import VECTOR_LEVELS, Layout

GROUPINGS = ("task", "process", "cgroup")
SORTS = ("saves", "bytes", "cpu")


@dataclass
class LiveRow:
    key: str  # pid, tgid or cgroup path
    name: str  # comm (a process: its main thread's), or the cgroup path
    saves_per_s: float
    bytes_per_s: float
    widest: str  # the widest level live at a save in this interval ("" if none)
    cpu_ns_per_s: float  # estimated save + restore time per second
    threads: int


def in_cgroups(path: str | None, cgroups: list[str]) -> bool:
    """Whether a task's cgroup ``path`` is one of ``cgroups`` or below one."""
    if not path:
        return False
    return any(path == c.rstrip("/") or path.startswith(c.rstrip("/") + "/") for c in cgroups)


def _level(xf: int) -> str:
    widest = ""
    for name, mask in VECTOR_LEVELS.items():
        if xf & mask:
            widest = name
    return widest


def live_rows(
    counts: pa.Table,
    tasks: Iterable[Mapping[str, Any]],
    span_s: float,
    layout: Layout | None,
    model: CostModel,
    by: str = "task",
    sort: str = "saves",
    cgroups: list[str] | None = None,
) -> list[LiveRow]:
    """The interval's rows grouped ``by`` task, process or cgroup, busiest first; with
    ``cgroups``, only the tasks in those cgroups (paths) or below them."""
    info = {int(t["task"]): t for t in tasks}
    if cgroups:
        info = {k: t for k, t in info.items() if in_cgroups(t.get("cgroup"), cgroups)}
    span = max(span_s, 1e-9)
    events = counts.column("event").to_pylist() if counts.num_rows else []
    task_ids = counts.column("task").to_pylist() if counts.num_rows else []
    xfs = counts.column("xfeatures").to_pylist() if counts.num_rows else []
    ns = counts.column("count").to_pylist() if counts.num_rows else []
    loads = counts.column("load_fpu").to_pylist() if counts.num_rows else []
    acc: dict[str, dict[str, Any]] = {}
    sizes: dict[int, int] = {}
    for event, task, xf, n, load in zip(events, task_ids, xfs, ns, loads, strict=True):
        if cgroups and int(task) not in info:
            continue
        t = info.get(int(task), {})
        pid, tgid = int(t.get("pid", 0)), int(t.get("tgid", 0))
        if by == "process":
            key, name = str(tgid), t.get("comm", "?")
        elif by == "cgroup":
            key = name = str(t.get("cgroup") or "?")
        else:
            key, name = str(pid), t.get("comm", "?")
        row = acc.setdefault(
            key, {"name": name, "saves": 0, "bytes": 0, "restores": 0, "rbytes": 0, "xf": 0,
                  "threads": set()},
        )  # fmt: skip
        if by == "process" and pid == tgid:
            row["name"] = t.get("comm", row["name"])  # named by its main thread
        row["threads"].add(int(task))
        size = 0
        if layout is not None:
            size = sizes.setdefault(int(xf), layout.bytes_saved(int(xf)))
        sign = SAVE_SIGN.get(str(event), 0)
        if sign:
            row["saves"] += sign * int(n)
            row["bytes"] += sign * int(n) * size
            if sign > 0:
                row["xf"] |= int(xf)
        elif event == "regs_activated" and load == 1:
            row["restores"] += int(n)
            row["rbytes"] += int(n) * size
    out = []
    for key, r in acc.items():
        cpu = model.save.total(np.float64(r["saves"]), np.float64(r["bytes"]))
        cpu += model.restore.total(np.float64(r["restores"]), np.float64(r["rbytes"]))
        out.append(
            LiveRow(
                key=key,
                name=str(r["name"]),
                saves_per_s=r["saves"] / span,
                bytes_per_s=r["bytes"] / span,
                widest=_level(r["xf"]),
                cpu_ns_per_s=float(cpu) / span,
                threads=len(r["threads"]),
            )
        )
    field = {"saves": "saves_per_s", "bytes": "bytes_per_s", "cpu": "cpu_ns_per_s"}[sort]
    return sorted(out, key=lambda r: getattr(r, field), reverse=True)
