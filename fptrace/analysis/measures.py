"""What a save is, and the bytes it moves: defined once, for every view of a recording.

A *save* is a ``regs_deactivated`` that is not the exit path.  The exit path is always
followed by ``dropped`` for the same buffer (../shared/docs/kernel-fpu.md §1.3), so
saves = regs_deactivated − dropped.  That difference is taken here *per row of the counts
table* (+count for ``regs_deactivated``, −count for ``dropped``), not per task or per
total: every grouping of the rows — per task, VSO, interval, live-state class, component,
XSTATE_BV — then sums to the same total, which is what the headline says.  (Each view used
to derive it on its own, and some skipped the subtraction: one recording's headline said
40,010 saves, its timeline 40,012 and its live-components table 40,011.)

Restores are classified per task from ``load_fpu`` and caught signals
(:mod:`fptrace.analysis.summary`); the cost estimate is :mod:`fptrace.analysis.cost`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fptrace.xstate import Layout

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


def save_bytes(counts: pd.DataFrame, layout: Layout | None) -> pd.Series:
    """Each counts row's contribution to the bytes saved (signed, as :func:`saves`)."""
    return saves(counts) * bytes_of(layout, counts["xfeatures"])
