"""`fptrace record --cgroup`: the tasks of a cgroup and of the cgroups below it (one made
after the probes were attached), none from outside; each task's cgroup id and path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq

from tests import known_answer
from tests.integration.conftest import attached, fptrace
from tests.integration.test_agent import (
    cgroup2_mount,
    free_port,
    http_get,
    metric_values,
    stop_agent,
    wait_http,
)


def test_record_cgroup_traces_it_and_below_only(tmp_path, pingpong, level):
    mount = cgroup2_mount()
    name = f"/fptrace-cgroup-test-{os.getpid()}"
    top = mount / name.lstrip("/")
    top.mkdir()
    sub = top / "later"
    out = tmp_path / "rec"
    rec = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "record", "--cgroup", name, "-q", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        attached(out, rec)
        sub.mkdir()  # made after the probes: traced too (the kernel looks at ancestors)
        sub_id = os.stat(sub).st_ino  # a cgroup's id is its directory's inode

        def pp(where: str | None) -> dict:
            move = f"echo $$ > {where}/cgroup.procs && " if where else ""
            run = subprocess.run(
                ["sh", "-c", f"{move}exec {pingpong} --mode {level} --rounds 3000"],
                capture_output=True, text=True, check=True, timeout=120,
            )  # fmt: skip
            return json.loads(run.stdout.strip().splitlines()[-1])

        inside, outside = pp(str(sub)), pp(None)
        rec.send_signal(signal.SIGINT)
        assert rec.wait(timeout=60) == 0, rec.communicate()
    finally:
        if rec.poll() is None:
            rec.kill()
        for d in (sub, top):
            if d.exists():
                d.rmdir()
    r = fptrace("report", str(out), "-f", "json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    by_pid = {t["pid"]: t for t in report["tasks"]}
    for who, pid in known_answer.sides(inside):
        known_answer.check(inside, who, by_pid[pid]["saves"], by_pid[pid]["restores"])
    assert not {pid for _, pid in known_answer.sides(outside)} & set(by_pid)
    cg = {c["cgroup"]: c for c in report["cgroups"]}
    path = f"{name}/later"
    assert cg[path]["saves"] == sum(by_pid[p]["saves"] for _, p in known_answer.sides(inside))
    tasks = pq.read_table(out / "tasks.parquet").to_pandas()
    ours = tasks[tasks["pid"].isin([p for _, p in known_answer.sides(inside)])]
    assert set(ours["cgroup"]) == {path}
    assert set(ours["cgroup_id"]) == {sub_id}


def test_a_task_moved_to_another_cgroup_counts_there_from_the_move(tmp_path, pingpong, level):
    """A container runtime forks, moves the child into the container's cgroup, and execs:
    the task's saves count in the cgroup it is in, from the move on, while it runs — not only
    once it exits or happens to miss the kernel's cache (a task whose keys all sit in cache
    slots may not miss again)."""
    mount = cgroup2_mount()
    here, there = (f"/fptrace-move-{w}-{os.getpid()}" for w in ("from", "to"))
    for name in (here, there):
        (mount / name.lstrip("/")).mkdir()
    port = free_port()
    agent = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "agent", "-o", str(tmp_path / "out"),
         "--interval", "0.2", "--metrics", f"127.0.0.1:{port}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    work = None
    kids: list[int] = []
    url = f"http://127.0.0.1:{port}/metrics"

    def saves(cgroup: str) -> float:
        return sum(metric_values(http_get(url), "fptrace_saves_total", cgroup).values())

    try:
        wait_http(url, agent)
        # Two tasks with the same few keys all along (no exec, no new buffer, one vector
        # level live): their cache slots stay theirs, they need not miss again.
        work = subprocess.Popen(
            ["sh", "-c", f"echo $$ > {mount}{here}/cgroup.procs && exec {pingpong} "
             f"--mode {level} --rounds 1000000000"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while saves(here) < 50_000:
            assert time.monotonic() < deadline, f"no saves in {here} in 30 s"
            time.sleep(0.2)
        kids = [
            int(c) for c in Path(f"/proc/{work.pid}/task/{work.pid}/children").read_text().split()
        ]
        before = saves(here)
        for pid in [work.pid, *kids]:
            (mount / there.lstrip("/") / "cgroup.procs").write_text(str(pid))
        time.sleep(2.0)
        assert work.poll() is None  # still running: at exit its cgroup is read anyway
        stayed, moved = saves(here) - before, saves(there)
        # From the move on, its saves are the new cgroup's; the old one keeps what it had
        # and at most the saves of the interval the metrics were read in (0.2 s of 2).
        assert moved > 0.8 * (moved + stayed), (stayed, moved)
    finally:
        if work is not None:
            for pid in kids:
                os.kill(pid, signal.SIGKILL)
            work.kill()
            work.wait()
        stop_agent(agent)
        for name in (here, there):
            cg = mount / name.lstrip("/")
            deadline = time.monotonic() + 10
            while (cg / "cgroup.procs").read_text().strip():  # the child is on its way out
                assert time.monotonic() < deadline, f"{cg} still has tasks"
                time.sleep(0.05)
            cg.rmdir()
