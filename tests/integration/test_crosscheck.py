"""Cross-check against the kernel's own tracepoint counters (perf stat), in perf's window.

`perf stat -a` counts every x86_fpu event system-wide, independently of fptrace.  Its
counters start disabled (`--delay -1`) and the test opens and closes them through perf's
control FIFO, reading CLOCK_MONOTONIC — the clock of fptrace's event timestamps — just
before each command and just after perf's ack.  perf's counting window therefore lies
between [after enable-ack, before disable] and [before enable, after disable-ack], and per
event:

    fptrace's events in the inner window  <=  perf's count  <=  fptrace's events in the
    outer window  +  fptrace's own context switches (perf counts fptrace, fptrace does not)

Nothing is guessed: the only slack is fptrace's own switches, read from /proc.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests.integration.conftest import attached, require_tool

ROUNDS = 20000


def parse_perf_csv(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("x86_fpu:x86_fpu_"):
            out[fields[2].removeprefix("x86_fpu:x86_fpu_")] = int(fields[0])
    return out


def own_switches(pid: int) -> int:
    """Context switches of all of a process's threads (the kernel's counters)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                total += int(line.split()[1])
    return total


def test_counts_per_event_agree_with_perf_stat_in_its_window(pingpong, tmp_path):
    perf = require_tool("perf")
    out, csv = tmp_path / "rec", tmp_path / "perf.csv"
    ctl, ack = tmp_path / "ctl", tmp_path / "ack"
    os.mkfifo(ctl)
    os.mkfifo(ack)
    tracer = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "record", "-q", "-a", "--events", "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
    )
    counter = None
    try:
        attached(out, tracer)
        counter = subprocess.Popen(
            [
                *(perf, "stat", "-a", "-x,", "-o", str(csv), "-e", "x86_fpu:*"),
                *("--delay", "-1", "--control", f"fifo:{ctl},{ack}"),
            ],
            stderr=subprocess.DEVNULL,
        )
        with open(ctl, "w") as to_perf, open(ack) as from_perf:

            def command(word: str) -> tuple[int, int]:
                before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
                to_perf.write(word + "\n")
                to_perf.flush()
                # perf writes "ack\n" with its C string's NUL: it leads the next read.
                assert from_perf.readline().strip("\0") == "ack\n"
                return before, time.clock_gettime_ns(time.CLOCK_MONOTONIC)

            switches0 = own_switches(tracer.pid)
            enable = command("enable")
            subprocess.run(
                [str(pingpong), "--rounds", str(ROUNDS)], capture_output=True, check=True
            )
            disable = command("disable")
            switches = own_switches(tracer.pid) - switches0
        counter.send_signal(signal.SIGINT)  # perf writes its counts, then re-raises SIGINT
        assert counter.wait(timeout=60) in (0, -signal.SIGINT)
    finally:
        if counter is not None and counter.poll() is None:
            counter.kill()
            counter.wait()
        tracer.send_signal(signal.SIGTERM)
        _, err = tracer.communicate(timeout=60)
    assert tracer.returncode == 0, err
    from fptrace.recording.loader import load_recording

    rec = load_recording(out)
    t0 = rec.manifest.attach_monotonic_ns
    ts = pq.read_table(out / "events.parquet", columns=["ts_ns", "event"]).to_pandas()

    def ours(lo: int, hi: int) -> dict[str, int]:
        inside = ts[(ts["ts_ns"] >= lo - t0) & (ts["ts_ns"] <= hi - t0)]
        return inside["event"].value_counts().to_dict()

    inner, outer = ours(enable[1], disable[0]), ours(enable[0], disable[1])
    theirs = parse_perf_csv(csv)
    assert theirs["regs_deactivated"] >= 2 * ROUNDS  # the workload ran inside the window
    assert rec.manifest.events.lost == 0
    for event, n in theirs.items():
        assert inner.get(event, 0) <= n <= outer.get(event, 0) + switches, (
            event,
            inner.get(event, 0),
            n,
            outer.get(event, 0),
            switches,
        )
    # The sandwich is tight: only the two handshakes lie between its bounds.
    spread = sum(outer.values()) - sum(inner.values())
    assert spread < 0.02 * sum(theirs.values()), (spread, theirs)
