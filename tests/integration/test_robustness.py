"""Privacy, privilege, signals, crashes and bad input, on the real kernel."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fptrace.analysis import summary
from fptrace.recording.loader import load_recording
from tests import known_answer
from tests.integration.conftest import (
    KERNEL_HEX,
    KERNEL_MIN,
    attached,
    attached_programs,
    fptrace,
    programs_gone,
    release_when_attached,
    require_tool,
)


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])  # ftrace's raw pages hold real addresses
def test_no_raw_kernel_pointer_in_any_file(record, pingpong, backend, level):
    script = f"{pingpong} --rounds 500 --mode {level}"
    run = record("--backend", backend, "--events", "--", "sh", "-c", script, name=backend)
    assert run.proc.returncode == 0, run.proc.stderr
    files = [p for p in run.path.rglob("*") if p.is_file()]
    assert {
        "manifest.json",
        "counts.parquet",
        "tasks.parquet",
        "vso.parquet",
        "events.parquet",
    } <= {p.name for p in files}
    for f in files:
        data = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        assert not KERNEL_HEX.search(data), f
        if f.suffix == ".parquet":
            for col in pq.read_table(f).columns:
                for value in col.to_pylist():
                    if isinstance(value, int):
                        assert not (value & 0xFFFF_FFFF_FFFF_FFFF) >= KERNEL_MIN or (
                            value >> 63 and value & 0x7FFF_FFFF_FFFF_0000 == 0
                        ), (f.name, col, hex(value))  # xcomp_bv's bit 63 is allowed
                    if isinstance(value, str):
                        assert not KERNEL_HEX.search(value.encode()), (f.name, value)


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
def test_the_same_buffers_recorded_twice_get_different_vso_ids(record, pingpong, backend):
    """VSO ids are keyed hashes with a per-recording secret: recordings cannot be joined."""
    target = subprocess.Popen(  # its own group: the forked child goes with it
        [str(pingpong), "--rounds", "100000000"], stdout=subprocess.DEVNULL, start_new_session=True
    )
    try:
        runs = [
            record("--backend", backend, "-p", str(target.pid), "-d", "0.5", name=f"r{i}")
            for i in range(2)
        ]
    finally:
        os.killpg(target.pid, signal.SIGKILL)
        target.wait()
    seen = []
    for run in runs:
        assert run.proc.returncode == 0, run.proc.stderr
        vso = run.rec.vso
        mine = vso[vso["pid"] == target.pid]
        assert len(mine) == 1, vso  # the same long-lived task and buffer in both recordings
        seen.append(mine.iloc[0]["vso"])
    assert seen[0] != seen[1]


def test_not_root_gets_one_line_and_exit_77(tmp_path):
    require_tool("setpriv")
    proc = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "fptrace",
            "record",
            "-o",
            str(tmp_path / "x"),
            "--",
            "true",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 77
    assert proc.stderr.strip().count("\n") == 0 and "sudo" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_existing_output_and_missing_pid(record, tmp_path):
    first = record("--", "true")
    assert first.proc.returncode == 0
    again = fptrace("record", "-o", str(first.path), "--", "true")
    assert again.returncode == 73 and "--force" in again.stderr
    assert load_recording(first.path).manifest.status == "complete"  # untouched
    gone = fptrace("record", "-p", "999999999")
    assert gone.returncode == 66 and "no process with PID" in gone.stderr


def test_sudo_user_owns_the_recording_and_runs_the_command(record):
    env = dict(os.environ, SUDO_UID="65534", SUDO_GID="65534")
    run = record("--", "id", "-u", env=env)
    assert run.proc.returncode == 0, run.proc.stderr
    assert run.proc.stdout.strip() == "65534"  # the command dropped root
    for p in [run.path, *run.path.rglob("*")]:
        assert p.stat().st_uid == 65534, p


def _start(out: Path, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "record", "-q", "-o", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    attached(out, proc)
    return proc


def drained_saves(out: Path, pids: set[int], table: str = "counts") -> int:
    """Saves of ``pids`` the recorder has written into its parts so far (``table``: counts,
    or the events of --events, one row each)."""
    total = 0
    for part in (out / ".parts").glob(f"{table}-[0-9]*.parquet"):
        try:
            t = pq.read_table(part, columns=["pid", "event"]).to_pandas()
            n = (
                pq.read_table(part, columns=["count"]).to_pandas()["count"]
                if table == "counts"
                else 1
            )
        except Exception:  # a part being written: the next poll reads it
            continue
        mine = t["pid"].isin(pids) & (t["event"] == "regs_deactivated")
        total += int((mine * n).sum())
    return total


def wait_until_drained(
    out: Path, proc: subprocess.Popen[str], pids: set[int], saves: int, table: str = "counts"
):
    """Handshake: the recorder's own parts hold at least ``saves`` saves of ``pids``."""
    deadline = time.monotonic() + 60
    while (got := drained_saves(out, pids, table)) < saves:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"only {got} of {saves} saves drained"
        time.sleep(0.05)


