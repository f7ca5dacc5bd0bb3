"""Every output of a real recording, checked for what a shared recording must never carry.

Recordings travel between people, so the names in them are untrusted twice over (a traced
process chose them; so may whoever edited the file).  Two hostile task names — HTML that
would close a script block, and Rich console markup with a terminal escape — go through
`report` (HTML, JSON, text), `compare` (HTML, JSON, text) and every `export` format:
each must come out as the same text, never as markup or a control sequence.  And no kernel
address may appear in any of them, in hex or in decimal (signed or not).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import (
    KERNEL_HEX,
    KERNEL_MIN,
    console_errors,
    fptrace,
    wait_for_figures,
)

HTML_NAME = "</script><b>x"  # 13 bytes: a comm holds 15
RICH_NAME = '[b]y[/b]"\x1b[2J'  # Rich markup, a quote, then "clear screen"
NAMES = (HTML_NAME, RICH_NAME)
# Each name: a child renames itself, then forks a grandchild (born with that name) and the
# two ping-pong over pipes, so both have saves under the hostile name.
WORKLOAD = """
import ctypes, os, sys
libc = ctypes.CDLL(None)
for name in sys.argv[1:]:
    if os.fork() == 0:
        libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
        r1, w1 = os.pipe(); r2, w2 = os.pipe()
        if os.fork() == 0:
            for _ in range(300):
                os.read(r1, 1); os.write(w2, b"x")
            os._exit(0)
        for _ in range(300):
            os.write(w1, b"x"); os.read(r2, 1)
        os.wait()
        os._exit(0)
    os.wait()
