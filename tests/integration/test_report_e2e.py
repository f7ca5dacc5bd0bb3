"""record -> report on a real recording, opened in a real headless Chromium, offline.

The browser test keeps a screenshot in tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import fptrace, require_tool

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
def recorded(tmp_path_factory, pingpong) -> Path:
    base = tmp_path_factory.mktemp("e2e")
    out = base / "rec"
    hostile = base / "hostile.py"
    hostile.write_text(HOSTILE_WORKLOAD)
    script = f"{pingpong} --mode avx512 --rounds {N}; {sys.executable} {hostile}"
    proc = fptrace("record", "-q", "-o", str(out), "--", "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    return out


def test_report_numbers_match_the_known_workload(recorded, cpu_layout):
    proc = fptrace("report", str(recorded), "-f", "json")
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    pp = [t for t in rep["tasks"] if t["comm"] == "pingpong"]
    assert len(pp) == 2
    expect_bytes = cpu_layout.bytes_saved(0xE6)
    for t in pp:
        assert abs(t["saves"] - N) <= 10 and abs(t["restores"] - N) <= 10
        assert t["avx512_share"] > 0.99
        assert abs(t["bytes_saved"] - N * expect_bytes) <= 10 * 4096
        assert t["est_ns"] > 0 and 0 < t["est_oncpu_share"] < 1
    assert rep["headline"]["saves"] >= 2 * N and rep["headline"]["drops_total"] == 0
    assert any(t["comm"] == HOSTILE for t in rep["tasks"])  # JSON keeps the real name
    text = fptrace("report", str(recorded), "-f", "text", env=dict(os.environ, COLUMNS="100"))
    assert text.returncode == 0 and "pingpong" in text.stdout
    assert max(len(line) for line in text.stdout.splitlines()) <= 100


def test_html_in_headless_chromium_offline(recorded):
    chromedriver = require_tool("chromedriver")
    require_tool("chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    proc = fptrace("report", str(recorded))
    assert proc.returncode == 0, proc.stderr
    page = recorded / "report.html"
    assert proc.stdout.strip() == str(page)

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: networking is off
        "--proxy-server=127.0.0.1:9",
        "--window-size=1300,2200",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    try:
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
        )
        driver.get(page.as_uri())
        figures = driver.execute_script(
            'return document.querySelectorAll("script[data-figure]").length'
        )
        assert figures >= 4  # saves, bytes, heat map, sizes
        driver.set_script_timeout(30)
        drawn = driver.execute_async_script(
            """const want = arguments[0]; const done = arguments[arguments.length - 1];
            const t0 = Date.now();
            (function poll() {
              const n = document.querySelectorAll('[data-drawn="1"] .main-svg').length;
              if (n >= want || Date.now() - t0 > 20000) done(n); else setTimeout(poll, 100);
            })();""",
            figures,
        )
        assert drawn >= figures  # every figure drawn by plotly
        ARTIFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTIFACTS / "report.png"))
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        # The hostile name is text in the task table, not markup anywhere in the page.
        cells = driver.execute_script(
            "return Array.from(document.querySelectorAll('#tasks td')).map(td => td.textContent)"
        )
        assert HOSTILE in cells
        injected = driver.execute_script(
            "return Array.from(document.querySelectorAll('b'))"
            ".filter(b => b.textContent === 'x').length"
        )
        assert injected == 0
        # Sorting works: click 'saves' twice -> descending order.
        header = driver.find_elements("css selector", "#tasks thead th")[2]
        header.click()
        header.click()
        saves = driver.execute_script(
            "return Array.from(document.querySelectorAll('#tasks tbody tr'))"
            ".map(r => parseFloat(r.cells[2].getAttribute('data-sort')))"
        )
        assert saves == sorted(saves, reverse=True)
    finally:
        driver.quit()


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