def test_sigterm_stops_cleanly(tmp_path, pingpong):
    require_tool("bpftool")
    out = tmp_path / "r"
    proc = _start(out, "-a", "--interval", "0.2")
    ours = attached_programs(proc)
    work = subprocess.run(
        [str(pingpong), "--rounds", "2000"], capture_output=True, text=True, check=True
    )
    pids = json.loads(work.stdout)
    wait_until_drained(out, proc, {pids["parent_pid"], pids["child_pid"]}, 2 * 2000 - 20)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    rec = load_recording(out)
    assert rec.manifest.status == "complete" and rec.manifest.intervals >= 2
    skipped = {p.name: p.reason for p in rec.manifest.probes.skipped}
    assert "--arch-prctl" in skipped["syscalls:sys_enter_arch_prctl"]  # off with -a
    assert proc.pid not in set(rec.counts["tgid"])  # fptrace never counts itself
    assert proc.pid not in set(rec.tasks["tgid"])
    assert int(rec.counts["count"].sum()) >= 4000
    assert programs_gone(ours)


@pytest.mark.parametrize("events", [False, True], ids=["counts", "events"])
def test_sigkill_loses_at_most_one_interval(tmp_path, pingpong, events):
    require_tool("bpftool")
    out = tmp_path / "r"
    proc = _start(out, "-a", "--interval", "0.2", *(["--events"] if events else []))
    ours = attached_programs(proc)
    work = subprocess.run(
        [str(pingpong), "--rounds", "3000"], capture_output=True, text=True, check=True
    )
    pids = json.loads(work.stdout)
    wait_until_drained(out, proc, {pids["parent_pid"], pids["child_pid"]}, 2 * 3000 - 20)
    if events:  # a drain writes its events part after its counts part: wait for it too
        wait_until_drained(out, proc, {pids["parent_pid"], pids["child_pid"]}, 5400, "events")
    proc.kill()
    proc.wait(timeout=30)
    assert programs_gone(ours)  # the kernel detached everything with our fds
    rec = load_recording(out)
    assert rec.recovered
    mine = rec.counts[rec.counts["pid"].isin([pids["parent_pid"], pids["child_pid"]])]
    saves = int(mine[mine["event"] == "regs_deactivated"]["count"].sum())
    assert saves >= 2 * 3000 - 20
    assert rec.duration_s > 0.2  # to its last drain: rates of a killed run are not 0
    if events:  # its events are exported from the parts (every export said "no events")
        csv = fptrace("export", str(out), "-f", "csv")
        assert csv.returncode == 0, csv.stderr
        rows = [line.split(",") for line in csv.stdout.splitlines()[1:]]
        theirs = [r for r in rows if r[3] in (str(pids["parent_pid"]), str(pids["child_pid"]))]
        # (events still in a CPU's unfinished batch of 32 at the kill are lost with it)
        assert sum(r[6] == "regs_deactivated" for r in theirs) >= 0.9 * 2 * 3000


@pytest.mark.parametrize("events", [False, True], ids=["counts", "streaming-events"])
def test_disk_full_is_one_line_and_keeps_what_was_recorded(tmp_path, pingpong, events):
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=160k", "fptrace-test", str(mnt)], check=True
    )
    try:
        out = mnt / "r"
        proc = _start(out, "-a", "--interval", "0.1", *(["--events"] if events else []))
        for _ in range(40):  # keep writing parts until the disk is full
            if proc.poll() is not None:
                break
            subprocess.run([str(pingpong), "--rounds", "200"], capture_output=True, check=True)
            time.sleep(0.1)
        if proc.poll() is None:
            proc.terminate()
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 74, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "disk is full" in lines[0] and "Traceback" not in err
        rec = load_recording(out)  # whatever was written before is readable
        assert rec.recovered
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_doctor_reports_this_machine_ready():
    proc = fptrace("doctor", env=dict(os.environ, COLUMNS="200"))
    assert proc.returncode == 0, proc.stdout
    assert "x86_fpu_regs_deactivated" in proc.stdout and "can run here" in proc.stdout


