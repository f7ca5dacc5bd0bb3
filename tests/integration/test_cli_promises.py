"""What the README and --help promise about `record`'s command line, on the real kernel.

The "attached" line a script waits on, the live status line and the summary (through a
real pseudo-terminal), privileges under sudo (a real `sudo` through the installed launcher,
as a test user), `-p` with several processes and the threads and children they had before
attach, and `--ebpf`.
"""

from __future__ import annotations

import json
import os
import pty
import pwd
import re
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fptrace.analysis import summary
from tests.conftest import skip_or_fail
from tests.integration.conftest import (
    attached_programs,
    fptrace,
    release_when_attached,
)

N = 3000
TOL = 10  # start-up, exec and exit, as in the known-answer test


def run_in_pty(argv: list[str], timeout: float = 120) -> tuple[int, str]:
    """Run argv with stdin, stdout and stderr on a new pseudo-terminal; all it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    return proc.wait(timeout=10), b"".join(chunks).decode(errors="replace")


def test_live_status_line_and_summary_in_a_terminal(pingpong, tmp_path):
    out = tmp_path / "r"
    argv = [sys.executable, "-m", "fptrace", "record", "-o", str(out), "--interval", "0.2"]
    # 0.5 s to 2 s per 200,000 rounds on the CI machines: long enough for several redraws
    code, screen = run_in_pty([*argv, "--", str(pingpong), "--rounds", "600000"])
    assert code == 0, screen
    # The status line: redrawn in place (\r + erase line) at each interval, then erased.
    status = re.findall(r"\r\x1b\[2K\[fptrace\] +([\d.]+)s +([\d,]+) events/s +(\d+) tasks", screen)
    assert len(status) >= 2, screen
    assert any(int(n.replace(",", "")) > 1000 for _, n, _ in status)  # the workload's events
    assert [float(t) for t, _, _ in status] == sorted(float(t) for t, _, _ in status)
    assert "fptrace: attached " in screen and f"recording to {out}" in screen
    assert "Top tasks by saves" in screen and "pingpong" in screen


@pytest.mark.parametrize("stdout", ["pipe", "file"])
def test_one_attached_line_on_stderr_once_the_probes_are_live(tmp_path, stdout):
    """Whatever stdout is, stderr says once, in one line, when tracing is live."""
    out, ready = tmp_path / "r", tmp_path / "ready"
    sink = subprocess.PIPE if stdout == "pipe" else (tmp_path / "stdout").open("w")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fptrace", "record", "-o", str(out), "--"),
            *("sh", "-c", f"while [ ! -e {ready} ]; do sleep 0.05; done"),
        ],
        stdout=sink,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, COLUMNS="40"),  # a narrow terminal must not fold the line
    )
    try:
        assert proc.stderr is not None
        before = []
        for line in proc.stderr:
            if line.startswith("fptrace: attached "):
                break
            before.append(line)
        else:
            pytest.fail(f"no attached line: {before}")
        # When the line is read, the probes are attached and the recording has begun.
        assert attached_programs(proc) and (out / "manifest.json").exists()
        assert re.fullmatch(
            rf"fptrace: attached (\d+) probes \([^)]*tracepoint[^)]*\) [\d.]+ s after start; "
            rf"recording to {re.escape(str(out))} until the command exits\n",
            line,
        ), line
        ready.touch()
        rest = proc.stderr.read()
        assert proc.wait(timeout=120) == 0, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not any("fptrace: attached" in ln for ln in [*before, rest]), (before, rest)  # once
    assert f"fptrace: wrote {out}\n" in rest  # not folded either


def test_summary_without_a_terminal_has_the_known_answer(pingpong, tmp_path):
    out = tmp_path / "r"
    proc = fptrace("record", "-o", str(out), "--", str(pingpong), "--rounds", str(N))
    assert proc.returncode == 0, proc.stderr
    assert "\x1b[" not in proc.stdout + proc.stderr  # no status line, no colour in a pipe
    head = re.search(r"([\d,]+) saves +([\d,]+) restores +(\d+) tasks", proc.stdout)
    assert head, proc.stdout
    saves, restores, tasks = (int(g.replace(",", "")) for g in head.groups())
    assert tasks == 2 and abs(saves - 2 * N) <= 2 * TOL and abs(restores - 2 * N) <= 2 * TOL
    report = json.loads(fptrace("report", str(out), "-f", "json").stdout)
    assert saves == report["headline"]["saves"]  # the summary is the report's headline


def test_keep_root_runs_the_command_as_root_and_still_hands_over_the_files(record):
    env = dict(os.environ, SUDO_UID="65534", SUDO_GID="65534")
    run = record("--keep-root", "--", "id", "-u", env=env)
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.proc.stdout.strip() == "0"
    for p in [run.path, *run.path.rglob("*")]:
        assert p.stat().st_uid == 65534, p


TEST_USER = "fptrace-test"
SUDOERS = Path("/etc/sudoers.d/fptrace-test")


@pytest.fixture
def sudo_user():
    """A throwaway user allowed to run the installed launcher through sudo, removed after."""
    if shutil.which("sudo") is None:
        skip_or_fail("sudo is not installed (make setup installs it)")
    launcher = shutil.which("fptrace")
    if launcher is None:
        skip_or_fail("the fptrace launcher is not installed (make setup)")
    made = False
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
        )
        made = True
    SUDOERS.write_text(f"{TEST_USER} ALL=(root) NOPASSWD: {launcher}\n")
    SUDOERS.chmod(0o440)
    try:
        yield pwd.getpwnam(TEST_USER), launcher
    finally:
        SUDOERS.unlink(missing_ok=True)
        if made:
            subprocess.run(["userdel", TEST_USER], check=False)


def test_real_sudo_through_the_launcher(sudo_user, tmp_path):
    user, launcher = sudo_user
    out = tmp_path / "r"
    tmp_path.chmod(0o755)
    as_user = ["runuser", "-u", user.pw_name, "--", "sudo", "-n", launcher]
    proc = subprocess.run(
        [*as_user, "record", "-q", "-o", str(out), "--", "id", "-u"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(user.pw_uid)  # the command ran as the user, not root
    for p in [out, *out.rglob("*")]:
        st = p.stat()
        assert (st.st_uid, st.st_gid) == (user.pw_uid, user.pw_gid), p


PAIRS = """
import os, sys, threading
mode, rounds = sys.argv[1], int(sys.argv[2])
r1, w1 = os.pipe(); r2, w2 = os.pipe()
def pong():
    for _ in range(rounds):
        os.read(r1, 1); os.write(w2, b"x")
