"""The short terminal summary printed when a recording stops (fits 100 columns)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from fptrace.analysis import summary
from fptrace.recording.loader import Recording


def render_summary(rec: Recording, console: Console, top: int = 10) -> None:
    m = rec.manifest
    drops = m.get("drops") or {}
    tot = summary.totals(rec.counts, rec.tasks, drops)
    dur = rec.duration_s
    head = Text()
    head.append(f"{rec.path}", style="bold")
    head.append(
        f"  {dur:.1f}s  {tot.events:,} events  {tot.saves:,} saves  {tot.restores:,} restores"
        f"  {tot.tasks} tasks  {tot.vsos} VSOs"
    )
    console.print(head)
    for w in rec.warnings:
        console.print(Text(f"warning: {w}", style="yellow"))
    if tot.drops:
        lost = ", ".join(f"{k}={v}" for k, v in drops.items() if v)
        console.print(Text(f"DROPS: {lost} — counts are incomplete", style="bold red"))
    if rec.counts.empty:
        console.print("No FPU save or restore was recorded for the traced tasks.")
        return

    tasks = summary.per_task(rec.counts, rec.tasks).head(top)
    t = Table(title="Top tasks by saves", title_justify="left")
    for col, just in (
        ("pid", "right"),
        ("comm", "left"),
        ("saves", "right"),
        ("restores", "right"),
        ("skipped", "right"),
        ("saves/s", "right"),
        ("switches", "right"),
        ("on-CPU ms", "right"),
    ):
        t.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
    for row in tasks.itertuples():
        t.add_row(
            str(row.pid),
            Text(str(row.comm)),  # Text: never interpreted as rich markup
            f"{row.saves:,}",
            f"{row.restores:,}",
            f"{row.restores_skipped:,}",
            f"{row.saves / dur:,.0f}" if dur else "-",
            f"{int(row.switches or 0):,}",
            f"{int(row.oncpu_ns or 0) / 1e6:,.1f}",
        )
    console.print(t)

    comps = summary.live_components(rec.counts)
    bps = summary.bytes_per_save(rec.counts, rec.layout)
    line = Text("Live at switch saves: ")
    line.append(", ".join(f"{r.component} {r.share:.0%}" for r in comps.itertuples()) or "none")
    if bps is not None:
        line.append(f"   ~{bps:,.0f} B per save")
    console.print(line)
    sizes = summary.vso_sizes(rec.vso)
    if not sizes.empty:
        parts = [
            f"{int(r.size):,} B (user {int(r.user_size):,}) x{r.vsos}" for r in sizes.itertuples()
        ]
        console.print(Text("VSO sizes: " + ", ".join(parts[:6])))