def test_pid_mode_follows_exec_and_children_and_stops_at_exit(record, pingpong, tmp_path):
    n = 20000
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = f"read x < {fifo}; exec {pingpong} --rounds {n}"  # waits until traced
    target = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    release = release_when_attached(tmp_path / "rec", lambda: fifo.write_text("go\n"))
    try:
        run = record("-p", str(target.pid), "--interval", "0.5")
    finally:
        release.join()
        out, _ = target.communicate(timeout=120)
    assert run.proc.returncode == 0, run.proc.stderr
    work = json.loads(out)
    rec = run.rec
    assert rec.manifest.target.mode == "pids"
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    for who, pid in known_answer.sides(work):  # exec'd target, and its fork
        known_answer.check(work, who, int(tasks.loc[pid].saves), int(tasks.loc[pid].restores))
    assert set(rec.counts["tgid"]) == {work["parent_pid"], work["child_pid"]}


def test_duration_stops_a_system_recording(record):
    t0 = time.monotonic()
    run = record("-a", "-d", "1.5", "--interval", "0.5")
    assert run.proc.returncode == 0, run.proc.stderr
    assert 1.4 <= run.rec.duration_s <= 2.5 and time.monotonic() - t0 < 30
    assert run.rec.manifest.target.mode == "system"


def test_no_user_address_in_xcomp_perm_rows(record):
    """ARCH_GET_XCOMP_PERM's second argument is a pointer into the caller: it used to be
    stored (e.g. 0x7febcb1f1720), an address in a shareable file.  The REQ option's (an
    xfeature number) is kept."""
    script = (
        "import ctypes; libc = ctypes.CDLL(None, use_errno=True); buf = ctypes.c_uint64()\n"
        "libc.syscall(158, 0x1022, ctypes.byref(buf))\n"  # ARCH_GET_XCOMP_PERM, &buf
        "libc.syscall(158, 0x1023, 18)\n"  # ARCH_REQ_XCOMP_PERM, XTILEDATA (EINVAL w/o AMX)
    )
    run = record("--", sys.executable, "-c", script)
    assert run.proc.returncode == 0, run.proc.stderr
    perm = run.rec.counts[run.rec.counts["event"] == "xcomp_perm"]
    got = {int(a): int(x) for a, x in zip(perm["arg"], perm["xfeatures"], strict=True)}
    assert got == {0x1022: 0, 0x1023: 18}, got


def test_doctor_as_another_user_says_tracefs_is_root_only():
    """tracefs is mounted but readable only by root: non-root `doctor` called it "not
    mounted" and told the user to mount it."""
    require_tool("setpriv")
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    proc = subprocess.run(
        [*as_nobody, sys.executable, "-m", "fptrace", "doctor"],
        capture_output=True,
        text=True,
        check=False,
        env=dict(os.environ, COLUMNS="250"),
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "readable only by root (running as uid 65534)" in proc.stdout, proc.stdout
    assert "not mounted" not in proc.stdout


def test_pingpong_child_exits_when_its_parent_is_killed(pingpong):
    """The child used to keep the pipe ends it does not use open, so with its parent killed
    its read() never saw end of file and it stayed forever."""
    proc = subprocess.Popen([str(pingpong), "--rounds", "1000000000"], stdout=subprocess.PIPE)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + 10
    while not children.read_text().split() and time.monotonic() < deadline:
        time.sleep(0.01)
    (child,) = (int(c) for c in children.read_text().split())
    proc.kill()
    proc.wait(timeout=10)

    def alive() -> bool:  # a zombie has exited (waiting for init to reap it)
        try:
            return Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] != "Z"
        except (OSError, IndexError):
            return False

    deadline = time.monotonic() + 5
    while alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(), "pingpong's child outlived its parent"


RENAMES = """
import ctypes, json, os, sys, time
libc = ctypes.CDLL(None)
pids = {}
for name, stay in (("renamed-live", 1.0), ("renamed-exit", 0.0)):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        time.sleep(0.3)  # seen under its first name first
        libc.prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME
        os.write(w, b"x")
        time.sleep(stay)  # the live one is renamed across drains (--interval 0.1)
        os._exit(0)
    os.read(r, 1)
    pids[name] = pid
for _ in pids:
    os.wait()
print(json.dumps(pids))
"""


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
def test_a_renamed_task_is_recorded_under_its_new_name(record, backend):
    """The tasks table kept the name a task had when first seen: one that renamed itself
    (prctl PR_SET_NAME, pthread_setname_np) was shown under its old name."""
    run = record("--backend", backend, "--interval", "0.1", "--", sys.executable, "-c", RENAMES)
    assert run.proc.returncode == 0, run.proc.stderr
    pids = json.loads(run.proc.stdout.strip().splitlines()[-1])
    names = dict(zip(run.rec.tasks["pid"].astype(int), run.rec.tasks["comm"], strict=True))
    assert {names.get(pid) for pid in pids.values()} == set(pids), (pids, names)