if mode == "fork":
    if os.fork() == 0:  # forked before fptrace attaches
        pong(); os._exit(0)
else:
    threading.Thread(target=pong, name="ponger").start()
print(os.getpid(), flush=True)
sys.stdin.readline()  # ping-pong once the test says the probes are attached
for _ in range(rounds):
    os.write(w1, b"x"); os.read(r2, 1)
"""


def test_pids_with_threads_and_children_that_existed_before_attach(record, tmp_path):
    """-p a,b: a two-thread process and a process with a child, all there before fptrace."""
    script = tmp_path / "pairs.py"
    script.write_text(PAIRS)
    procs = {
        mode: subprocess.Popen(
            [sys.executable, str(script), mode, str(N)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for mode in ("thread", "fork")
    }
    for p in procs.values():
        assert p.stdout is not None and p.stdout.readline()
    a, b = procs["thread"].pid, procs["fork"].pid
    threads = {int(t) for t in os.listdir(f"/proc/{a}/task")}
    child = int(Path(f"/proc/{b}/task/{b}/children").read_text().split()[0])
    assert len(threads) == 2

    def go() -> None:
        for p in procs.values():
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]

    release = release_when_attached(tmp_path / "rec", go)
    try:
        run = record("-p", f"{a},{b}", name="rec")
    finally:
        release.join()
        for p in procs.values():
            p.communicate(timeout=60)
    assert run.proc.returncode == 0, run.proc.stderr
    rec = run.rec
    assert rec.manifest.target.mode == "pids"
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    # Each side blocks once per round; Python's own wake-ups can only add switches.
    for pid in (*threads, b, child):
        assert int(tasks.loc[pid, "saves"]) >= N - TOL, (pid, tasks)
    assert set(rec.counts["tgid"]) == {a, b, child}


def test_ebpf_prints_the_program_and_records_nothing(tmp_path):
    out = tmp_path / "r"
    proc = fptrace("record", "--ebpf", "-o", str(out), "--", "true")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("// cflags: ") and "-D" in lines[0]
    assert any(ln.startswith("// attach ") and "x86_fpu_regs_deactivated" in ln for ln in lines)
    assert "regs_deactivated" in proc.stdout and "BPF_HASH" in proc.stdout  # the C itself
    assert not out.exists()