"""
# Decimal integers big enough to be an address: unsigned (19-20 digits) or negative (an
# upper-half address read as a signed 64-bit number lies in [-2**47, -2**32]).
DECIMAL = re.compile(rb"(?<![0-9.])-?[0-9]{10,20}(?![0-9.])")


def kernel_numbers(data: bytes) -> list[str]:
    found = [m.group().decode() for m in KERNEL_HEX.finditer(data)]
    for m in DECIMAL.finditer(data):
        n = int(m.group())
        if (n >= KERNEL_MIN and n < 1 << 64) or -(1 << 47) <= n <= -(1 << 32):
            found.append(m.group().decode())
    return found


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("hostile")
    script = base / "names.py"
    script.write_text(WORKLOAD)
    out = []
    for i in range(2):
        path = base / f"r{i}"
        cmd = [sys.executable, str(script), *NAMES]
        proc = fptrace("record", "-q", "--events", "-o", str(path), "--", *cmd)
        assert proc.returncode == 0, proc.stderr
        out.append(path)
    return out


def outputs(runs: list[Path], tmp: Path) -> dict[str, bytes]:
    """Every text, HTML, JSON and export fptrace makes of these recordings."""
    a, b = (str(p) for p in runs)
    got: dict[str, bytes] = {}
    wide = dict(os.environ, COLUMNS="250")  # whole names in one cell (folding: issue #16)
    for fmt in ("text", "json"):
        proc = fptrace("report", a, "-f", fmt, env=wide)
        assert proc.returncode == 0, proc.stderr
        got[f"report-{fmt}"] = proc.stdout.encode()
        proc = fptrace("compare", a, b, "-f", fmt, env=wide)
        assert proc.returncode == 0, proc.stderr
        got[f"compare-{fmt}"] = proc.stdout.encode()
    assert fptrace("report", a).returncode == 0
    got["report-html"] = (runs[0] / "report.html").read_bytes()
    assert fptrace("compare", a, b, "-f", "html", "-o", str(tmp / "c.html")).returncode == 0
    got["compare-html"] = (tmp / "c.html").read_bytes()
    for fmt in ("csv", "jsonl", "chrome-json", "perfetto"):
        dest = tmp / f"export.{fmt}"
        proc = fptrace("export", a, "-f", fmt, "-o", str(dest))
        assert proc.returncode == 0, proc.stderr
        got[f"export-{fmt}"] = dest.read_bytes()
    return got


def test_names_come_out_as_the_same_text_everywhere(runs, tmp_path):
    got = outputs(runs, tmp_path)
    # The JSON outputs keep the exact names (report tasks; compare's per-comm groups).
    tasks = {t["comm"] for t in json.loads(got["report-json"])["tasks"]}
    assert set(NAMES) <= tasks
    scopes = {g["scope"] for c in json.loads(got["compare-json"]) for g in c["groups"]}
    assert set(NAMES) <= scopes
    # Text: the markup is shown, not applied; no terminal control sequence gets through.
    for key in ("report-text", "compare-text"):
        text = got[key].decode()
        assert "\x1b" not in text, key
        assert HTML_NAME in text and "[b]y[/b]" in text, (key, text)
    # Exports that carry names carry them exactly.
    chrome = json.loads(got["export-chrome-json"])["traceEvents"]
    names = {e["args"]["name"] for e in chrome if e["ph"] == "M"}
    assert set(NAMES) <= names
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2

    trace = perfetto_trace_pb2.Trace()
    trace.ParseFromString(got["export-perfetto"])
    threads = {p.track_descriptor.thread.thread_name for p in trace.packet}
    assert set(NAMES) <= threads
    # CSV and JSON lines carry no names (events and counts are keyed by pid): they parse.
    assert got["export-csv"].startswith(b"ts_ns,")
    assert all(json.loads(line) for line in got["export-jsonl"].splitlines())


def test_compare_html_shows_the_names_as_text(runs, tmp_path, browser):
    page = tmp_path / "c.html"
    a, b = (str(p) for p in runs)
    assert fptrace("compare", a, b, "-f", "html", "-o", str(page)).returncode == 0
    browser.get(page.as_uri())
    figures, drawn = wait_for_figures(browser)
    assert drawn == figures and console_errors(browser) == []
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('td')).map(td => td.textContent)"
    )
    assert HTML_NAME in cells and RICH_NAME.replace("\x1b", "") in {
        c.replace("\x1b", "").replace("\ufffd", "") for c in cells
    }
    injected = browser.execute_script(
        "return Array.from(document.querySelectorAll('b')).filter(b => b.textContent === 'x')"
        ".length"
    )
    assert injected == 0


def test_report_figures_label_the_names_as_written(runs, browser):
    """The heat map's task labels are the names as the process set them: escaped once for
    plotly (a quote was escaped twice and showed as a literal &quot;), never applied."""
    assert fptrace("report", str(runs[0])).returncode == 0
    browser.get((runs[0] / "report.html").as_uri())
    figures, drawn = wait_for_figures(browser)
    assert drawn == figures and console_errors(browser) == []
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('.ytick text')).map(t => t.textContent)"
    )
    assert any(label.startswith(HTML_NAME + " (") for label in labels), labels
    assert any(label.startswith('[b]y[/b]"') for label in labels), labels
    assert not any("&quot;" in label or "&lt;" in label for label in labels), labels
    injected = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg b, svg tspan[style*=bold]'))"
        ".filter(b => b.textContent === 'x').length"
    )
    assert injected == 0


def test_no_kernel_address_in_any_output(runs, tmp_path):
    from plotly.offline import get_plotlyjs

    bundled = get_plotlyjs().encode()  # the inlined library has 64-bit constants of its own
    got = outputs(runs, tmp_path)
    for key, data in got.items():
        data = data.replace(bundled, b"")
        assert kernel_numbers(data) == [], key
    # The binary trace: every integer in every message, not only what looks like text.
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2

    trace = perfetto_trace_pb2.Trace()
    trace.ParseFromString(got["export-perfetto"])

    def ints(message):
        for field, value in message.ListFields():
            items = value if field.is_repeated else [value]
            for item in items:
                if field.type == field.TYPE_MESSAGE:
                    yield from ints(item)
                elif isinstance(item, int):
                    yield item

    assert all(n < KERNEL_MIN for n in ints(trace))


def test_the_check_finds_addresses_in_every_notation():
    """The scanner itself: it would catch an address however a writer printed it."""
    addr = 0xFFFF_8881_0A2B_3C40
    for text in (f"{addr:#x}", f"{addr:x}", str(addr), str(addr - (1 << 64))):
        assert kernel_numbers(f"x {text} y".encode()), text
    assert kernel_numbers(b"xcomp_bv 9223372036854778087 size 2448 1.5e9") == []