@pytest.mark.parametrize("backend", ["bcc", "ftrace"])
def test_a_task_renamed_while_traced_and_alive_at_the_end_has_its_new_name(tmp_path, backend):
    """The kernel records a name at fork, exec and exit; a task seen under one name, renamed,
    and still running when the recording ends gets its new name from /proc at the drains."""
    go = tmp_path / "go"
    script = (
        "import ctypes, os, sys, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"  # switches, old name
        "ctypes.CDLL(None).prctl(15, b'renamed-alive', 0, 0, 0)\n"
        "print('renamed', flush=True)\n"
        "while True: time.sleep(0.01)\n"
    )
    work = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    out = tmp_path / "r"
    try:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fptrace", "record", "-q", "--backend", backend),
                *("-o", str(out), "-p", str(work.pid), "-d", "2.5", "--interval", "0.2"),
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        attached(out, proc)
        time.sleep(0.5)  # drains see it under its first name
        go.touch()
        assert work.stdout is not None and work.stdout.readline().strip() == "renamed"
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        rec = load_recording(out)
        names = set(rec.tasks[rec.tasks["pid"] == work.pid]["comm"])
        assert names == {"renamed-alive"}, names
    finally:
        work.kill()
        work.wait()


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_force_never_writes_into_another_users_directory(tmp_path):
    """`sudo fptrace record -f -o DIR` into a directory another user owns (and can change
    while root writes there): refused, nothing in it touched."""
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o777)
    os.chmod(theirs, 0o777)
    (theirs / "manifest.json").write_text('{"format": "fptrace-recording"}')
    os.chown(theirs, 65534, 65534)
    os.chown(theirs / "manifest.json", 65534, 65534)
    proc = fptrace("record", "-f", "-o", str(theirs), "--", "true")
    assert proc.returncode == 73 and "another user (uid 65534)" in proc.stderr, proc.stderr
    assert sorted(p.name for p in theirs.iterdir()) == ["manifest.json"]


def test_symlinks_planted_while_recording_never_redirect_a_write_or_chown():
    """Under sudo the recording belongs to the invoking user, who can plant names in it
    while root writes: every name root writes, the part files included, is planted as a
    symlink to a root-owned file, by that user, before and during the run."""
    require_tool("setpriv")
    top = Path(tempfile.mkdtemp(prefix="fptrace-plant-", dir="/tmp"))  # reachable by nobody
    try:
        os.chmod(top, 0o755)
        base = top / "shared"
        base.mkdir()
        os.chmod(base, 0o1777)
        victim = top / "victim"
        victim.write_text("root's")
        out = base / "run"
        names = ["manifest.json.tmp", "kernel-config.gz.tmp"]
        names += [
            f"{t}.parquet{s}" for t in ("counts", "tasks", "vso", "intervals") for s in ("", ".tmp")
        ]
        parts = [f"{t}-{i:06d}.parquet.tmp" for t in ("counts", "intervals") for i in range(1, 60)]
        parts += ["tasks-latest.parquet.tmp"]
        plant = (
            "import os, sys, time\n"
            "out, victim = sys.argv[1], sys.argv[2]\n"
            "made, end = 0, time.monotonic() + 2.5\n"
            "while time.monotonic() < end:\n"
            f"    for d, names in ((out, {names!r}), (out + '/.parts', {parts!r})):\n"
            "        for n in names:\n"
            "            try: os.symlink(victim, os.path.join(d, n)); made += 1\n"
            "            except OSError: pass\n"
            "    time.sleep(0.001)\n"
            "print(made)\n"
        )
        env = dict(os.environ, SUDO_UID="65534", SUDO_GID="65534")
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fptrace", "record", "-q", "--interval", "0.1"),
                *("-o", str(out), "--", "sleep", "1.5"),
            ],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        attached(out, proc)
        planter = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", plant, str(out), str(victim)],
            capture_output=True,
            text=True,
            check=False,
        )
        _, err = proc.communicate(timeout=60)
        assert planter.returncode == 0 and int(planter.stdout) > 100, planter
        assert victim.read_text() == "root's" and victim.stat().st_uid == 0
        # Its temporary names cannot be guessed: it finished, writing beside the planted ones.
        assert proc.returncode == 0, err
        assert load_recording(out).manifest.status == "complete"
        for p in [out, *out.rglob("*")]:  # what fptrace made belongs to the invoking user
            assert p.lstat().st_uid == 65534, p
    finally:
        shutil.rmtree(top, ignore_errors=True)
