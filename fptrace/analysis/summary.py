"""Per-task and per-VSO save/restore figures from a recording's tables.  No I/O, no printing.

Classification follows ../shared/docs/kernel-fpu.md §1, by pairing rather than by
``load_fpu`` alone:
- a *save* is a ``regs_deactivated`` that is not the exit path; the exit path is always
  followed by ``dropped`` for the same buffer, so saves = regs_deactivated - dropped;
- a *restore* is a ``regs_activated`` from the return-to-user path.  The other
  ``regs_activated`` (signal delivery, sigreturn, KVM) run with TIF_NEED_FPU_LOAD clear, so
  where ``load_fpu`` was read it decides; where it was not (the default on the switch path,
  for overhead), two per caught signal are subtracted (see ``_restores``).
"""

from __future__ import annotations

import pandas as pd

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


def _restores(counts: pd.DataFrame, cols: list[str]) -> pd.Series:
    """Restores per task.

    Where ``load_fpu`` was read (``record --load-fpu``): the ``regs_activated`` with it set.
    Otherwise by pairing: every caught signal adds two ``regs_activated`` that are not
    restores of the task's buffer (``fpu__clear_user_states`` at delivery and the sigreturn
    restore from the user frame, kernel-fpu.md §1.3).
    """
    act = counts[counts["event"] == "regs_activated"]
    known = act[act["load_fpu"].notna()]
    exact = known[known["load_fpu"].astype("int64") == 1].groupby(cols)["count"].sum()
    unknown = act[act["load_fpu"].isna()].groupby(cols)["count"].sum()
    sigs = counts[counts["event"] == "signal_deliver"].groupby(cols)["count"].sum()
    paired = unknown.sub(2 * sigs.reindex(unknown.index, fill_value=0)).clip(lower=0)
    return exact.add(paired, fill_value=0).astype("int64").rename("restores")


def per_task(counts: pd.DataFrame, tasks: pd.DataFrame) -> pd.DataFrame:
    """One row per task: saves, restores, skipped restores, fork copies, signals, switches."""
    cols = ["pid", "tgid"]
    ev = _event_counts(counts, cols)
    for name in ("regs_deactivated", "regs_activated", "dropped", "copy_dst", "signal_deliver"):
        if name not in ev.columns:
            ev[name] = 0
    ev["saves"] = (ev["regs_deactivated"] - ev["dropped"]).clip(lower=0)
    ev = ev.merge(_restores(counts, cols).reset_index(), on=cols, how="left")
    ev["restores"] = ev["restores"].fillna(0).astype("int64")
    # A save whose task came back to the same CPU with its registers intact needs no restore.
    ev["restores_skipped"] = (ev["saves"] - ev["restores"]).clip(lower=0)
    ev = ev.rename(columns={"copy_dst": "fork_copies", "signal_deliver": "signal_frames"})
    keep = ["pid", "tgid", "saves", "restores", "restores_skipped", "fork_copies", "signal_frames"]
    ev = ev[keep]
    if not tasks.empty:
        info = tasks[["pid", "comm", "switches", "oncpu_ns"]].astype(
            {"pid": "int64", "switches": "int64", "oncpu_ns": "int64"}
        )
        ev = ev.astype({"pid": "int64"}).merge(info, on="pid", how="left")
    else:
        ev["comm"], ev["switches"], ev["oncpu_ns"] = "", 0, 0
    ev["comm"] = ev["comm"].fillna("?").astype(str)
    return ev.sort_values(["saves", "restores"], ascending=False).reset_index(drop=True)


def live_components(counts: pd.DataFrame) -> pd.DataFrame:
    """For switch saves: how many had each xstate component live (XSTATE_BV bit set)."""
    saves = counts[counts["event"] == "regs_deactivated"]
    total = int(saves["count"].sum()) if not saves.empty else 0
    per_bit: dict[int, int] = {}
    for xf, n in saves.groupby("xfeatures")["count"].sum().items():
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
