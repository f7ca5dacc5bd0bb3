"""`fptrace record --cgroup`: the tasks of a cgroup and of the cgroups below it (one made
after the probes were attached), none from outside; each task's cgroup id and path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pyarrow.parquet as pq

from tests import known_answer
from tests.integration.conftest import attached, fptrace
from tests.integration.test_agent import cgroup2_mount


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
