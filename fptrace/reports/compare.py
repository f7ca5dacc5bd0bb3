"""Render comparisons: a terminal table, JSON, and an offline HTML page (same rules as report)."""

from __future__ import annotations

import json
import math
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace import __version__
from fptrace.analysis.compare import METRICS, Comparison, Row
from fptrace.reports.html import fig_json, safe_json, static_text, template_env
from fptrace.reports.plain import print_table, text


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    a = abs(v)
    if a and a < 1:
        return f"{v:.3f}"
    return f"{v:,.1f}" if a < 1000 else f"{v:,.0f}"


def _ci(r: Row) -> str:
    if r.ci_low is None or r.ci_high is None:
        return ""
    return f"[{(r.ci_low - 1) * 100:+.1f}%, {(r.ci_high - 1) * 100:+.1f}%]"


def render_text(comparisons: list[Comparison], console: Console) -> None:
    for comp in comparisons:
        a, b = comp.labels
        console.print(text(f"B: {b}  vs  A: {a} (baseline)", style="bold"))
        console.print(Text(f"runs: A {len(comp.runs[0])}, B {len(comp.runs[1])}"))
        for w in comp.warnings:
            console.print(text(f"warning: {w}", style="yellow"))
        if comp.changes:
            t = Table(title="What changed", title_justify="left")
            t.add_column("", no_wrap=True)
            t.add_column("what", overflow="fold")
            t.add_column("A", overflow="fold")
            t.add_column("B", overflow="fold")
            for ch in comp.changes:
                t.add_row(
                    "*" if ch.fpu_relevant else "",
                    text(f"{ch.category}: {ch.key}"),
                    text(ch.a),
                    text(ch.b),
                )
            print_table(console, t)
            console.print("* FPU/xstate-relevant")
        else:
            console.print(
                "What changed: nothing in kernel, boot line, config, CPU or xstate layout"
            )
        for title, rows, bench in (
            (
                "Metrics (medians; change of B vs A with 95% CI; ~ = not significant)",
                comp.rows,
                False,
            ),
            ("Per task group (same comm)", comp.group_rows, False),
            ("Benchmarks (ns per operation)", comp.bench_rows, True),
        ):
            if not rows:
                continue
            t = Table(title=title, title_justify="left")
            t.add_column("scope" if not bench else "benchmark", overflow="fold", max_width=22)
            t.add_column("metric" if not bench else "state", overflow="fold", min_width=12)
            t.add_column("A", justify="right", no_wrap=True)
            t.add_column("B", justify="right", no_wrap=True)
            t.add_column("change", justify="right", no_wrap=True)
            t.add_column("95% CI", justify="right", no_wrap=True)
            for r in rows:
                t.add_row(
                    text(r.scope),
                    r.metric if bench else METRICS.get(r.metric, r.metric),  # words, units
                    _num(r.a_median),
                    _num(r.b_median),
                    r.change,
                    _ci(r),
                )
            print_table(console, t)


def _row_json(r: Row) -> dict[str, Any]:
    return {
        "scope": r.scope,
        "metric": r.metric,
        "a_median": r.a_median,
        "b_median": r.b_median,
        "ratio": r.ratio,
        "ci_low": r.ci_low,
        "ci_high": r.ci_high,
        "p_value": r.p_value,
        "significant": r.significant,
        "change": r.change,
        "n_a": r.n_a,
        "n_b": r.n_b,
    }


def to_json(comparisons: list[Comparison]) -> list[dict[str, Any]]:
    return [
        {
            "baseline": c.labels[0],
            "candidate": c.labels[1],
            "runs": {"baseline": c.runs[0], "candidate": c.runs[1]},
            "problems": c.problems,
            "warnings": c.warnings,
            "changes": [
                {
                    "category": ch.category,
                    "key": ch.key,
                    "a": ch.a,
                    "b": ch.b,
                    "fpu_relevant": ch.fpu_relevant,
                }
                for ch in c.changes
            ],
            "metrics": [_row_json(r) for r in c.rows],
            "groups": [_row_json(r) for r in c.group_rows],
            "bench": [_row_json(r) for r in c.bench_rows],
        }
        for c in comparisons
    ]


def render_json(comparisons: list[Comparison]) -> str:
    return json.dumps(to_json(comparisons), indent=2, default=str) + "\n"


def _ratio_figure(comp: Comparison, idx: int) -> dict[str, Any] | None:
    with_ratio = [(r, r.ratio) for r in comp.rows if r.ratio is not None]
    if not with_ratio:
        return None
    rows = [r for r, _ in with_ratio]
    names = [METRICS.get(r.metric, r.metric) for r in rows]
    y = [(ratio - 1) * 100 for _, ratio in with_ratio]
    plus = [((r.ci_high or ratio) - ratio) * 100 for r, ratio in with_ratio]
    minus = [(ratio - (r.ci_low or ratio)) * 100 for r, ratio in with_ratio]
    colors = ["#bababa" if r.significant is False else "#d7191c" for r in rows]
    fig = go.Figure(
        go.Bar(
            x=y,
            y=names,
            orientation="h",
            marker_color=colors,
            error_x={"type": "data", "array": plus, "arrayminus": minus},
        )
    )
    fig.update_layout(
        title="Change of B vs A (%, 95% CI; grey: not significant)",
        height=80 + 32 * len(rows),
        yaxis={"autorange": "reversed"},
    )
    return {"id": f"fig-ratio-{idx}", "json": safe_json(fig_json(fig))}


def render_html(comparisons: list[Comparison]) -> str:
    figures = [f for i, c in enumerate(comparisons) if (f := _ratio_figure(c, i))]
    return (
        template_env()
        .get_template("compare.html.j2")
        .render(
            comparisons=comparisons,
            metrics=METRICS,
            figures=figures,
            num=_num,
            ci=_ci,
            plotly_js=get_plotlyjs(),
            report_js=static_text("report.js"),
            report_css=static_text("report.css"),
            version=__version__,
        )
    )
