"""`fptrace fleet`'s table as text, JSON and HTML.  Group names (cgroup paths, comms) come
from traced processes by way of recordings people share: escaped in HTML, never markup in the
terminal."""

from __future__ import annotations

import html
import io
import json
from typing import Any

import pandas as pd
from rich.console import Console
from rich.table import Table

from fptrace.reports.html import fmt_bytes, fmt_ns
from fptrace.reports.plain import print_table, text


def _cells(r: Any) -> list[str]:
    def pct(v: Any) -> str:
        return "n/a" if v is None or pd.isna(v) else f"{v:.0%}"

    def num(v: Any, fmt: str = ",.0f") -> str:
        return "-" if v is None or pd.isna(v) else format(v, fmt)

    return [
        f"{r.recordings:,}",
        num(r.seconds, ",.0f"),
        f"{r.tasks:,}",
        f"{r.saves:,}",
        num(r.saves_per_s),
        num(r.saves_per_switch, ".2f"),
        "-" if pd.isna(r.bytes_per_save) else fmt_bytes(r.bytes_per_save),
        pct(r.avx_save_share),
        pct(r.avx512_save_share),
        "-" if pd.isna(r.est_cpu_ns_per_s) else fmt_ns(r.est_cpu_ns_per_s) + "/s",
    ]


HEADERS = ["runs", "seconds", "tasks", "saves", "saves/s", "per switch", "B/save", "AVX",
           "AVX-512", "est. CPU"]  # fmt: skip


def render_text(table: pd.DataFrame, key: str, title: str, console: Console) -> None:
    t = Table(title=title, title_justify="left")
    t.add_column(key, justify="left")
    for h in HEADERS:
        t.add_column(h, justify="right")
    for r in table.itertuples():
        t.add_row(text(str(r.group)), *_cells(r))
    print_table(console, t)


def text_string(table: pd.DataFrame, key: str, title: str) -> str:
    buf = io.StringIO()
    render_text(table, key, title, Console(file=buf, width=140, highlight=False))
    return buf.getvalue()


def render_json(table: pd.DataFrame, key: str, where: dict[str, str], runs: list[str]) -> str:
    rows = [
        {k: (None if isinstance(v, float) and pd.isna(v) else v) for k, v in r.items()}
        for r in table.to_dict("records")
    ]
    doc = {"group_by": key, "where": where, "recordings": runs, "groups": rows}
    return json.dumps(doc, indent=2, default=str) + "\n"


def render_html(table: pd.DataFrame, key: str, title: str) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in [key, *HEADERS])
    body = "".join(
        "<tr>"
        + "".join(f"<td>{html.escape(c)}</td>" for c in [str(r.group), *_cells(r)])
        + "</tr>\n"
        for r in table.itertuples()
    )
    return (
        "<!doctype html><meta charset=utf-8><title>fptrace fleet</title>"
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:right}"
        "td:first-child{text-align:left}</style>"
        f"<h1>{html.escape(title)}</h1><table id=fleet><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table>\n"
    )
