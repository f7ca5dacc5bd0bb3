"""Per-task and per-VSO save/restore figures from a recording's tables.  No I/O, no printing.

Classification follows ../shared/docs/kernel-fpu.md §1, by pairing rather than by
``load_fpu`` alone:
- a *save* is a ``regs_deactivated`` that is not the exit path; the exit path is always
  followed by ``dropped`` for the same buffer, so saves = regs_deactivated - dropped
  (:mod:`fptrace.analysis.measures`, per row, which every view sums);
- a *restore* is a ``regs_activated`` from the return-to-user path, which runs with
  TIF_NEED_FPU_LOAD set.  The other ``regs_activated`` (signal delivery, sigreturn, KVM) run
  with it clear.  fptrace reads it at every ``regs_activated``, so ``load_fpu`` decides.
  Only where it is null (a kernel without it, a failed calibration, a recording made before
  fptrace read it by default) are restores estimated by pairing: two per caught signal are
  subtracted, which is too many for a handler that leaves with siglongjmp (no sigreturn).
  Such tasks are marked ``restores_estimated`` and the report says so.
"""

from __future__ import annotations

import pandas as pd

from fptrace.analysis import measures
from fptrace.xstate import bits, component_name


def _event_counts(counts: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """counts pivoted to one column per event, summed over intervals and XSTATE_BV."""
    if counts.empty:
        return pd.DataFrame(columns=[*by])
    table = counts.assign(count=counts["count"].astype("int64")).pivot_table(
        index=by, columns="event", values="count", aggfunc="sum", fill_value=0
    )
    table.columns = [str(c) for c in table.columns]
    return table.reset_index()


def _activations(counts: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """``regs_activated`` per task, split by ``load_fpu`` (:func:`measures.activations`)."""
    parts = measures.activations(counts)
    return pd.DataFrame(
        {f"act_{k}": v.groupby(cols)["count"].sum() for k, v in parts.items()}
    ).fillna(0)


def per_task(counts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """One row per task: saves, restores, skipped restores, fork copies, signals, switches."""
    cols = ["task", "pid", "tgid"]  # task: the per-recording id (a pid can be reused)
    ev = _event_counts(counts, cols)
    for name in ("regs_deactivated", "regs_activated", "dropped", "copy_dst", "signal_deliver"):
        if name not in ev.columns:
            ev[name] = 0
    # Not clipped at 0: a task's saves add up with every other view's (a negative figure
    # would say that events were lost, and the drops warning says so too).
    per_task_saves = counts.assign(saves=measures.saves(counts)).groupby(cols)["saves"].sum()
    ev = ev.merge(per_task_saves.rename("saves").reset_index(), on=cols, how="left")
    ev["saves"] = ev["saves"].fillna(0).astype("int64")
    ev = ev.merge(_activations(counts, cols).reset_index(), on=cols, how="left")
    for name in ("act_load", "act_other", "act_unknown"):
        ev[name] = ev[name].fillna(0).astype("int64") if name in ev.columns else 0
    r = measures.restores(ev["act_load"], ev["act_other"], ev["act_unknown"], ev["signal_deliver"])
    ev["restores"], ev["sigreturns"], ev["restores_estimated"] = (
        r.restores,
        r.sigreturns,
        r.estimated,
    )
    ev["restores_skipped"] = measures.restores_skipped(ev["saves"], ev["restores"])
    ev = ev.rename(columns={"copy_dst": "fork_copies", "signal_deliver": "signal_frames"})
    keep = [
        *("task", "pid", "tgid", "saves", "restores", "restores_skipped", "fork_copies"),
        *("signal_frames", "sigreturns", "restores_estimated"),
    ]
    ev = ev[keep]
    if not tasks.empty:
        info = tasks[["task", "comm", "cgroup", "switches", "oncpu_ns"]].astype(
            {"task": "int64", "switches": "int64", "oncpu_ns": "int64"}
        )
        ev = ev.astype({"task": "int64", "pid": "int64"}).merge(info, on="task", how="left")
    else:
        ev["comm"], ev["cgroup"], ev["switches"], ev["oncpu_ns"] = "", None, 0, 0
    # A task with counts but no row in the tasks table (its entry was dropped, or the table
    # was edited): known by its pid only.
    ev["comm"] = ev["comm"].fillna("?").astype(str)
    for name in ("switches", "oncpu_ns"):
        ev[name] = ev[name].fillna(0).astype("int64")
    return ev.sort_values(["saves", "restores"], ascending=False).reset_index(drop=True)


def live_components(counts: pd.DataFrame) -> pd.DataFrame:
    """For switch saves: how many had each xstate component live (XSTATE_BV bit set)."""
    rows = counts[counts["event"].isin(measures.SAVE_EVENTS)]
    rows = rows.assign(saves=measures.saves(rows))
    total = int(rows["saves"].sum()) if not rows.empty else 0
    per_bit: dict[int, int] = {}
    for xf, n in rows.groupby("xfeatures")["saves"].sum().items():
        for b in bits(int(xf)):
            per_bit[b] = per_bit.get(b, 0) + int(n)
    rows = [
        {
            "bit": b,
            "component": component_name(b),
            "saves": n,
            "share": n / total if total else 0.0,
        }
        for b, n in sorted(per_bit.items())
    ]
    return pd.DataFrame(rows, columns=["bit", "component", "saves", "share"])


def vso_sizes(vso: pd.DataFrame) -> pd.DataFrame:
    """How many VSOs there are of each kernel buffer size."""
    if vso.empty:
        return pd.DataFrame(columns=["size", "user_size", "vsos"])
    return (
        vso.groupby(["size", "user_size"])
        .size()
        .rename("vsos")
        .reset_index()
        .sort_values("vsos", ascending=False)
    )
