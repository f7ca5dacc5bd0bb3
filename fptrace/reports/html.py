"""The offline HTML report: one file, plotly.js inlined, Jinja templates with autoescaping.

Safety: every string that came from a traced process (comm, cmdline, cgroup) reaches the
page either through Jinja's autoescaping (tables, text) or inside JSON data blocks whose
``<``, ``>`` and ``&`` are \\u-escaped (figures, so ``</script>`` cannot end a block), and
names shown inside plotly figures are HTML-escaped first, because plotly renders a subset
of HTML tags in its labels.
"""

from __future__ import annotations

import html
import json
import math
from importlib import resources
from typing import Any

import jinja2
import pandas as pd
import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from fptrace import __version__
from fptrace.analysis import stacks as stack_view
from fptrace.analysis.report import STATE_CLASSES, ReportData
from fptrace.xstate import decode

STATE_COLORS = {
    "AMX": "#7b3294",
    "AVX-512": "#d7191c",
    "AVX": "#fdae61",
    "SSE/x87": "#2c7bb6",
    "init": "#bababa",
}


def safe_json(data: Any) -> str:
    """JSON that can sit inside <script> in HTML: no '<', '>', '&', U+2028/9 verbatim."""
    text = json.dumps(data, default=_default, allow_nan=False)
    for ch, esc in (
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("&", "\\u0026"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(ch, esc)
    return text


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return str(obj)


def fig_json(fig: go.Figure) -> dict[str, Any]:
    fig.update_layout(
        template="plotly_white",
        margin={"l": 60, "r": 20, "t": 40, "b": 50},
        font={"family": "system-ui, sans-serif", "size": 12},
    )
    return json.loads(fig.to_json())


def timeline_figures(data: ReportData) -> list[dict[str, Any]]:
    tl = data.timeline
    if tl.empty:
        return []
    figs = []
    # Rates over each interval's measured span, drawn as wide as that span: a drain that
    # came late is a wide bar of the same height, not a spike.
    for value, title, axis in (
        ("saves_per_s", "Saves per second, by live state", "saves/s"),
        ("bytes_saved_per_s", "Bytes saved per second (estimate), by live state", "bytes/s"),
    ):
        fig = go.Figure()
        for state in STATE_CLASSES:
            part = tl[tl["state"] == state]
            if part.empty or part[value].fillna(0).sum() == 0:
                continue
            fig.add_trace(
                go.Bar(
                    x=(part["start_s"] + part["end_s"]) / 2,
                    width=part["end_s"] - part["start_s"],
                    y=part[value],
                    name=state,
                    marker_color=STATE_COLORS[state],
                )
            )
        fig.update_layout(
            barmode="stack", title=title, xaxis_title="time (s)", yaxis_title=axis, bargap=0
        )
        figs.append({"id": f"fig-{value}", "spec": fig_json(fig)})
    return figs


def heatmap_figure(data: ReportData) -> dict[str, Any] | None:
    hm = data.heatmap
    if hm.empty:
        return None
    fig = go.Figure(
        go.Heatmap(
            z=hm.to_numpy().round(4),
            x=list(hm.columns),
            # plotly renders a few tags and only &amp; &lt; &gt; among entities: a quote stays
            y=[html.escape(str(i), quote=False) for i in hm.index],
            colorscale="Reds",
            zmin=0,
            zmax=1,
            colorbar={"title": "share"},
        )
    )
    fig.update_layout(
        title="Share of each task's saves with each component live",
        height=max(320, 22 * len(hm) + 140),
        yaxis={"autorange": "reversed"},
    )
    return {"id": "fig-heatmap", "spec": fig_json(fig)}


def stacks_figure(data: ReportData) -> dict[str, Any] | None:
    """record --stacks: an icicle of the samples, rooted at the live level and the reason."""
    if data.stacks is None or not data.stacks.paths:
        return None
    nodes = stack_view.icicle_nodes(data.stacks)
    fig = go.Figure(
        go.Icicle(
            ids=nodes["ids"],
            # plotly renders a few tags and only &amp; &lt; &gt; among entities
            labels=[html.escape(label, quote=False) for label in nodes["labels"]],
            parents=nodes["parents"],
            values=nodes["values"],
            branchvalues="total",
            tiling={"orientation": "v"},
            maxdepth=8,
        )
    )
    fig.update_layout(
        title="Where the state beyond SSE was live at a save (samples; click to zoom)",
        height=620,
        margin={"t": 50, "l": 10, "r": 10, "b": 10},
    )
    return {"id": "fig-stacks", "spec": fig_json(fig)}


SITE_COLUMNS = [
    ("comm", "comm", "text"),
    ("pid", "pid", "id"),
    ("site", "where it blocked", "text"),
    ("caller", "called from", "text"),
    ("level", "live", "text"),
    ("samples", "samples", "int"),
    ("share", "of its blocking samples", "pct"),
]


def size_figure(data: ReportData) -> dict[str, Any] | None:
    sizes = data.vso_sizes
    if sizes.empty:
        return None
    labels = [f"{int(r.size):,} B" for r in sizes.itertuples()]
    fig = go.Figure(go.Bar(x=labels, y=sizes["vsos"], marker_color="#2c7bb6"))
    fig.update_layout(
        title="VSOs by kernel buffer size (fpstate->size)",
        xaxis_title="buffer size",
        yaxis_title="VSOs",
    )
    return {"id": "fig-sizes", "spec": fig_json(fig)}


def _fmt(value: Any, kind: str = "int") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if pd.isna(value):
        return "–"
    if kind == "pct":
        return f"{float(value) * 100:.1f}%"
    if kind == "float":
        return f"{float(value):,.1f}"
    if kind == "bytes":
        return fmt_bytes(float(value))
    if kind == "ns":
        return fmt_ns(float(value))
    if kind == "id":
        return str(int(value))
    return f"{int(value):,}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"


def fmt_ns(n: float) -> str:
    for unit, div in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if abs(n) >= div:
            return f"{n / div:,.2f} {unit}"
    return f"{n:,.0f} ns"


TASK_COLUMNS = [
    ("pid", "pid", "id"),
    ("comm", "comm", "text"),
    ("saves", "saves", "int"),
    ("restores", "restores", "int"),
    ("restores_skipped", "skipped restores", "int"),
    ("untraced_saves", "untraced saves", "int"),
    ("saves_per_s", "saves/s", "float"),
    ("voluntary_saves", "saves, blocked", "int"),
    ("involuntary_saves", "saves, preempted", "int"),
    ("switch_save_share", "switches that saved", "pct"),
    ("bytes_saved", "bytes saved", "bytes"),
    ("avx512_share", "AVX-512 live", "pct"),
    ("amx_share", "AMX live", "pct"),
    ("fork_copies", "fork copies", "int"),
    ("signal_frames", "signal frames", "int"),
    ("xcomp_requests", "AMX perm. requests", "int"),
    ("vso_replacements", "VSO replaced", "int"),
    ("est_ns", "est. CPU time", "ns"),
    ("est_oncpu_share", "of on-CPU", "pct"),
]
CGROUP_COLUMNS = [
    ("cgroup", "cgroup (v2 path)", "text"),
    ("tasks", "tasks", "int"),
    ("processes", "processes", "int"),
    ("saves", "saves", "int"),
    ("avx512_saves", "saves with AVX-512 live", "int"),
    ("restores", "restores", "int"),
    ("bytes_saved", "bytes saved", "bytes"),
    ("switches", "switches", "int"),
    ("est_ns", "est. CPU", "ns"),
]

PROCESS_COLUMNS = [
    ("tgid", "process (tgid)", "id"),
    ("comm", "comm", "text"),
    ("threads", "threads", "int"),
    ("saves", "saves", "int"),
    ("restores", "restores", "int"),
    ("restores_skipped", "skipped restores", "int"),
    ("bytes_saved", "bytes saved", "bytes"),
    ("switches", "switches", "int"),
    ("est_ns", "est. CPU", "ns"),
]
VSO_COLUMNS = [
    ("vso", "VSO", "text"),
    ("pid", "pid", "id"),
    ("comm", "comm", "text"),
    ("size", "size", "int"),
    ("user_size", "user size", "int"),
    ("footprint", "footprint", "int"),
    ("saves", "saves", "int"),
    ("activations", "activations", "int"),
    ("live_components", "live components", "text"),
    ("is_valloc", "realloc'd", "text"),
    ("is_guest", "guest", "text"),
    ("prev_vso", "replaced", "text"),
]


def table_rows(df: pd.DataFrame, columns: list[tuple[str, str, str]]) -> list[list[Any]]:
    """Cells as (display text, sort key); text is escaped later by Jinja."""
    rows = []
    for rec in df.to_dict("records"):
        row = []
        for key, _label, kind in columns:
            value = rec.get(key)
            if kind == "text":
                shown = (
                    ""
                    if value is None or (not isinstance(value, str) and pd.isna(value))
                    else str(value)
                )
                row.append((shown, shown))
            else:
                num = None if value is None or pd.isna(value) else float(value)
                row.append((_fmt(value, kind), "" if num is None else repr(num)))
        rows.append(row)
    return rows


def template_env() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(
        lambda name: resources.files("fptrace.reports").joinpath("templates", name).read_text()
    )
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = _fmt
    env.filters["decode"] = lambda m: ", ".join(decode(int(m))) if m is not None else "–"
    env.filters["hex"] = lambda m: f"{int(m):#x}" if m is not None else "–"
    return env


def static_text(name: str) -> str:
    return resources.files("fptrace.reports").joinpath("static", name).read_text()


BENCH_COLUMNS = [
    ("bench", "benchmark", "text"),
    ("metric", "metric", "text"),
    ("state", "state", "text"),
    ("n", "n", "int"),
    ("median_ns", "median", "ns"),
    ("ci_low", "95% CI low", "ns"),
    ("ci_high", "95% CI high", "ns"),
    ("change", "vs SSE", "text"),
    ("rsd", "spread (RSD)", "pct"),
    ("stable", "stable", "text"),
]


def bench_rows(data: ReportData) -> list[list[Any]]:
    if data.bench is None:
        return []
    df = data.bench.copy()
    df["change"] = [
        ""
        if r.state == "sse" or r.ratio is None or pd.isna(r.ratio)
        else ("~" if not r.significant else f"{(r.ratio - 1) * 100:+.1f}%")
        for r in df.itertuples()
    ]
    df["stable"] = ["no (>10%)" if u else "yes" for u in df["unstable"]]
    return table_rows(df, BENCH_COLUMNS)


def render_html(data: ReportData, max_rows: int = 2000) -> str:
    m = data.manifest.to_json()  # the template reads it as JSON: its field names are the doc's
    figures = [
        f
        for f in [
            *timeline_figures(data),
            heatmap_figure(data),
            size_figure(data),
            stacks_figure(data),
        ]
        if f
    ]
    host = m.get("host", {})
    return (
        template_env()
        .get_template("report.html.j2")
        .render(
            data=data,
            h=data.headline,
            m=m,
            host=host,
            xstate=host.get("xstate", {}),
            figures=[{"id": f["id"], "json": safe_json(f["spec"])} for f in figures],
            task_columns=TASK_COLUMNS,
            task_rows=table_rows(data.tasks.head(max_rows), TASK_COLUMNS),
            tasks_total=len(data.tasks),
            process_columns=PROCESS_COLUMNS,
            process_rows=table_rows(data.processes.head(max_rows), PROCESS_COLUMNS),
            hints=data.hints,
            stacks=data.stacks,
            site_columns=SITE_COLUMNS,
            site_rows=table_rows(data.stacks.sites.head(max_rows), SITE_COLUMNS)
            if data.stacks is not None
            else [],
            cgroup_columns=CGROUP_COLUMNS,
            cgroup_rows=table_rows(data.cgroups.head(max_rows), CGROUP_COLUMNS),
            vso_columns=VSO_COLUMNS,
            vso_rows=table_rows(data.vsos.head(max_rows), VSO_COLUMNS),
            vsos_total=len(data.vsos),
            max_rows=max_rows,
            plotly_js=get_plotlyjs(),
            report_js=static_text("report.js"),
            report_css=static_text("report.css"),
            bench_columns=BENCH_COLUMNS,
            bench_rows=bench_rows(data),
            bench_slopes=[] if data.bench_slopes is None else data.bench_slopes.to_dict("records"),
            version=__version__,
            cost=data.cost.to_json(),
        )
    )
