"""The terminal summary: printed when a recording stops, and by `fptrace report -f text`.

Fits 100 columns.  Names from traced processes go through ``plain.text``, so that a task
called ``[bold]x`` is printed as such, never interpreted as markup, and one whose name
holds an escape sequence cannot drive the terminal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace.analysis.report import ReportData, is_drops
from fptrace.reports.html import fmt_bytes, fmt_ns
from fptrace.reports.plain import print_table, printable, text
from fptrace.xstate import LEVEL_IDS

WIDTH = 100


def render_report(data: ReportData, console: Console, top: int = 10) -> None:
    h = data.headline
    head = Text()
    head.append(printable(data.path), style="bold")
    head.append(
        f"  {h['duration_s']:.1f}s  {h['events']:,} events  {h['saves']:,} saves  "
        f"{h['restores']:,} restores  {h['tasks']} tasks  {h['vsos']} VSOs"
    )
    console.print(head)
    for w in data.warnings:
        drops = is_drops(w)
        console.print(text(w if drops else f"warning: {w}", "bold red" if drops else "yellow"))
    if data.bench is not None:
        render_bench(data.bench, data.bench_slopes, data.bench_ops, console)
        check = data.manifest.record_check
        if check:
            console.print(
                Text(
                    f"tracer check: {check.tasks_checked} tasks, max |traced saves - round "
                    f"trips| {check.max_abs_diff} (tolerance {check.tolerance}): "
                    + ("ok" if check.ok else "MISMATCH")
                )
            )
    if data.empty:
        if data.bench is None:
            console.print(
                "Nothing to see: no FPU save or restore was recorded for the traced tasks."
            )
        return
    est = "estimate" if h["cost_estimate"] else "calibrated"
    console.print(
        Text(
            f"{h['saves_per_s']:,.0f} saves/s, {h['restores_skipped']:,} restores skipped, "
            f"~{fmt_bytes(h['bytes_per_save'])} per save; "
            f"CPU time ~{fmt_ns(h['est_cpu_ns'])} ({h['est_oncpu_share']:.1%} of on-CPU, {est})"
        )
    )
    console.print(Text("Saves with each vector level live: " + level_words(h["level_shares"])))
    if h["saves"]:
        console.print(Text("Saves by why the task left the CPU: " + reason_words(h)))
    # The share of saves with the widest level this CPU has live (AVX on an AVX2 CPU).
    widest = (h.get("cpu_levels") or ["AVX-512"])[-1]
    share = f"{LEVEL_IDS[widest]}_share"
    counts: list[tuple[str, Callable[[Any], str]]] = [
        ("saves", lambda r: f"{r.saves:,}"),
        ("restores", lambda r: f"{r.restores:,}"),
        ("skipped", lambda r: f"{r.restores_skipped:,}"),
    ]
    tasks = _rows_table("Top tasks by saves", "pid", data.tasks.head(top), [
        *counts,
        ("saves/s", lambda r: f"{r.saves_per_s:,.0f}"),
        ("switches", lambda r: f"{int(r.switches or 0):,}"),
        (widest, lambda r: f"{getattr(r, share):.0%}"),
        ("est. CPU", lambda r: fmt_ns(r.est_ns)),
    ])  # fmt: skip
    print_table(console, tasks)
    if data.processes["threads"].gt(1).any():  # else the same rows as the tasks
        procs = _rows_table("Top processes (threads summed)", "tgid", data.processes.head(top), [
            ("threads", lambda r: f"{r.threads:,}"),
            *counts,
            ("switches", lambda r: f"{int(r.switches):,}"),
            ("est. CPU", lambda r: fmt_ns(r.est_ns)),
        ])  # fmt: skip
        print_table(console, procs)
    if len(data.cgroups) > 1:  # one cgroup: the tasks' rows again
        cgs = Table(title="Top cgroups by saves", title_justify="left")
        for name in ("cgroup", "tasks", "saves", "restores", "AVX-512", "est. CPU"):
            cgs.add_column(name, justify="left" if name == "cgroup" else "right")
        for r in data.cgroups.head(top).itertuples():
            avx512 = r.avx512_saves / r.saves if r.saves else 0.0
            cgs.add_row(
                text(r.cgroup), f"{r.tasks:,}", f"{r.saves:,}", f"{r.restores:,}",
                f"{avx512:.0%}", fmt_ns(r.est_ns),
            )  # fmt: skip
        print_table(console, cgs)
    for hint in data.hints:
        console.print(text("hint: " + hint, "cyan"))
    if data.stacks is not None and not data.stacks.sites.empty:
        sites = Table(
            title="Call sites that block with AVX/AVX-512 state live", title_justify="left"
        )
        for name in ("comm", "pid", "where it blocked", "called from", "live", "samples", "share"):
            sites.add_column(
                name, justify="right" if name in ("pid", "samples", "share") else "left"
            )
        for r in data.stacks.sites.head(top).itertuples():
            sites.add_row(
                text(r.comm), str(r.pid), text(r.site), text(r.caller), r.level, f"{r.samples:,}",
                f"{r.share:.0%}",
            )  # fmt: skip
        print_table(console, sites)
    comps = data.components
    line = Text("Live at switch saves: ")
    line.append(", ".join(f"{r.component} {r.share:.0%}" for r in comps.itertuples()) or "none")
    console.print(line)
    if not data.vso_sizes.empty:
        parts = [
            f"{int(r.size):,} B (user {int(r.user_size):,}) x{r.vsos}"
            for r in data.vso_sizes.itertuples()
        ]
        console.print(Text("VSO sizes: " + ", ".join(parts[:6])))
    for note in data.vso_size_notes:
        console.print(Text(note))


def reason_words(h: dict[str, Any]) -> str:
    """ "voluntary 56% (blocked), involuntary 44% (preempted)", with "not recorded" where the
    recording has no reason (the ftrace backend, an older recording)."""
    by, total = h["saves_by_reason"], h["saves"]
    parts = [
        f"voluntary {by['voluntary'] / total:.0%} (blocked)",
        f"involuntary {by['involuntary'] / total:.0%} (preempted)",
    ]
    if by["unknown"]:
        parts.append(f"not recorded {by['unknown'] / total:.0%}")
    return ", ".join(parts)


def _rows_table(
    title: str, key: str, rows: pd.DataFrame, columns: list[tuple[str, Callable[[Any], str]]]
) -> Table:
    """A table of tasks or processes: the id, the name (never markup), then ``columns``."""
    t = Table(title=title, title_justify="left")
    t.add_column(key, justify="right", no_wrap=True)
    t.add_column("comm", no_wrap=True, min_width=8, max_width=16)
    for name, _ in columns:
        t.add_column(name, justify="right", no_wrap=True)
    for row in rows.itertuples():
        t.add_row(str(getattr(row, key)), text(row.comm), *(show(row) for _, show in columns))
    return t


def level_words(shares: dict[str, float | None]) -> str:
    """ "SSE 100%, AVX 97%, AVX-512 n/a, …": n/a for a level this CPU does not have."""
    return ", ".join(f"{k} {'n/a' if v is None else format(v, '.0%')}" for k, v in shares.items())


def _dur(ns: float) -> str:
    return fmt_ns(ns).replace(" ", "\u00a0")


def render_bench(
    summary: pd.DataFrame, slopes: pd.DataFrame, ops: dict[str, str], console: Console
) -> None:
    """One table: each benchmark's levels with median, 95 % CI and the change vs SSE."""
    if summary.empty:
        console.print("No benchmark results.")
        return
    t = Table(title="fptrace bench (median of repetitions, 95% CI)", title_justify="left")
    t.add_column("benchmark", overflow="fold", max_width=34)
    t.add_column("state", no_wrap=True)
    t.add_column("median", justify="right", no_wrap=True)
    t.add_column("95% CI", justify="right", no_wrap=True)
    t.add_column("vs SSE", justify="right", no_wrap=True)
    unstable = False
    for (bench, metric), g in summary.groupby(["bench", "metric"], sort=False):
        label = bench if metric == "op" else f"{bench} {metric}"
        first = True
        for r in g.itertuples():
            if r.state == "sse" or r.ratio is None or pd.isna(r.ratio):
                change = ""
            elif not r.significant:
                change = "~"
            else:
                change = f"{(r.ratio - 1) * 100:+.1f}%"
            flag = " !" if r.unstable else ""
            unstable |= bool(r.unstable)
            t.add_row(
                Text(label if first else ""),
                r.state,
                _dur(r.median_ns) + flag,
                f"[{_dur(r.ci_low)}, {_dur(r.ci_high)}]",
                change,
            )
            first = False
        s = slopes[(slopes["bench"] == bench) & (slopes["metric"] == metric)]
        if not s.empty and len(g) > 2:
            r = s.iloc[0]
            per_kib = f"{r.ns_per_kib:+.1f} ns/KiB" if r.significant else "~ ns/KiB"
            t.add_row(
                Text(f"  {ops.get(bench, '')}", style="dim"),
                "slope",
                per_kib,
                f"[{r.ci_low:+.1f}, {r.ci_high:+.1f}]",
                "",
            )
        t.add_section()
    print_table(console, t)
    if unstable:
        console.print("! unstable: the repetitions spread by more than 10% (rerun, or --reps)")
