"""Running totals for `fptrace agent`'s Prometheus counters, per cgroup and vector state.

Each drained interval (collectors/recorder.Drained) adds its counts with the definitions of
every other view (analysis/measures.py): a save is regs_deactivated − dropped, its bytes
the estimate for its XSTATE_BV, a restore a regs_activated with load_fpu set.  The label
``state`` is the widest vector level live in the saved buffer (none, sse, avx, avx512, amx,
apx); ``cgroup`` is the task's cgroup v2 path.

Counters only go up: a Prometheus counter that goes down reads as a restart.  So:

- a cgroup gets its own series when it is first seen, while fewer than ``max_cgroups`` have
  one, and keeps it for the agent's life; the cgroups seen after that are summed under
  :data:`OTHER` (sticky, not "top N at each scrape": a cgroup moving in and out of the top
  would take its total out of ``other`` and make that series fall);
- a series' value is the largest its net total has been (an interval whose ``dropped``
  events outnumber its saves in one series holds it, not lowers it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from fptrace.analysis.measures import SAVE_SIGN
from fptrace.xstate import LEVEL_IDS, Layout, levels_of

OTHER = "other"  # the cgroups past --max-cgroups
UNKNOWN = "unknown"  # a task whose cgroup was not read
NO_STATE = "none"  # no vector state live (x87 only, or init)
STATES = (NO_STATE, *LEVEL_IDS.values())

Labels = tuple[str, str]  # (cgroup, state)


def widest_state(xstate_bv: int) -> str:
    """The widest vector level live in a buffer with this XSTATE_BV, as a label value."""
    live = levels_of(xstate_bv)
    return LEVEL_IDS[live[-1]] if live else NO_STATE


@dataclass
class _Counter:
    net: int = 0  # may dip within an interval (dropped before its save was counted)
    shown: int = 0  # what the series says: the largest net so far

    def add(self, n: int) -> None:
        self.net += n
        self.shown = max(self.shown, self.net)


@dataclass
class MetricTotals:
    """Saves, restores and bytes saved per (cgroup, state), since the agent started."""

    max_cgroups: int = 100
    saves: dict[Labels, _Counter] = field(default_factory=dict)
    restores: dict[Labels, _Counter] = field(default_factory=dict)
    bytes_saved: dict[Labels, _Counter] = field(default_factory=dict)
    labelled: set[str] = field(default_factory=set)  # cgroups with series of their own
    folded: set[str] = field(default_factory=set)  # cgroups summed under OTHER
    intervals: int = 0

    def _cgroup_label(self, path: str | None) -> str:
        name = path or UNKNOWN
        if name in self.labelled:
            return name
        if name not in self.folded and len(self.labelled) < self.max_cgroups:
            self.labelled.add(name)
            return name
        self.folded.add(name)
        return OTHER

    def add(
        self, counts: pa.Table, tasks: Iterable[Mapping[str, Any]], layout: Layout | None
    ) -> None:
        """One drained interval's counts rows (the counts table's columns)."""
        self.intervals += 1
        if not counts.num_rows:
            return
        cgroup_of = {int(t["task"]): t.get("cgroup") for t in tasks}
        sizes: dict[int, int] = {}
        cols = counts.select(["event", "task", "xfeatures", "count", "load_fpu"]).to_pydict()
        for event, task, xf, n, load in zip(
            cols["event"], cols["task"], cols["xfeatures"], cols["count"], cols["load_fpu"],
            strict=True,
        ):  # fmt: skip
            sign = SAVE_SIGN.get(str(event), 0)
            restore = event == "regs_activated" and load == 1
            if not sign and not restore:
                continue
            xf = int(xf)
            labels = (self._cgroup_label(cgroup_of.get(int(task))), widest_state(xf))
            size = 0
            if layout is not None:
                size = sizes.setdefault(xf, layout.bytes_saved(xf))
            if sign:
                self.saves.setdefault(labels, _Counter()).add(sign * int(n))
                self.bytes_saved.setdefault(labels, _Counter()).add(sign * int(n) * size)
            else:
                self.restores.setdefault(labels, _Counter()).add(int(n))

    @staticmethod
    def series(counters: Mapping[Labels, _Counter]) -> list[tuple[Labels, int]]:
        return sorted((labels, c.shown) for labels, c in counters.items())
