"""record -> report on a real recording, opened in a real headless Chromium, offline.

The browser test keeps a screenshot in tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import html
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.hardware import AVX512_MASK
from tests.integration.conftest import console_errors, fptrace, wait_for_figures

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
HOSTILE = "</script><b>x"  # 13 bytes: fits a comm (15)
N = 3000

# A workload whose comm is hostile markup: it renames itself, then ping-pongs with a child.
HOSTILE_WORKLOAD = f"""
import ctypes, os
ctypes.CDLL(None).prctl(15, {HOSTILE.encode()!r}, 0, 0, 0)  # PR_SET_NAME
r1, w1 = os.pipe(); r2, w2 = os.pipe()
if os.fork() == 0:
    for _ in range(500):
        os.read(r1, 1); os.write(w2, b"x")
    os._exit(0)
for _ in range(500):
    os.write(w1, b"x"); os.read(r2, 1)
os.wait()
"""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, pingpong, level) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    out = base / "rec"
    hostile = base / "hostile.py"
    hostile.write_text(HOSTILE_WORKLOAD)
    work = base / "work.json"
    script = f"{pingpong} --mode {level} --rounds {N} >{work}; {sys.executable} {hostile}"
    proc = fptrace("record", "-q", "-o", str(out), "--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_numbers_match_the_known_workload(recorded, cpu):
    proc = fptrace("report", str(recorded), "-f", "json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    work = json.loads((recorded.parent / "work.json").read_text())
    assert work["live"], work
    pp = {t["pid"]: t for t in rep["tasks"] if t["comm"] == "pingpong"}
    assert set(pp) == {work["parent_pid"], work["child_pid"]}
    for pid, xinuse in ((work["parent_pid"], "xinuse_parent"), (work["child_pid"], "xinuse_child")):
        t = pp[pid]
        # What the workload had live when it blocked (its own XGETBV(1)), sized by CPUID.
        expect_bytes = cpu.bytes_written(work[xinuse])
        assert abs(t["saves"] - N) <= 10 and abs(t["restores"] - N) <= 10
        assert t["avx512_share"] > 0.99 if work[xinuse] & AVX512_MASK else t["avx512_share"] < 0.01
        assert abs(t["bytes_saved"] - N * expect_bytes) <= 10 * 4096
        assert t["est_ns"] > 0 and 0 < t["est_oncpu_share"] < 1
    assert rep["headline"]["saves"] >= 2 * N and rep["headline"]["drops_total"] == 0
    assert any(t["comm"] == HOSTILE for t in rep["tasks"])  # JSON keeps the real name
    text = fptrace("report", str(recorded), "-f", "text", env=dict(os.environ, COLUMNS="100"))
    assert text.returncode == 0 and "pingpong" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 100


def test_html_in_headless_chromium_offline(recorded, browser):
    proc = fptrace("report", str(recorded))
    assert proc.returncode == 0, proc.stderr
    page = recorded / "report.html"
    assert proc.stdout.strip() == str(page)
    browser.get(page.as_uri())
    figures, drawn = wait_for_figures(browser)
    assert figures >= 4 and drawn == figures  # saves, bytes, heat map, sizes: all drawn
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "report.png"))
    assert console_errors(browser) == []
    # The hostile name is text in the task table, not markup anywhere in the page.
    cells = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tasks td')).map(td => td.textContent)"
    )
    assert HOSTILE in cells
    injected = browser.execute_script(
        "return Array.from(document.querySelectorAll('b'))"
        ".filter(b => b.textContent === 'x').length"
    )
    assert injected == 0
    # Inside the heat map: the figure's labels carry the name HTML-escaped (plotly renders a
    # subset of HTML in labels), and the drawn SVG shows it as plain text, not as bold markup.
    spec = json.loads(
        browser.execute_script(
            "return document.querySelector('script[data-figure=\"fig-heatmap\"]').textContent"
        )
    )
    labels = spec["data"][0]["y"]
    assert any(label.startswith(html.escape(HOSTILE)) for label in labels), labels
    assert not any("<b>" in label for label in labels), labels
    ticks = browser.execute_script(
        "return Array.from(document.querySelectorAll('#fig-heatmap .ytick text'))"
        ".map(t => [t.textContent, t.querySelectorAll('tspan').length])"
    )
    assert any(text.startswith(HOSTILE) and tspans == 0 for text, tspans in ticks), ticks
    # Sorting works: click 'saves' twice -> descending order.
    header = browser.find_elements("css selector", "#tasks thead th")[2]
    header.click()
    header.click()
    saves = browser.execute_script(
        "return Array.from(document.querySelectorAll('#tasks tbody tr'))"
        ".map(r => parseFloat(r.cells[2].getAttribute('data-sort')))"
    )
    assert saves == sorted(saves, reverse=True)


def test_bad_inputs_to_report(tmp_path, recorded):
    bad = fptrace("report", str(tmp_path))
    assert bad.returncode == 65 and "not an fptrace recording" in bad.stderr
    copy = tmp_path / "copy"
    shutil.copytree(recorded, copy)
    data = (copy / "tasks.parquet").read_bytes()
    (copy / "tasks.parquet").write_bytes(data[:100])
    corrupt = fptrace("report", str(copy), "-f", "text")
    assert corrupt.returncode == 65 and "tasks.parquet" in corrupt.stderr
    assert corrupt.stderr.count("\n") == 1 and "Traceback" not in corrupt.stderr
