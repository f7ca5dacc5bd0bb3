"""What a save, a restore and their bytes and cost are: defined once, for every view of a
recording (headline, timeline, heat map, live components, task and VSO tables, Perfetto
counters, compare and the ``bench --record`` check).

A *save* is a ``regs_deactivated`` that is not the exit path.  The exit path is always
followed by ``dropped`` for the same buffer (../shared/docs/kernel-fpu.md §1.3), so
saves = regs_deactivated − dropped.  That difference is taken here *per row of the counts
table* (+count for ``regs_deactivated``, −count for ``dropped``), not per task or per
total: every grouping of the rows — per task, VSO, interval, live-state class, component,
XSTATE_BV — then sums to the same total, which is what the headline says.  (Each view used
to derive it on its own, and some skipped the subtraction: one recording's headline said
40,010 saves, its timeline 40,012 and its live-components table 40,011.)

A *restore* is a ``regs_activated`` on the return-to-user path, which runs with
TIF_NEED_FPU_LOAD set (``load_fpu`` = 1); the others (signal delivery, sigreturn, KVM) run
with it clear.  Where ``load_fpu`` is null (a kernel without it, a failed calibration, an old
recording) restores are estimated per task by pairing: two activations per caught signal are
not restores (:func:`restores`).  A *skipped restore* is a save whose task came back to the
same CPU with its registers intact (saves − restores, at least 0); an *untraced save* is a
restore with no traced save before it (restores − saves, at least 0: the save happened
before the probes attached, or on a path fptrace does not see).  The cost estimate applies a
:class:`~fptrace.analysis.cost.CostModel` to these counts and bytes (:func:`estimated_ns`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fptrace.analysis.cost import CostModel
from fptrace.xstate import VECTOR_LEVELS, Layout

# Sign of each event in the count of saves.
SAVE_SIGN = {"regs_deactivated": 1, "dropped": -1}
SAVE_EVENTS = tuple(SAVE_SIGN)


def save_sign(events: pd.Series) -> np.ndarray:
    """+1, −1 or 0 per row: how each row's events count as saves."""
    return events.astype(str).map(SAVE_SIGN).fillna(0).astype("int64").to_numpy()


def saves(counts: pd.DataFrame) -> pd.Series:
    """Each counts row's contribution to the saves (signed; sum it over any grouping)."""
    return pd.Series(
        counts["count"].astype("int64").to_numpy() * save_sign(counts["event"]),
        index=counts.index,
        dtype="int64",
    )


REASONS = ("voluntary", "involuntary")  # counts.reason (probes/plan.py REASON_NAMES)


def by_reason(counts: pd.DataFrame, values: pd.Series) -> dict[str, int]:
    """``values`` (signed saves, or their bytes, per counts row) summed per reason the task
    left the CPU: voluntary (it blocked), involuntary (preempted), and ``unknown`` (not
    read: another backend, an older recording, a kernel without ``__state`` in BTF)."""
    if counts.empty or "reason" not in counts.columns:
        return {**dict.fromkeys(REASONS, 0), "unknown": int(values.sum()) if len(values) else 0}
    reason = counts["reason"].astype(object)
    out = {r: int(values[reason == r].sum()) for r in REASONS}
    out["unknown"] = int(values[~reason.isin(REASONS)].sum())
    return out


def bytes_of(layout: Layout | None, xstate_bv: pd.Series) -> pd.Series:
    """Estimated bytes an XSAVE writes / an XRSTOR reads for each XSTATE_BV (kernel-fpu §6.4)."""
    if layout is None:
        return pd.Series(0, index=xstate_bv.index, dtype="int64")
    cache: dict[int, int] = {}
    out = []
    for bv in xstate_bv:
        key = int(bv)
        if key not in cache:
            cache[key] = layout.bytes_saved(key)
        out.append(cache[key])
    return pd.Series(out, index=xstate_bv.index, dtype="int64")


def level_shares(counts: pd.DataFrame, levels: list[str] | None) -> dict[str, float | None]:
    """Per vector level, the share of saves with its state live (XSTATE_BV); None for a
    level ``levels`` (the CPU's) lacks, so that it reads "n/a" rather than 0 %.  ``levels``
    None: not known, every level is shown."""
    signed = saves(counts)
    total = int(signed.sum())
    xf = counts["xfeatures"].astype("uint64").to_numpy() if len(counts) else np.zeros(0, "u8")
    out: dict[str, float | None] = {}
    for name, mask in VECTOR_LEVELS.items():
        if levels is not None and name not in levels:
            out[name] = None
            continue
        live = int(signed[(xf & np.uint64(mask)) != 0].sum()) if len(counts) else 0
        out[name] = live / total if total else 0.0
    return out


