"""What making each interval's parts durable costs: the recorder's own part writes, timed
with the fsync and without it, interleaved, on the disk the recording goes to.

Each round writes one drain's worth of parts through RecordingWriter (counts, the tasks
snapshot, the interval row) in a fresh recording directory; rounds alternate between the
real writer and one whose fsync is a no-op.  Prints the median and a 95 % interval of the
milliseconds per drain for both, and the difference.

    .venv/bin/python scripts/fsync_cost.py [--dir /var/tmp] [--rounds 200] [--keys 2000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from fptrace.analysis.stats import median_ci
from fptrace.recording.writer import RecordingWriter


def counts_rows(keys: int, interval: int) -> list[dict]:
    return [
        {
            "interval": interval,
            "task": k % 50,
            "pid": 1000 + k % 50,
            "tgid": 1000,
            "vso": f"{k:016x}",
            "event": "regs_deactivated",
            "xfeatures": 0xE7,
            "load_fpu": 1,
            "arg": 0,
            "count": 10,
            "first_ns": 1,
            "last_ns": 2,
        }
        for k in range(keys)
    ]


def one_drain(base: Path, keys: int, durable: bool) -> float:
    real_fsync = os.fsync
    if not durable:
        os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        out = Path(tempfile.mkdtemp(dir=base)) / "r"
        w = RecordingWriter(out)
        rows = counts_rows(keys, 0)
        tasks = [
            {
                "task": t,
                "pid": 1000 + t,
                "tgid": 1000,
                "ppid": 1,
                "comm": "w",
                "cmdline": "w",
                "cgroup": "/",
                "switches": 1,
                "oncpu_ns": 1,
                "first_ns": 0,
                "exit_ns": None,
                "execs": 0,
                "forked": False,
            }
            for t in range(50)
        ]
        t0 = time.perf_counter()
        w.append("counts", rows)
        w.replace("tasks", tasks)
        w.append(
            "intervals",
            [
                {
                    "interval": 0,
                    "start_ns": 0,
                    "end_ns": 1,
                    "due_ns": 1,
                    "events": keys,
                    "map_tasks": 50,
                    "map_keys": keys,
                    "map_vsos": 50,
                    "recorder_rss_bytes": 1,
                }
            ],
        )
        took = time.perf_counter() - t0
        w.close()
        return took * 1e3
    finally:
        os.fsync = real_fsync


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--keys", type=int, default=2000, help="count rows per drain")
    a = p.parse_args()
    base = Path(tempfile.mkdtemp(prefix="fptrace-fsync-", dir=a.dir))
    with_fsync, without = [], []
    for _ in range(a.rounds):
        with_fsync.append(one_drain(base, a.keys, True))
        without.append(one_drain(base, a.keys, False))
    for name, xs in (("fsync", with_fsync), ("no fsync", without)):
        med, lo, hi = median_ci(xs)
        print(f"{name:9} {med:7.2f} ms per drain (95% CI {lo:.2f}-{hi:.2f})")
    diff = [x - y for x, y in zip(with_fsync, without, strict=True)]
    print(f"difference {statistics.median(diff):.2f} ms per drain ({a.keys} count rows, {a.dir})")
    import shutil

    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
