"""Integration lane: real BPF on the running kernel, real perf.  Root only.

On a user's machine without root/BCC/tracefs these tests skip with the reason; in CI
(FPTRACE_NO_SKIP=1) a skip is a failure.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fptrace.probes.kernel import find_tracefs
from fptrace.recording.loader import Recording, load_recording
from fptrace.workloads.build import workload_binary
from tests import hardware
from tests.conftest import skip_or_fail

# Kernel virtual addresses on x86-64 live in the upper half: 0xffff8000_00000000 and above.
KERNEL_HEX = re.compile(rb"(?i)(?<![0-9a-f])(?:0x)?ffff[89a-f][0-9a-f]{11}(?![0-9a-f])")
KERNEL_MIN = 0xFFFF_8000_0000_0000


def prog_ids_held_by(pid: int) -> set[int]:
    """The BPF programs a process holds open: the prog_id of each of its BPF fds."""
    ids = set()
    for info in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            m = re.search(r"^prog_id:\s*(\d+)$", info.read_text(), re.M)
        except OSError:  # the fd closed meanwhile
            continue
        if m:
            ids.add(int(m.group(1)))
    return ids


def loaded_prog_ids() -> set[int]:
    out = subprocess.run(
        ["bpftool", "prog", "show", "--json"], capture_output=True, text=True, check=True
    ).stdout
    return {int(p["id"]) for p in json.loads(out)}


def programs_gone(ours: set[int], timeout: float = 10) -> bool:
    """Whether all of ``ours`` have been unloaded (the kernel frees them as fds close)."""
    deadline = time.monotonic() + timeout
    while ours & loaded_prog_ids():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def attached_programs(proc: subprocess.Popen[str]) -> set[int]:
    """fptrace's programs, by the process that loaded them (whatever the build names them)."""
    ours = prog_ids_held_by(proc.pid)
    assert len(ours) >= 7 and ours <= loaded_prog_ids(), ours  # x86_fpu + sched + signal
    return ours


@pytest.fixture(scope="session", autouse=True)
def real_kernel() -> None:
    if os.geteuid() != 0:
        skip_or_fail("integration tests need root (BPF)")
    if importlib.util.find_spec("bcc") is None:
        skip_or_fail("BCC (python3-bpfcc) is not importable")
    if find_tracefs(mount=True) is None:
        skip_or_fail("tracefs cannot be mounted")


@pytest.fixture(scope="session")
def pingpong() -> Path:
    return workload_binary("pingpong")


@pytest.fixture(scope="session")
def cpu() -> hardware.Cpu:
    """This CPU's CPUID and XCR0, read by the tests' own probe (not by fptrace)."""
    return hardware.cpu()


@pytest.fixture(scope="session")
def level() -> str:
    """The widest vector level this CPU has: every known answer that needs live state uses it."""
    return hardware.widest_level()


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        skip_or_fail(f"{name} is not installed")
    return path  # type: ignore[return-value]


@dataclass
class Run:
    proc: subprocess.CompletedProcess[str]
    path: Path

    @property
    def rec(self) -> Recording:
        return load_recording(self.path)

    def workload_json(self) -> dict:
        lines = [ln for ln in self.proc.stdout.splitlines() if ln.startswith("{")]
        return json.loads(lines[-1])


def fptrace(*args: str, env: dict[str, str] | None = None, timeout: int = 180):
    return subprocess.run(
        [sys.executable, "-m", "fptrace", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def wait_for_file(path: Path, proc: subprocess.Popen | None = None, timeout: float = 60) -> None:
    """Handshake: wait until ``path`` exists (a recording's manifest appears once its probes
    are attached), failing at once if ``proc`` died and at the deadline otherwise."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc is not None:
            assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def attached(recording: Path, proc: subprocess.Popen | None = None) -> None:
    """Wait until the recorder writing ``recording`` has its probes attached."""
    wait_for_file(recording / "manifest.json", proc)


def release_when_attached(recording: Path, release: Callable[[], None]) -> threading.Thread:
    """Call ``release`` (let a waiting target go on) once ``recording`` has attached probes.

    In a thread, because the test is meanwhile blocked in `record`; after 60 s it releases
    anyway, so that a failed start never leaves the target waiting forever.
    """

    def go() -> None:
        with contextlib.suppress(AssertionError):
            attached(recording)
        release()

    thread = threading.Thread(target=go)
    thread.start()
    return thread


@pytest.fixture
def record(tmp_path: Path):
    def run(*args: str, name: str = "rec", env: dict[str, str] | None = None) -> Run:
        out = tmp_path / name
        proc = fptrace("record", "-q", "-o", str(out), *args, env=env)
        return Run(proc, out)

    return run


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """Headless Chromium with networking off (no DNS, a dead proxy, CDP offline).  Its
    TMPDIR is the test's: Chromium leaves its singleton-socket directory behind
    (/tmp/org.chromium.Chromium.*), one per run."""
    chromedriver = require_tool("chromedriver")
    require_tool("chromium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

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
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--window-size=1300,2200",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    env = {**os.environ, "TMPDIR": str(tmp_path_factory.mktemp("chromium"))}
    driver = webdriver.Chrome(service=Service(chromedriver, env=env), options=opts)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions",
        {"offline": True, "latency": 0, "downloadThroughput": 0, "uploadThroughput": 0},
    )
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


def wait_for_figures(driver) -> tuple[int, int]:
    """(figures in the page, figures plotly has drawn), waiting up to 20 s."""
    want = driver.execute_script("return document.querySelectorAll('script[data-figure]').length")
    drawn = driver.execute_async_script(
        """const want = arguments[0]; const done = arguments[arguments.length - 1];
        const t0 = Date.now();
        (function poll() {
          const n = Array.from(document.querySelectorAll('[data-drawn="1"]'))
            .filter(d => d.querySelector('.main-svg')).length;
          if (n >= want || Date.now() - t0 > 20000) done(n); else setTimeout(poll, 100);
        })();""",
        want,
    )
    return want, drawn


def console_errors(driver) -> list:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
