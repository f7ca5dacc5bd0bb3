"""Everything a report shows, computed from a recording: pure functions, no I/O, no printing.

The counts table can hold millions of rows (one per interval and key); it is reduced in
Arrow first (:func:`collapse`, :func:`timeline`), so pandas only ever sees per-key and
per-interval aggregates.  Saves and restores are classified as in
:mod:`fptrace.analysis.summary`; bytes follow ../shared/docs/kernel-fpu.md §6.4.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from fptrace.analysis import bench as bench_stats
from fptrace.analysis import measures, summary
from fptrace.analysis import stacks as stack_view
from fptrace.analysis.cost import CostModel
from fptrace.analysis.measures import bytes_of
from fptrace.probes.plan import XCOMP_REQUEST_OPTIONS
from fptrace.recording.loader import Recording
from fptrace.recording.manifest import Manifest
from fptrace.xstate import (
    AMX_MASK,
    AVX512_MASK,
    LEVEL_IDS,
    VECTOR_LEVELS,
    Layout,
    bits,
    component_name,
    decode,
)

KEYS = ["task", "pid", "tgid", "vso", "event", "xfeatures", "load_fpu", "arg", "reason"]
SWITCH_EVENTS = ("regs_deactivated", "regs_activated", "dropped")
# Live-state classes for stacking, most expensive first.
STATE_CLASSES = ("AMX", "AVX-512", "AVX", "SSE/x87", "init")


def state_class(xstate_bv: int) -> str:
    if xstate_bv & AMX_MASK:
        return "AMX"
    if xstate_bv & AVX512_MASK:
        return "AVX-512"
    if xstate_bv & (1 << 2):
        return "AVX"
    if xstate_bv & 0b11:
        return "SSE/x87"
    return "init"


def _plain(table: pa.Table) -> pd.DataFrame:
    """Small Arrow table -> pandas with plain numpy/object columns."""
    cols = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = col.cast(col.type.value_type)
        cols[name] = col.to_pandas()
    return pd.DataFrame(cols)


COLLAPSE_AGG = [("count", "sum"), ("first_ns", "min"), ("last_ns", "max")]
TIMELINE_KEYS = ["interval", "event", "xfeatures"]
TIMELINE_COLUMNS = ["interval", "count", "first_ns", "last_ns"]
FOLD_EVERY = 16  # partial aggregates kept before they are folded together


def _group(table: pa.Table, keys: list[str], aggs: list[tuple[str, str]]) -> pa.Table:
    g = table.unify_dictionaries().group_by(keys, use_threads=True).aggregate(aggs)
    return g.rename_columns([*keys, *(name for name, _ in aggs)])


def _timeline_rows(table: pa.Table) -> pa.Table:
    ev = pc.cast(table.column("event"), pa.string())
    mask = pc.is_in(ev, value_set=pa.array([*measures.SAVE_EVENTS, "regs_activated"]))
    return table.filter(mask).select([*TIMELINE_KEYS, "count"])


def aggregate_counts(batches: Iterable[pa.RecordBatch]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One streaming pass over the counts: (per-key totals, per-interval/event/XSTATE_BV).

    Memory stays bounded by one batch plus the partial aggregates, however long the run.
    """
    keyed: list[pa.Table] = []
    timed: list[pa.Table] = []
    t_aggs = [("count", "sum")]
    for batch in batches:
        table = pa.Table.from_batches([batch])
        keyed.append(_group(table, KEYS, COLLAPSE_AGG))
        timed.append(_group(_timeline_rows(table), TIMELINE_KEYS, t_aggs))
        if len(keyed) >= FOLD_EVERY:
            keyed = [_group(pa.concat_tables(keyed), KEYS, COLLAPSE_AGG)]
            timed = [_group(pa.concat_tables(timed), TIMELINE_KEYS, t_aggs)]
    if not keyed:
        return (
            pd.DataFrame(columns=[*KEYS, "count", "first_ns", "last_ns"]),
            pd.DataFrame(columns=[*TIMELINE_KEYS, "count"]),
        )
    c = _plain(_group(pa.concat_tables(keyed), KEYS, COLLAPSE_AGG))
    c["load_fpu"] = c["load_fpu"].astype("Int64")
    c["xfeatures"] = c["xfeatures"].astype("uint64")
    t = _plain(_group(pa.concat_tables(timed), TIMELINE_KEYS, t_aggs))
    return c, t


