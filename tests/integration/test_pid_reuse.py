"""A pid the kernel gives again: each task keeps its own counts.

The kernel hands out pids in a cycle (32768 of them by default), so an always-on recorder
sees pids come back, often with the dead task's task_struct too (the slab gives back the
object it was just given), and so with the same fpstate address: the new task's keys are
the dead one's.  A per-CPU cache slot that still holds such a key then counts the new
task's events in it after the old task was removed (collectors/counting.py).  Seen here
before the fix: a reused pid's whole run (20,000 saves) named by the dead task, absent from
the new task's row and, in a later recording of the agent, from its cgroup.

The test makes the reuse happen: it sets the pid counter back (/proc/sys/kernel/ns_last_pid)
before each of several pingpong runs, spaced by a few drains so that each run's tasks are
removed before the next run's take their pids.  Each run's two tasks must have rows of
their own, each with the known answer (tests/known_answer.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests import known_answer
from tests.integration.conftest import attached

NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")
RUNS = 6
ROUNDS = 20_000
INTERVAL_S = 0.2


def last_pid() -> int:
    return int(Path("/proc/loadavg").read_text().split()[4])


def test_a_reused_pid_s_task_is_not_counted_as_the_dead_one(tmp_path, pingpong, level):
    out = tmp_path / "rec"
    rec = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "record", "-a", "-q", "--interval", str(INTERVAL_S),
         "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    work = []
    try:
        attached(out, rec)
        base = last_pid() + 500  # ahead of every pid given so far (a wrap only moves it)
        for _ in range(RUNS):
            NS_LAST_PID.write_text(str(base))  # the next fork gets base + 1 again
            run = subprocess.run(
                ["sh", "-c", f"exec {pingpong} --mode {level} --rounds {ROUNDS}"],
                capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            work.append(json.loads(run.stdout.strip().splitlines()[-1]))
            time.sleep(8 * INTERVAL_S)  # freed, then removed at a drain: gone before the next
        rec.send_signal(signal.SIGINT)
        assert rec.wait(timeout=60) == 0, rec.communicate()
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait()
    parents = [int(w["parent_pid"]) for w in work]
    # The kernel gave the pid again (another fork can take it first, now and then)
    assert len(set(parents)) < RUNS - 1, parents
    tasks = pq.read_table(out / "tasks.parquet").to_pandas()
    counts = pq.read_table(out / "counts.parquet").to_pandas()
    event = counts["event"].astype(str)
    saves = counts[event == "regs_deactivated"].groupby("task")["count"].sum()
    saves = saves.sub(counts[event == "dropped"].groupby("task")["count"].sum(), fill_value=0)
    restores = counts[event == "regs_activated"].groupby("task")["count"].sum()
    # Each run's task of a pid is the one first seen after the run before it started.
    for who in ("parent", "child"):
        for pid in {int(w[f"{who}_pid"]) for w in work}:
            runs = [w for w in work if int(w[f"{who}_pid"]) == pid]
            rows = tasks[tasks["pid"] == pid].sort_values("first_ns")
            # Tasks that had the pid before the test's runs (none, mostly) come first.
            rows = rows.tail(len(runs))
            assert len(rows) == len(runs), (who, pid, tasks[tasks["pid"] == pid].to_string())
            for w, task in zip(runs, rows["task"], strict=True):
                got = (int(saves.get(task, 0)), int(restores.get(task, 0)))
                known_answer.check(w, who, *got)
