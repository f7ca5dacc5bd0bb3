"""Real time under load: intervals carry their measured spans, and rates divide by them.

A saturated machine delays fptrace's drains (it is a process like any other); here the
recorder is stopped with SIGSTOP for a known time while a steady workload runs, which is
the same thing made repeatable.  The kernel keeps counting meanwhile.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time

from fptrace.analysis.cost import DEFAULT
from fptrace.analysis.report import build
from fptrace.recording.loader import load_recording
from fptrace.recording.manifest import Events
from tests.integration.conftest import attached

STOPPED_S = 1.5
INTERVAL = "0.2"
RUN_S = 5  # the workload runs this long whatever the CPU's speed, well past the stop


def steady_load(pingpong, seconds: int) -> str:
    """Short ping-pongs back to back for ``seconds``: a steady rate of saves."""
    return (
        f"end=$(($(date +%s) + {seconds})); "
        f"while [ $(date +%s) -lt $end ]; do {pingpong} --rounds 5000 >/dev/null; done"
    )


def test_a_late_drain_is_one_long_interval_not_a_spike(tmp_path, pingpong):
    out = tmp_path / "r"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fptrace", "record", "-q", "-o", str(out)),
            *("--interval", INTERVAL, "--", "sh", "-c", steady_load(pingpong, RUN_S)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        attached(out, proc)
        time.sleep(0.7)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(STOPPED_S)
        os.kill(proc.pid, signal.SIGCONT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGCONT)
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    rec = load_recording(out)
    iv = rec.intervals
    assert iv is not None and len(iv) == rec.manifest.intervals >= 5
    iv = iv.sort_values("interval").reset_index(drop=True)
    assert iv["due_ns"].isna().tolist() == [False] * (len(iv) - 1) + [True]  # the last: at stop
    iv = iv[["interval", "start_ns", "end_ns", "events"]].astype("int64")
    # Contiguous spans from attach to the end of the recording.
    assert iv["start_ns"].iloc[0] == 0
    assert (iv["start_ns"].iloc[1:].to_numpy() == iv["end_ns"].iloc[:-1].to_numpy()).all()
    assert abs(iv["end_ns"].iloc[-1] / 1e9 - rec.manifest.duration_s) < 0.2
    # Each interval's events are the counts of that interval, and the manifest has their sum.
    per = rec.counts.groupby("interval")["count"].sum().astype("int64")
    assert rec.manifest.events == Events(counted=int(per.sum()))
    assert per.reindex(iv["interval"], fill_value=0).tolist() == iv["events"].tolist()
    spans = (iv["end_ns"] - iv["start_ns"]) / 1e9
    stopped = int(spans.idxmax())
    assert spans[stopped] >= STOPPED_S - 0.1, spans.tolist()
    drains = rec.manifest.drains
    assert drains is not None and drains.late_max_s is not None
    assert drains.late_max_s >= STOPPED_S - 0.3 and drains.later_than_interval >= 1
    # The timeline: the stopped interval holds several intervals' saves, at the same rate.
    tl = build(rec, DEFAULT).timeline.groupby("interval")[["saves", "saves_per_s"]].sum()
    steady = [i for i in tl.index if 0 < i < len(iv) - 1 and i != stopped]
    rate = statistics.median(tl.loc[steady, "saves_per_s"])
    count = statistics.median(tl.loc[steady, "saves"])
    assert tl.loc[stopped, "saves"] >= 4 * count  # what the old timeline drew as a spike
    assert 0.5 * rate <= tl.loc[stopped, "saves_per_s"] <= 2 * rate, (tl, rate)