def save_bytes(counts: pd.DataFrame, layout: Layout | None) -> pd.Series:
    """Each counts row's contribution to the bytes saved (signed, as :func:`saves`)."""
    return saves(counts) * bytes_of(layout, counts["xfeatures"])


def activations(counts: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The ``regs_activated`` rows split by ``load_fpu``: ``load`` (1: the return-to-user
    path, a restore), ``other`` (0: signal delivery, sigreturn, KVM) and ``unknown`` (null)."""
    act = counts[counts["event"] == "regs_activated"]
    load = act["load_fpu"]
    return {
        "load": act[load.notna() & (load.fillna(0).astype("int64") == 1)],
        "other": act[load.notna() & (load.fillna(1).astype("int64") == 0)],
        "unknown": act[load.isna()],
    }


@dataclass
class Restores:
    """Restores and sigreturns of each task (aligned Series), and which were estimated."""

    restores: pd.Series
    sigreturns: pd.Series
    estimated: pd.Series  # bool: load_fpu was null for some activations of a task with signals


def restores(
    act_load: pd.Series, act_other: pd.Series, act_unknown: pd.Series, signal_frames: pd.Series
) -> Restores:
    """Restores and sigreturns from each task's activations and caught signals.

    Each caught signal fires one activation (load_fpu clear) at delivery and one at sigreturn
    if the handler returns, so sigreturns = other − signal frames.  Where load_fpu is null,
    two activations per caught signal are taken as not restores, which is too many for a
    handler that leaves with siglongjmp (no sigreturn): such tasks are marked estimated.
    """
    exact = act_unknown == 0
    return Restores(
        restores=(act_load + (act_unknown - 2 * signal_frames).clip(lower=0)).astype("int64"),
        # Estimated: assume every handler returned (what the pairing assumes too).
        sigreturns=(act_other - signal_frames)
        .clip(lower=0)
        .where(exact, signal_frames)
        .astype("int64"),
        estimated=~exact & (signal_frames > 0),
    )


def restores_skipped(saves_: pd.Series, restores_: pd.Series) -> pd.Series:
    """Saves whose task came back to the same CPU with its registers intact: no restore."""
    return (saves_ - restores_).clip(lower=0)


def untraced_saves(saves_: pd.Series, restores_: pd.Series) -> pd.Series:
    """Restores with no traced save before them (saved before attach, or on an unseen path)."""
    return (restores_ - saves_).clip(lower=0)


def bytes_restored(
    restores_: pd.Series,
    load_n: pd.Series,
    load_bytes: pd.Series,
    unknown_n: pd.Series,
    unknown_bytes: pd.Series,
) -> pd.Series:
    """Bytes the restores read (an XRSTOR reads the buffer as XSTATE_BV says).  Where
    load_fpu was not read, the activations' bytes are scaled by how many of them were taken
    as restores."""
    paired = (restores_ - load_n).clip(lower=0)
    ratio = (paired / unknown_n.where(unknown_n > 0)).fillna(0)
    return load_bytes + unknown_bytes * ratio


@dataclass
class Estimate:
    """Estimated CPU ns of each task's saves, restores and signal frames."""

    save_ns: pd.Series
    restore_ns: pd.Series
    signal_ns: pd.Series

    @property
    def total_ns(self) -> pd.Series:
        return self.save_ns + self.restore_ns + self.signal_ns


def estimated_ns(
    model: CostModel,
    saves_: pd.Series,
    bytes_saved: pd.Series,
    restores_: pd.Series,
    bytes_restored_: pd.Series,
    signal_frames: pd.Series,
    sigreturns: pd.Series,
    frame_bytes: pd.Series,
) -> Estimate:
    """The cost estimate.  Signal frames (kernel-fpu.md §1.3): at delivery an XSAVE of the
    user state to the stack (standard format: ``frame_bytes``, the VSO's user_size) and an
    XRSTOR of the init state (no bytes read); at sigreturn an XRSTOR from the frame.  Both
    are outside the switch path."""
    return Estimate(
        save_ns=model.save.total(saves_, bytes_saved),
        restore_ns=model.restore.total(restores_, bytes_restored_),
        signal_ns=model.save.total(signal_frames, signal_frames * frame_bytes)
        + model.restore.total(signal_frames, 0)
        + model.restore.total(sigreturns, sigreturns * frame_bytes),
    )
