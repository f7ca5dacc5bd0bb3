"""procfs readers on this machine's /proc (no root needed)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from fptrace.collectors.procfs import descendants


def test_descendants_follow_the_whole_tree_and_leave_out_the_roots():
    # sh -> (sh -> sleep) and sleep: two levels below the root.
    root = subprocess.Popen(["sh", "-c", "sh -c 'sleep 30 & wait' & sleep 30 & wait"])
    try:
        deadline = time.monotonic() + 10
        while True:  # until every shell has forked and every child has exec'd its sleep
            found = descendants([root.pid])
            try:  # a process listed a moment ago may be gone (a shell's short-lived fork)
                comms = sorted(Path(f"/proc/{p}/comm").read_text().strip() for p in found)
            except FileNotFoundError:
                comms = []
            if comms == ["sh", "sleep", "sleep"] or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert comms == ["sh", "sleep", "sleep"], comms
        assert root.pid not in found
        assert descendants([]) == set()
    finally:  # end the sleeps: each shell's `wait` returns, so every parent reaps its child
        for p in descendants([root.pid]):
            try:  # an inner shell exits as soon as its sleep is killed: it may be gone
                comm = Path(f"/proc/{p}/comm").read_text().strip()
            except FileNotFoundError:
                continue
            if comm == "sleep":
                subprocess.run(["kill", str(p)], check=False)
        root.wait(timeout=10)


def test_a_thread_s_process_and_name_and_what_is_gone():
    import os
    import threading

    from fptrace.collectors.procfs import proc_comm, proc_tgid, read_text

    seen: dict[str, object] = {}

    def worker() -> None:
        tid = threading.get_native_id()
        seen["tid"] = tid
        seen["tgid"] = proc_tgid(tid)
        seen["comm"] = proc_comm(os.getpid(), tid)

    t = threading.Thread(target=worker, name="fptrace-probe")
    t.start()
    t.join()
    assert seen["tid"] != os.getpid() and seen["tgid"] == os.getpid()
    assert seen["comm"] == Path(f"/proc/self/task/{os.getpid()}/comm").read_text().strip()
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its /proc entry is gone
    assert proc_tgid(child.pid) is None and proc_comm(child.pid, child.pid) is None
    assert read_text(f"/proc/{child.pid}/status") is None
