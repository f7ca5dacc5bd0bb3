"""Where and why vector state was live at a save (record --stacks): flame-graph paths, the
call sites that block with AVX/AVX-512 state live, and hints in words.

A sample is one save with state beyond SSE live, with the user and kernel stacks of the
task as it left the CPU; the samples are rate-limited per task, so they show shares, not
totals (the counts have the totals).  A path reads from the root: the live level and why
the task left ("AVX-512 live, blocked"), the command, the user frames from the outermost
to where it was, then the kernel frames (suffix ``_[k]``) down to the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from fptrace.xstate import AVX512_MASK, Layout

UNKNOWN = "[unknown]"
AVX_BIT, ZMM_HI256_BIT, HI16_ZMM_BIT = 2, 6, 7
WHY = {"voluntary": "blocked", "involuntary": "preempted"}


def level_of(xstate_bv: int) -> str:
    """The widest vector level live (the state the sample is filed under)."""
    if xstate_bv & ((1 << 17) | (1 << 18)):
        return "AMX"
    if xstate_bv & AVX512_MASK:
        return "AVX-512"
    if xstate_bv & (1 << AVX_BIT):
        return "AVX"
    return "SSE"


def frame_name(function: str, module: str, kernel: bool) -> str:
    """A frame as flame graphs show it: no ';' (the separator) or line breaks."""
    name = function if function != UNKNOWN else f"{UNKNOWN} {module}".strip()
    name = name.replace(";", ":").replace("\n", " ").replace("\r", " ")
    return name + "_[k]" if kernel else name


@dataclass
class StackView:
    """The samples as paths and call sites, and what they say."""

    paths: list[tuple[tuple[str, ...], int]]  # root -> leaf, samples
    sites: pd.DataFrame  # comm, site, caller, level, samples, share
    hints: list[str] = field(default_factory=list)
    samples: int = 0


def _frames(stacks: pd.DataFrame) -> dict[int, list[tuple[str, str, bool]]]:
    """stack id -> its frames, leaf first: (function, module, kernel)."""
    out: dict[int, list[tuple[str, str, bool]]] = {}
    for r in stacks.sort_values(["stack", "depth"]).itertuples(index=False):
        out.setdefault(int(r.stack), []).append((str(r.function), str(r.module), bool(r.kernel)))
    return out


def build(
    samples: pd.DataFrame | None,
    stacks: pd.DataFrame | None,
    tasks: pd.DataFrame,
    layout: Layout | None,
) -> StackView | None:
    if samples is None or stacks is None or samples.empty:
        return None
    frames = _frames(stacks)
    comm = dict(zip(tasks["task"], tasks["comm"], strict=True)) if not tasks.empty else {}
    paths: dict[tuple[str, ...], int] = {}
    site_rows = []
    for r in samples.itertuples(index=False):
        xf = int(r.xfeatures)
        reason = r.reason if isinstance(r.reason, str) else None
        level = level_of(xf)
        root = f"{level} live, {WHY.get(reason or '', 'reason not recorded')}"
        name = str(comm.get(r.task, f"pid {r.pid}"))
        user = frames.get(int(r.user_stack), []) if pd.notna(r.user_stack) else []
        kernel = frames.get(int(r.kernel_stack), []) if pd.notna(r.kernel_stack) else []
        path = (
            root,
            name.replace(";", ":"),
            *(frame_name(*f) for f in reversed(user)),
            *(frame_name(*f) for f in reversed(kernel)),
        )
        n = int(r.samples)
        paths[path] = paths.get(path, 0) + n
        site = frame_name(*user[0]) if user else UNKNOWN
        caller = frame_name(*user[1]) if len(user) > 1 else ""
        site_rows.append((name, int(r.task), int(r.pid), reason, level, site, caller, xf, n))
    rows = pd.DataFrame(
        site_rows,
        columns=[
            "comm", "task", "pid", "reason", "level", "site", "caller", "xfeatures", "samples",
        ],
    )  # fmt: skip
    view = StackView(
        paths=sorted(paths.items(), key=lambda kv: -kv[1]),
        sites=blocking_sites(rows),
        samples=int(rows["samples"].sum()),
    )
    view.hints = hints(rows, layout)
    return view


def blocking_sites(rows: pd.DataFrame) -> pd.DataFrame:
    """Call sites that block with AVX or wider state live: per task, where its voluntary
    AVX-live samples were taken and from where it was called, with the share of them."""
    vol = rows[(rows["reason"] == "voluntary") & (rows["level"] != "SSE")]
    cols = ["comm", "pid", "site", "caller", "level", "samples", "share"]
    if vol.empty:
        return pd.DataFrame(columns=cols)
    keys = ["comm", "task", "pid", "site", "caller", "level"]
    g = vol.groupby(keys, as_index=False)["samples"].sum()
    total = vol.groupby("task")["samples"].sum()
    g["share"] = g["samples"] / g["task"].map(total)
    return g.sort_values("samples", ascending=False).reset_index(drop=True)[cols]


def _bytes_freed_by_vzeroupper(layout: Layout | None, xf: int) -> int:
    """What VZEROUPPER puts back in init state and a save then no longer writes: the upper
    halves of ymm0-15 (AVX) and of zmm0-15 (ZMM_Hi256), where live (sizes from CPUID)."""
    if layout is None:
        return 0
    return sum(
        layout.components[b].size
        for b in (AVX_BIT, ZMM_HI256_BIT)
        if xf >> b & 1 and b in layout.components
    )


def hints(rows: pd.DataFrame, layout: Layout | None) -> list[str]:
    """What the samples show, per task (the five with the most samples), in words."""
    out = []
    by_task = sorted(rows.groupby("task"), key=lambda kv: -kv[1]["samples"].sum())[:5]
    for _, g in by_task:
        comm = f"{g['comm'].iloc[0]} ({g['pid'].iloc[0]})"
        wide = g[g["level"] != "SSE"]
        total = int(wide["samples"].sum())
        if not total:
            continue
        vol = wide[wide["reason"] == "voluntary"]
        inv = wide[wide["reason"] == "involuntary"]
        if int(vol["samples"].sum()) >= total / 4:
            at = vol.groupby(["site", "caller"])["samples"].sum().sort_values()
            top = at.index[-1]
            share = int(at.iloc[-1]) / total  # of all its AVX-live saves: at that one site
            site, caller = top
            xf = int(vol["xfeatures"].iloc[0])
            freed = _bytes_freed_by_vzeroupper(layout, xf)
            where = f"{site}() called from {caller}()" if caller else f"{site}()"
            out.append(
                f"{share:.0%} of {comm}'s AVX-live saves are voluntary at {where}: the state "
                "was dirty when it blocked — a VZEROUPPER before the call would save "
                + (f"{freed:,} B per switch" if freed else "the upper register halves")
            )
        if int(inv["samples"].sum()) >= total / 2:
            site = inv.groupby("site")["samples"].sum().sort_values().index[-1]
            share = int(inv["samples"].sum()) / total
            out.append(
                f"{share:.0%} of {comm}'s AVX-live saves are involuntary (preempted) in "
                f"{site}(): the state was live when the task lost the CPU (a VZEROUPPER "
                "where its vector code ends leaves less to save)"
            )
        hi16 = int(g[g["xfeatures"].map(lambda x: x >> HI16_ZMM_BIT & 1 == 1)]["samples"].sum())
        if hi16 >= total / 2:
            out.append(
                f"Hi16_ZMM live in {hi16 / int(g['samples'].sum()):.0%} of {comm}'s samples: "
                "AVX-512 registers zmm16–31 in use (often glibc's EVEX string functions)"
            )
    return out


def fork_hints(counts: pd.DataFrame, tasks: pd.DataFrame) -> list[str]:
    """Tasks that started with wide state live, copied from the parent at fork."""
    if counts.empty:
        return []
    c = counts[(counts["event"] == "copy_dst")]
    c = c[c["xfeatures"].astype("uint64").map(lambda x: level_of(int(x)) != "SSE")]
    if c.empty:
        return []
    names = dict(zip(tasks["task"], tasks["comm"], strict=True)) if not tasks.empty else {}
    out = []
    for comm, g in c.groupby(c["task"].map(lambda t: names.get(t, "?"))):
        levels = sorted({level_of(int(x)) for x in g["xfeatures"]})
        out.append(
            f"state inherited over fork: {g['task'].nunique():,} {comm} task(s) started with "
            f"{'/'.join(levels)} state live, copied from the parent"
        )
    return out


def folded_lines(view: StackView) -> list[str]:
    """Brendan Gregg's folded format: ``frame;frame;… samples``, one path per line."""
    return [";".join(path) + f" {n}" for path, n in view.paths]


def icicle_nodes(view: StackView) -> dict[str, list[Any]]:
    """ids, labels, parents and values for plotly's icicle (a node's value: its samples)."""
    value: dict[tuple[str, ...], int] = {}
    for path, n in view.paths:
        for i in range(1, len(path) + 1):
            value[path[:i]] = value.get(path[:i], 0) + n
    ids = [";".join(p) for p in value]
    return {
        "ids": ids,
        "labels": [p[-1] for p in value],
        "parents": [";".join(p[:-1]) for p in value],
        "values": list(value.values()),
    }