def collapse(counts: pa.Table) -> pd.DataFrame:
    """Sum the intervals away: one row per key, with first/last seen."""
    return aggregate_counts(counts.to_batches())[0]


def interval_spans(intervals: pd.DataFrame | None, n: int, interval_s: float) -> pd.DataFrame:
    """Per interval: its real start and end in seconds since attach.

    From the recording's intervals table; a recording made before it existed gets the
    nominal grid (interval i ends at (i + 1) x --interval), which a late drain makes wrong.
    """
    if intervals is not None and not intervals.empty:
        spans = intervals[["interval", "start_ns", "end_ns"]].astype("int64")
        return pd.DataFrame(
            {
                "interval": spans["interval"],
                "start_s": spans["start_ns"] / 1e9,
                "end_s": spans["end_ns"] / 1e9,
            }
        )
    idx = pd.Series(range(n), dtype="int64")
    return pd.DataFrame(
        {"interval": idx, "start_s": idx * interval_s, "end_s": (idx + 1) * interval_s}
    )


def timeline(
    raw: pd.DataFrame,
    layout: Layout | None,
    interval_s: float,
    intervals: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Per interval and live-state class: saves, activations (regs_activated), bytes saved,
    and the same per second of the interval's real span (``t_s``: its end).

    ``raw`` is the second result of :func:`aggregate_counts`.
    """
    cols = [
        *("interval", "t_s", "start_s", "end_s", "state", "saves", "activations"),
        *("bytes_saved", "saves_per_s", "activations_per_s", "bytes_saved_per_s"),
    ]
    if raw.empty:
        return pd.DataFrame(columns=cols)
    df = raw.copy()
    df["state"] = [state_class(int(x)) for x in df["xfeatures"]]
    df["saves"] = measures.saves(df)
    df["bytes_saved"] = measures.save_bytes(df, layout)
    saves = df[df["event"].isin(measures.SAVE_EVENTS)]
    acts = df[df["event"] == "regs_activated"]
    out = (
        pd.concat(
            [
                saves.groupby(["interval", "state"])["saves"].sum(),
                acts.groupby(["interval", "state"])["count"].sum().rename("activations"),
                saves.groupby(["interval", "state"])["bytes_saved"].sum(),
            ],
            axis=1,
        )
        .fillna(0)
        .astype("int64")
        .reset_index()
    )
    n = int(out["interval"].max()) + 1
    out = out.merge(interval_spans(intervals, n, interval_s), on="interval", how="left")
    out["t_s"] = out["end_s"]
    span = (out["end_s"] - out["start_s"]).where(lambda d: d > 0)
    for name in ("saves", "activations", "bytes_saved"):
        out[f"{name}_per_s"] = (out[name] / span).astype("float64")
    return out[cols].sort_values(["interval", "state"]).reset_index(drop=True)


def _per_task(frame: pd.DataFrame, values: str) -> pd.Series:
    return frame.groupby("task")[values].sum() if not frame.empty else pd.Series(dtype="int64")


def task_table(
    c: pd.DataFrame,
    rec_tasks: pd.DataFrame,
    vso: pd.DataFrame,
    layout: Layout | None,
    model: CostModel,
    duration_s: float,
) -> pd.DataFrame:
    """One row per task with every per-task figure of the report."""
    base = summary.per_task(c, rec_tasks)
    if base.empty:
        return base
    c = c.assign(
        bytes=bytes_of(layout, c["xfeatures"]) * c["count"].astype("int64"),
        saves=measures.saves(c),
        save_bytes=measures.save_bytes(c, layout),
    )
    fpu = c[c["event"].isin(SWITCH_EVENTS)]
    act = measures.activations(fpu)
    xf = fpu["xfeatures"].astype("uint64")
    live = {
        LEVEL_IDS[level]: _per_task(fpu[(xf & mask) != 0], "saves")
        for level, mask in VECTOR_LEVELS.items()
    }
    perm = c[(c["event"] == "xcomp_perm") & c["arg"].isin(XCOMP_REQUEST_OPTIONS)]
    t = base.set_index("task")
    idx = t.index

    def col(series: pd.Series) -> pd.Series:
        return series.reindex(idx, fill_value=0).astype("float64")

    t["bytes_saved"] = col(_per_task(fpu, "save_bytes"))
    reason = fpu["reason"].astype(object) if "reason" in fpu.columns else None
    for r in measures.REASONS:  # voluntary_saves, involuntary_saves
        mine = fpu[reason == r] if reason is not None else fpu.iloc[0:0]
        t[f"{r}_saves"] = col(_per_task(mine, "saves")).astype("int64")
    t["bytes_restored"] = measures.bytes_restored(
        t["restores"],
        col(_per_task(act["load"], "count")),
        col(_per_task(act["load"], "bytes")),
        col(_per_task(act["unknown"], "count")),
        col(_per_task(act["unknown"], "bytes")),
    )
    t["saves_per_s"] = t["saves"] / duration_s if duration_s > 0 else 0.0
    # A dead task's final switch saves once more after its counters were read: clip at 1.
    t["switch_save_share"] = (
        (t["saves"] / t["switches"].where(t["switches"] > 0)).astype(float).clip(upper=1.0)
    )
    t["untraced_saves"] = measures.untraced_saves(t["saves"], t["restores"])
    saves_n = t["saves"].astype("float64")
    for key, n in live.items():  # sse_share … apx_share: saves with that level live
        t[f"{key}_share"] = (col(n) / saves_n.where(saves_n > 0)).fillna(0)
    if not vso.empty:
        user_size = vso.groupby("task")["user_size"].max().astype("float64")
        reallocs = vso[vso["prev_vso"].notna()].groupby("task").size()
        nvso = vso.groupby("task").size()
    else:
        user_size = reallocs = nvso = pd.Series(dtype="float64")
    t["vsos"] = col(nvso).astype("int64")
    t["vso_replacements"] = col(reallocs).astype("int64")
    t["signal_frame_bytes"] = t["signal_frames"] * col(user_size)
    t["xcomp_requests"] = col(_per_task(perm, "count")).astype("int64")
    est = measures.estimated_ns(
        model,
        t["saves"],
        t["bytes_saved"],
        t["restores"],
        t["bytes_restored"],
        t["signal_frames"],
        t["sigreturns"],
        col(user_size),
    )
    t["est_save_ns"], t["est_restore_ns"], t["est_signal_ns"] = (
        est.save_ns,
        est.restore_ns,
        est.signal_ns,
    )
    t["est_ns"] = est.total_ns
    oncpu = t["oncpu_ns"].astype("float64")
    t["est_oncpu_share"] = (t["est_ns"] / oncpu.where(oncpu > 0)).astype(float)
    return t.reset_index().sort_values("saves", ascending=False).reset_index(drop=True)


PROCESS_SUMS = ["saves", "restores", "restores_skipped", "bytes_saved", "switches", "est_ns"]


def process_table(tasks: pd.DataFrame) -> pd.DataFrame:
    """The per-task figures summed over each process's threads (one row per tgid), named
    by its main thread (the task whose pid is the tgid), else its busiest thread."""
    cols = ["tgid", "comm", "threads", *PROCESS_SUMS]
    if tasks.empty:
        return pd.DataFrame(columns=cols)
    t = tasks.assign(main=tasks["pid"] == tasks["tgid"]).sort_values(
        ["main", "saves"], ascending=False
    )
    g = t.groupby("tgid", sort=False)
    out = g[PROCESS_SUMS].sum()
    out["comm"] = g["comm"].first()
    out["threads"] = g["task"].nunique()
    return out.reset_index()[cols].sort_values("saves", ascending=False).reset_index(drop=True)


UNKNOWN_CGROUP = "?"  # a task whose cgroup was never read (it ended before a drain)


def cgroup_table(tasks: pd.DataFrame) -> pd.DataFrame:
    """The per-task figures summed per cgroup (v2 path): what each container or service costs.

    A task counts in the cgroup it was last seen in (a task moved during the recording
    takes its earlier saves along)."""
    cols = ["cgroup", "tasks", "processes", *PROCESS_SUMS, "avx512_saves"]
    if tasks.empty:
        return pd.DataFrame(columns=cols)
    t = tasks.assign(
        cgroup=tasks["cgroup"].fillna(UNKNOWN_CGROUP).astype(str),
        avx512_saves=tasks["saves"] * tasks.get("avx512_share", 0.0),
    )
    g = t.groupby("cgroup", sort=False)
    out = g[[*PROCESS_SUMS, "avx512_saves"]].sum()
    out["avx512_saves"] = out["avx512_saves"].round().astype("int64")
    out["tasks"] = g["task"].nunique()
    out["processes"] = g["tgid"].nunique()
    return out.reset_index()[cols].sort_values("saves", ascending=False).reset_index(drop=True)


def vso_table(c: pd.DataFrame, vso: pd.DataFrame, tasks: pd.DataFrame, layout: Layout | None):
    """One row per VSO: owner, sizes, flags, saves/restores and the components seen live."""
    if vso.empty:
        return vso
    fpu = c[c["vso"].notna() & c["event"].isin(SWITCH_EVENTS)]
    by = fpu.groupby(["vso", "event"])["count"].sum().unstack(fill_value=0)
    for name in SWITCH_EVENTS:
        if name not in by.columns:
            by[name] = 0
    live: dict[str, int] = {}
    for v, x in fpu[fpu["event"] == "regs_deactivated"][["vso", "xfeatures"]].itertuples(
        index=False
    ):
        live[v] = live.get(v, 0) | int(x)
    saves = fpu.assign(saves=measures.saves(fpu)).groupby("vso")["saves"].sum()
    out = vso.copy()
    out["saves"] = out["vso"].map(saves).fillna(0).astype("int64")
    out["activations"] = out["vso"].map(by["regs_activated"]).fillna(0).astype("int64")
    out["live_components"] = [", ".join(decode(live.get(v, 0))) for v in out["vso"]]
    out["footprint"] = out["layout_size"].fillna(out["size"]).astype("int64")
    names = dict(zip(tasks["task"], tasks["comm"], strict=True))  # a task may have no row
    out["comm"] = [str(names.get(t, "?")) for t in out["task"]]
    return out.sort_values("saves", ascending=False).reset_index(drop=True)


def heatmap(c: pd.DataFrame, tasks: pd.DataFrame, top: int = 30) -> pd.DataFrame:
    """Share of each task's saves with each component live (rows: top tasks by saves)."""
    deact = c[c["event"].isin(measures.SAVE_EVENTS)]
    if deact.empty:
        return pd.DataFrame()
    deact = deact.assign(saves=measures.saves(deact))
    totals = deact.groupby("task")["saves"].sum().sort_values(ascending=False).head(top)
    comps = sorted({b for x in deact["xfeatures"] for b in bits(int(x))})
    rows = {}
    comm = tasks.set_index("task")["comm"] if not tasks.empty else pd.Series(dtype=str)
    pid_of = deact.groupby("task")["pid"].first()
    for task, total in totals.items():
        mine = deact[deact["task"] == task]
        pid = pid_of[task]
        shares = {}
        for b in comps:
            hit = mine[(mine["xfeatures"].astype("uint64") & (1 << b)) != 0]["saves"].sum()
            shares[component_name(b)] = hit / total if total > 0 else 0.0
        rows[f"{comm.get(task, '?')} ({pid})"] = shares
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass
class ReportData:
    """The numbers every report format renders."""

    path: str
    manifest: Manifest
    headline: dict[str, Any]
    tasks: pd.DataFrame
    vsos: pd.DataFrame
    processes: pd.DataFrame  # the tasks summed per process (tgid)
    cgroups: pd.DataFrame  # the tasks summed per cgroup (v2 path)
    timeline: pd.DataFrame
    heatmap: pd.DataFrame
    components: pd.DataFrame
    vso_sizes: pd.DataFrame
    cost: CostModel
    warnings: list[str] = field(default_factory=list)
    bench: pd.DataFrame | None = None  # per (bench, metric, state) summary, if benchmarks ran
    bench_slopes: pd.DataFrame | None = None
    bench_ops: dict[str, str] = field(default_factory=dict)
    vso_size_notes: list[str] = field(default_factory=list)  # why a VSO differs from CPUID
    stacks: stack_view.StackView | None = None  # record --stacks
    hints: list[str] = field(default_factory=list)  # what the data shows, in words

    @property
    def empty(self) -> bool:
        return self.tasks.empty

    @property
    def notes(self) -> list[str]:
        """The warnings other than the drops one (which a view may show as an alert)."""
        return [w for w in self.warnings if not is_drops(w)]


# Why a component enabled in XCR0|IA32_XSS is left out of task buffers.
LEFT_OUT_WHY = {
    12: "supervisor shadow-stack state, kept only in guest buffers since 6.17",
}


def vso_size_notes(vso: pd.DataFrame, manifest: Manifest) -> list[str]:
    """Where a VSO's size differs from CPUID's compacted size for every enabled component:
    which components the kernel leaves out of that buffer (its XCOMP_BV lacks them), so
    that 856 B against a layout of 880 B is explained rather than a puzzle."""
    x = manifest.host.xstate
    enabled, compacted = x.get("enabled_features"), x.get("compacted_size_enabled")
    if not isinstance(enabled, int) or not isinstance(compacted, int) or vso.empty:
        return []
    notes = []
    for size, xcomp in sorted(
        {(int(s), int(c)) for s, c in zip(vso["size"], vso["xcomp_bv"], strict=True)}
    ):
        if not size or size == compacted or not xcomp >> 63:
            continue
        out = enabled & ~xcomp & ((1 << 63) - 1)
        why = [
            f"{component_name(i)} ({LEFT_OUT_WHY[i]})" if i in LEFT_OUT_WHY else component_name(i)
            for i in bits(out)
        ]
        what = f"leaves {', '.join(why)} out of it" if why else "sizes it differently"
        notes.append(
            f"VSO {size:,} B vs {compacted:,} B, CPUID's compacted size for every enabled "
            f"component: the kernel {what} (XCOMP_BV {xcomp & ((1 << 63) - 1):#x})"
        )
    return notes


def headline(
    c: pd.DataFrame,
    tasks: pd.DataFrame,
    vso: pd.DataFrame,
    manifest: Manifest,
    duration: float,
    model: CostModel,
) -> dict[str, Any]:
    """The headline figures of a run (or of a group of its tasks)."""
    drops = dict(manifest.drops)
    saves = int(tasks["saves"].sum()) if not tasks.empty else 0
    restores = int(tasks["restores"].sum()) if not tasks.empty else 0
    est_ns = float(tasks["est_ns"].sum()) if not tasks.empty else 0.0
    oncpu = float(tasks["oncpu_ns"].sum()) if not tasks.empty else 0.0
    bytes_saved = float(tasks["bytes_saved"].sum()) if not tasks.empty else 0.0
    # Each vector level this CPU has: share of saves with it live; None: it lacks it.
    levels = measures.level_shares(
        c[c["event"].isin(measures.SAVE_EVENTS)] if not c.empty else c, manifest.cpu_levels
    )
    save_rows = c[c["event"].isin(measures.SAVE_EVENTS)] if not c.empty else c
    saves_by = measures.by_reason(save_rows, measures.saves(save_rows))
    bytes_by = measures.by_reason(save_rows, measures.save_bytes(save_rows, manifest.layout))
    headline = {
        "duration_s": duration,
        # why the saved tasks left the CPU (counts.reason): blocked, or preempted
        "saves_by_reason": saves_by,
        "bytes_saved_by_reason": bytes_by,
        "voluntary_save_share": saves_by["voluntary"] / saves if saves else 0.0,
        "events": int(c["count"].sum()) if not c.empty else 0,
        "tasks": len(tasks),
        "vsos": len(vso),
        "saves": saves,
        "restores": restores,
        "restores_skipped": int(tasks["restores_skipped"].sum()) if saves else 0,
        "untraced_saves": int(tasks["untraced_saves"].sum()) if not tasks.empty else 0,
        "saves_per_s": saves / duration if duration > 0 else 0.0,
        "bytes_saved": bytes_saved,
        "bytes_per_save": bytes_saved / saves if saves else 0.0,
        # The stable identifiers of two levels (0, not n/a, where the CPU lacks them).
        "avx512_save_share": levels["AVX-512"] or 0.0,
        "amx_save_share": levels["AMX"] or 0.0,
        "level_shares": levels,
        "cpu_levels": manifest.cpu_levels,
        "fork_copies": int(tasks["fork_copies"].sum()) if not tasks.empty else 0,
        "signal_frames": int(tasks["signal_frames"].sum()) if not tasks.empty else 0,
        "sigreturns": int(tasks["sigreturns"].sum()) if not tasks.empty else 0,
        "est_signal_ns": float(tasks["est_signal_ns"].sum()) if not tasks.empty else 0.0,
        "restores_estimated_tasks": (
            int(tasks["restores_estimated"].sum()) if not tasks.empty else 0
        ),
        "signal_frame_bytes": float(tasks["signal_frame_bytes"].sum()) if not tasks.empty else 0,
        "xcomp_requests": int(tasks["xcomp_requests"].sum()) if not tasks.empty else 0,
        "vso_replacements": int(vso["prev_vso"].notna().sum()) if not vso.empty else 0,
        "est_cpu_ns": est_ns,
        "est_oncpu_share": est_ns / oncpu if oncpu else 0.0,
        "cost_estimate": model.estimate,
        "drops": drops,
        "drops_total": sum(drops.values()),
    }
    return headline


def build(rec: Recording, model: CostModel) -> ReportData:
    layout = rec.layout
    duration = rec.duration_s
    c, raw_timeline = aggregate_counts(rec.iter_counts(columns=[*KEYS, *TIMELINE_COLUMNS]))
    tasks = task_table(c, rec.tasks, rec.vso, layout, model, duration)
    vsos = vso_table(c, rec.vso, rec.tasks, layout)
    headline_ = headline(c, tasks, rec.vso, rec.manifest, duration, model)
    bench = slopes = None
    if rec.bench is not None and not rec.bench.empty:
        frame = rec.bench.astype({"ns": "float64", "xinuse": "uint64"})
        bench = bench_stats.summarize(frame, layout)
        slopes = bench_stats.slopes(frame, layout)
    ops = {b.name: b.op for b in rec.manifest.bench.benchmarks} if rec.manifest.bench else {}
    view = stack_view.build(rec.stack_samples, rec.stacks, rec.tasks, layout)
    return ReportData(
        bench=bench,
        bench_slopes=slopes,
        bench_ops=ops,
        path=str(rec.path),
        manifest=rec.manifest,
        headline=headline_,
        tasks=tasks,
        vsos=vsos,
        processes=process_table(tasks),
        cgroups=cgroup_table(tasks),
        timeline=timeline(raw_timeline, layout, rec.manifest.interval_s, rec.intervals),
        heatmap=heatmap(c, rec.tasks),
        components=summary.live_components(c),
        vso_sizes=summary.vso_sizes(rec.vso),
        vso_size_notes=vso_size_notes(rec.vso, rec.manifest),
        cost=model,
        warnings=[*rec.warnings, *drop_warnings(headline_), *estimate_warnings(headline_)],
        stacks=view,
        hints=[*(view.hints if view else []), *stack_view.fork_hints(c, rec.tasks)],
    )


def estimate_warnings(headline: dict[str, Any]) -> list[str]:
    """Figures that are estimates rather than counts, where the run makes them uncertain."""
    n = headline["restores_estimated_tasks"]
    if not n:
        return []
    return [
        f"restores of {n:,} task{'s' if n != 1 else ''} that caught signals are estimated "
        "(load_fpu was not recorded): two per signal are taken off, too many where a handler "
        "leaves with siglongjmp; record on a kernel where fptrace reads load_fpu "
        "(`fptrace doctor`) for exact ones"
    ]


DROPS = "DROPS:"  # how the losses warning starts (views may show it as an alert instead)


def drop_warnings(headline: dict[str, Any]) -> list[str]:
    """The run's losses in words: one warning that the text, JSON and HTML all carry."""
    lost = {k: v for k, v in headline["drops"].items() if v}
    if not lost:
        return []
    what = ", ".join(f"{k}={v:,}" for k, v in lost.items())
    events = lost.get("lost_events", 0) + lost.get("ring_full", 0)
    share = f" ({events / (events + headline['events']):.1%} of events)" if events else ""
    return [f"{DROPS} {what}{share} — counts are incomplete"]


def is_drops(warning: str) -> bool:
    return warning.startswith(DROPS)
