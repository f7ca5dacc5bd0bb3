"""Command mode and signals, as the README promises them, on the real kernel.

- SIGTERM to fptrace is passed on to the command; fptrace stops when the command exits and
  returns its exit code; the recording is complete.
- Ctrl-C (SIGINT to the terminal's process group) reaches the command itself.
- A second signal stops fptrace at once: the command is killed, the probes detached, the
  recording completed — even when the command ignores SIGTERM.
- A command killed by signal N gives 128+N.

Every wait is a handshake: the manifest appears once the probes are attached, and the
command writes a file once its signal handlers are set.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fptrace.recording.loader import load_recording
from tests.integration.conftest import attached, attached_programs, programs_gone, wait_for_file

DEADLINE = 60


@pytest.fixture(autouse=True)
def no_leftovers():
    """Whatever a failed test left running (fptrace and its command) is ended."""
    yield
    for proc in STARTED:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    STARTED.clear()


STARTED: list[subprocess.Popen[str]] = []


def start(out: Path, script: str, ready: Path) -> subprocess.Popen[str]:
    """`fptrace record -- sh -c script` in its own process group, once traced and ready."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "record", "-q", "-o", str(out), "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # a "terminal" of its own: killpg is Ctrl-C
    )
    STARTED.append(proc)
    attached(out, proc)
    wait_for_file(ready, proc)  # the command has set its traps
    return proc


def command_pid(proc: subprocess.Popen[str]) -> int:
    """The command fptrace started: its only child process."""
    (child,) = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    return int(child)


def test_sigterm_is_passed_on_and_its_exit_code_returned(tmp_path):
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f"trap 'echo TERM > {got}; exit 3' TERM; : > {ready}; while :; do sleep 0.05; done"
    proc = start(tmp_path / "r", script, ready)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 3, err
    assert got.read_text() == "TERM\n"  # the command's own handler ran
    rec = load_recording(tmp_path / "r")
    assert rec.manifest.status == "complete" and rec.manifest.target.exit_code == 3


def test_ctrl_c_reaches_the_command_and_fptrace_waits_for_it(tmp_path):
    ready, got = tmp_path / "ready", tmp_path / "got"
    script = f"trap 'echo INT > {got}; exit 4' INT; : > {ready}; while :; do sleep 0.05; done"
    proc = start(tmp_path / "r", script, ready)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
    _, err = proc.communicate(timeout=DEADLINE)
    assert proc.returncode == 4, err
    assert got.read_text() == "INT\n"
    assert load_recording(tmp_path / "r").manifest.status == "complete"


def test_a_second_signal_stops_at_once_even_if_the_command_ignores_sigterm(tmp_path):
    ready = tmp_path / "ready"
    script = f"trap '' TERM; : > {ready}; while :; do sleep 0.05; done"
    out = tmp_path / "r"
    proc = start(out, script, ready)
    ours = attached_programs(proc)
    pid = command_pid(proc)
    proc.send_signal(signal.SIGTERM)  # passed on, and ignored
    time.sleep(0.5)  # not a handshake: the point is that nothing happens
    assert proc.poll() is None and Path(f"/proc/{pid}").exists()
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=DEADLINE)
    assert time.monotonic() - t0 < 5, "a second signal must stop fptrace at once"
    assert proc.returncode == 128 + signal.SIGKILL, err  # the command was killed
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert programs_gone(ours)
    rec = load_recording(out)
    assert rec.manifest.status == "complete" and not rec.recovered


def test_a_command_killed_by_a_signal_gives_128_plus_n(record):
    run = record("--", "sh", "-c", "kill -USR1 $$")
    assert run.proc.returncode == 128 + signal.SIGUSR1, run.proc.stderr
    assert run.rec.manifest.target.exit_code == 128 + signal.SIGUSR1
