"""The terminal summary: printed when a recording stops, and by `fptrace report -f text`.

Fits 100 columns.  Names from traced processes go into rich ``Text`` objects, so that a
task called ``[bold]x`` is printed as such and never interpreted as markup.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace.analysis.report import ReportData
from fptrace.reports.html import _bytes, _ns

WIDTH = 100


def render_report(data: ReportData, console: Console, top: int = 10) -> None:
    h = data.headline
    head = Text()
    head.append(data.path, style="bold")
    head.append(
        f"  {h['duration_s']:.1f}s  {h['events']:,} events  {h['saves']:,} saves  "
        f"{h['restores']:,} restores  {h['tasks']} tasks  {h['vsos']} VSOs"
    )
    console.print(head)
    for w in data.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    if h["drops_total"]:
        lost = ", ".join(f"{k}={v}" for k, v in h["drops"].items() if v)
        console.print(Text(f"DROPS: {lost} — counts are incomplete", style="bold red"))
    if data.empty:
        console.print("Nothing to see: no FPU save or restore was recorded for the traced tasks.")
        return
    est = "estimate" if h["cost_estimate"] else "calibrated"
    console.print(
        Text(
            f"{h['saves_per_s']:,.0f} saves/s, {h['restores_skipped']:,} restores skipped, "
            f"~{_bytes(h['bytes_per_save'])} per save, AVX-512 live in "
            f"{h['avx512_save_share']:.0%} and AMX in {h['amx_save_share']:.0%} of saves; "
            f"CPU time ~{_ns(h['est_cpu_ns'])} ({h['est_oncpu_share']:.1%} of on-CPU, {est})"
        )
    )
    t = Table(title="Top tasks by saves", title_justify="left")
    t.add_column("pid", justify="right", no_wrap=True)
    t.add_column("comm", overflow="fold", min_width=8)  # names give way first
    for col in ("saves", "restores", "skipped", "saves/s", "switches", "AVX-512", "est. CPU"):
        t.add_column(col, justify="right", no_wrap=True)
    for row in data.tasks.head(top).itertuples():
        t.add_row(
            str(row.pid),
            Text(str(row.comm)),
            f"{row.saves:,}",
            f"{row.restores:,}",
            f"{row.restores_skipped:,}",
            f"{row.saves_per_s:,.0f}",
            f"{int(row.switches or 0):,}",
            f"{row.avx512_share:.0%}",
            _ns(row.est_ns),
        )
    console.print(t)
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
