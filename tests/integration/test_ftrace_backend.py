"""The ftrace backend (no BCC) against the BCC backend and the workload's own count."""

from __future__ import annotations

import subprocess
import sys
import time

from fptrace.analysis import summary
from fptrace.probes.kernel import find_tracefs
from fptrace.recording.loader import load_recording
from tests import known_answer
from tests.integration.conftest import attached

N = 5000


def per_task(rec, pids):
    t = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    return {pid: (int(t.loc[pid, "saves"]), int(t.loc[pid, "restores"])) for pid in pids}


def test_both_backends_agree_with_each_other_and_the_workload(record, pingpong, level):
    results = {}
    for backend in ("bcc", "ftrace"):
        run = record(
            "--backend",
            backend,
            "--",
            str(pingpong),
            "--mode",
            level,
            "--rounds",
            str(N),
            name=backend,
        )
        assert run.proc.returncode == 0, run.proc.stderr
        work = run.workload_json()
        pids = (work["parent_pid"], work["child_pid"])
        rec = run.rec
        assert rec.manifest.backend == backend
        assert set(rec.counts["tgid"]) <= set(pids) | {p for p in rec.tasks["pid"]}
        got = per_task(rec, pids)
        for who, pid in known_answer.sides(work):
            known_answer.check(work, who, *got[pid])  # each backend within its run's bounds
        results[backend] = got


def test_ftrace_removes_an_instance_left_by_a_killed_run(tmp_path):
    """A stale instance (its process gone) is removed, and this run's own goes at the end.

    Only these two instances are checked: another fptrace may be tracing on this machine.
    """
    tracefs = find_tracefs(mount=True)
    stale = tracefs / "instances" / "fptrace-999999999"
    stale.mkdir()
    out = tmp_path / "r"
    try:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "fptrace", "record", "-q", "--backend", "ftrace"),
                *("-o", str(out), "--", "sh", "-c", "read x"),
            ],
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        ours = tracefs / "instances" / f"fptrace-{proc.pid}"
        attached(out, proc)  # so its instance is tracing
        assert ours.is_dir() and not stale.exists()
        _, err = proc.communicate("go\n", timeout=60)  # the command ends, fptrace stops
        assert proc.returncode == 0, err
        assert not ours.exists()
    finally:
        if stale.exists():
            stale.rmdir()


def test_ftrace_events_equal_its_counts(record, pingpong):
    import pyarrow.parquet as pq

    run = record("--backend", "ftrace", "--events", "--", str(pingpong), "--rounds", "2000")
    assert run.proc.returncode == 0, run.proc.stderr
    rec = run.rec
    events = pq.read_table(run.path / "events.parquet").to_pandas()
    assert rec.manifest.events.lost == 0
    counts = rec.counts.groupby(["pid", "vso", "event"], dropna=False)["count"].sum().astype(int)
    got = events.groupby(["pid", "vso", "event"], dropna=False).size()
    assert got.sort_index().to_dict() == counts.sort_index().to_dict()
    assert all(g["ts_ns"].is_monotonic_increasing for _, g in events.groupby("cpu"))


def test_a_sigkilled_ftrace_recorder_leaves_no_instance_tracing(tmp_path):
    """SIGKILL gives fptrace no chance to clean up: its instance used to stay tracing (an
    8 MB buffer, eleven events enabled) until the next run.  A watchdog that outlives the
    recorder removes it."""
    tracefs = find_tracefs(mount=True)
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fptrace", "record", "-q", "--backend", "ftrace"),
            *("-o", str(out), "--", "sh", "-c", "read x"),
        ],
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ours = tracefs / "instances" / f"fptrace-{proc.pid}"
    attached(out, proc)
    assert ours.is_dir() and (ours / "tracing_on").read_text().strip() == "1"
    proc.kill()
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while ours.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not ours.exists(), "the killed recorder's tracing instance is still there"
    assert load_recording(out).recovered  # and what it had recorded is readable
