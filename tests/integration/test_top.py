"""`fptrace top` in a real terminal (a pty): a busy workload appears within 3 s, with its
saves per second within 5 % of the kernel's own count of its context switches (each switch
of a task with FPU state saves it), and `q` quits, leaving no recording behind."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from tests.integration.conftest import fptrace

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\x1b[=>]")


def switches(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return sum(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
    )


def shown_within(master: int, text: str, seconds: float) -> bool:
    """Whether ``text`` appears on the pty's screen within ``seconds``."""
    screen, deadline = "", time.monotonic() + seconds
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            screen += ANSI.sub("", os.read(master, 1 << 16).decode("utf-8", "replace"))
            if text in screen:
                return True
    return False


def test_top_in_a_terminal(pingpong, tmp_path):
    work = subprocess.Popen(
        [str(pingpong), "--rounds", "1000000000", "--mode", "sse"], stdout=subprocess.DEVNULL
    )
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    before = set(Path("/tmp").glob("fptrace-top-*"))
    t0 = time.monotonic()
    top = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "top", "-p", str(work.pid), "--interval", "0.5"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dict(os.environ, TERM="xterm-256color", LANG="C.UTF-8"),
    )
    os.close(slave)
    row = re.compile(rf"\b{work.pid}\b[^0-9\n]+pingpong[^0-9\n]+([0-9][0-9,]*)")
    screen, frames, seen_at = "", [], None
    try:
        window = None
        while time.monotonic() - t0 < 30:
            ready, _, _ = select.select([master], [], [], 0.2)
            if not ready:
                continue
            try:
                chunk = os.read(master, 1 << 16).decode("utf-8", "replace")
            except OSError:
                break
            screen += ANSI.sub("", chunk)
            found = row.findall(screen)
            screen = screen[-20000:]
            if found and seen_at is None:
                seen_at = time.monotonic() - t0
                window = (time.monotonic(), switches(work.pid))  # from the next frame on
                screen = ""
                continue
            if window is not None and found:
                frames.extend(int(f.replace(",", "")) for f in found)
                screen = ""
                if time.monotonic() - window[0] > 4:
                    break
        assert seen_at is not None and seen_at < 3.0, f"not shown within 3 s ({seen_at})"
        assert window is not None
        kernel = (switches(work.pid) - window[1]) / (time.monotonic() - window[0])
        shown = sum(frames) / len(frames)
        assert len(frames) >= 5 and abs(shown / kernel - 1) < 0.05, (frames, kernel)
        for key, title in ((b"g", "by process"), (b"s", "sorted by bytes")):
            os.write(master, key)
            assert shown_within(master, title, 3.0), f"{key!r} did not change the view"
        os.write(master, b"q")
        assert top.wait(timeout=20) == 0
    finally:
        if top.poll() is None:
            top.send_signal(signal.SIGINT)
            top.wait(timeout=20)
        work.kill()
        work.wait()
        os.close(master)
    assert set(Path("/tmp").glob("fptrace-top-*")) == before  # no recording left


def test_top_piped_prints_the_last_table_whole(pingpong):
    work = subprocess.Popen(
        [str(pingpong), "--rounds", "1000000000", "--mode", "sse"], stdout=subprocess.DEVNULL
    )
    try:
        proc = fptrace(
            "top", "-p", str(work.pid), "-n", "2", "--interval", "0.3", "--by", "process"
        )
    finally:
        work.kill()
        work.wait()
    assert proc.returncode == 0, proc.stderr
    assert "by process" in proc.stdout and str(work.pid) in proc.stdout, proc.stdout
    assert "pingpong" in proc.stdout and "…" not in proc.stdout


def test_top_cgroup_shows_only_the_tasks_in_it(pingpong):
    """`--cgroup PATH`: a workload moved into a cgroup of its own is shown, another is not."""
    from fptrace.collectors.procfs import read_text

    mounts = read_text("/proc/self/mounts") or ""
    root = next(line.split()[1] for line in mounts.splitlines() if line.split()[2:3] == ["cgroup2"])
    name = f"fptrace-top-test-{os.getpid()}"
    group = Path(root) / name
    group.mkdir()
    inside = outside = None
    try:
        inside = subprocess.Popen(
            [str(pingpong), "--rounds", "1000000000"], stdout=subprocess.DEVNULL
        )
        (group / "cgroup.procs").write_text(f"{inside.pid}\n")  # its child is forked later…
        outside = subprocess.Popen(
            [str(pingpong), "--rounds", "1000000000"], stdout=subprocess.DEVNULL
        )
        proc = fptrace("top", "--cgroup", f"/{name}", "-n", "2", "--interval", "0.5")
        assert proc.returncode == 0, proc.stderr
        rows = [line for line in proc.stdout.splitlines() if "pingpong" in line]
        assert any(str(inside.pid) in r for r in rows), proc.stdout
        assert not any(str(outside.pid) in r for r in rows), proc.stdout
    finally:
        for p in (inside, outside):
            if p is not None:
                p.kill()
                p.wait()
        deadline = time.monotonic() + 10
        while group.exists() and time.monotonic() < deadline:
            try:
                group.rmdir()
            except OSError:  # its last task is still exiting
                time.sleep(0.05)
