#!/usr/bin/env python3
"""`fptrace fleet` over a synthetic fleet: --recordings host-hours in the agent's layout.

Each recording is an hour of one host as the agent writes it (drained every --interval
seconds): --tasks tasks in --cgroups cgroups, each with a save key per vector level it uses
and a restore key, in every interval; the tables are written with the recording's own
schemas (fptrace.recording.schema) and a manifest like the agent's.  Hosts, dates, kernels
and CPUs vary over the fleet.  Then times `fptrace fleet DIR --group-by KEY` for each key in
a fresh process, with its peak RSS (getrusage of the child), and checks the totals against
the numbers the generator wrote.

Run after `make setup`:  .venv/bin/python scripts/fleet_scale.py [--recordings 1000]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fptrace.collectors.host import collect_host  # noqa: E402
from fptrace.recording.manifest import Manifest, Segment, Target  # noqa: E402
from fptrace.recording.partitions import segment_path  # noqa: E402
from fptrace.recording.schema import COUNTS_SCHEMA, TASKS_SCHEMA, VSO_SCHEMA  # noqa: E402

XF = {"sse": 0x3, "avx": 0x7, "avx512": 0xE7}


def tables(rng: np.random.Generator, tasks: int, cgroups: int, intervals: int):
    """(counts, tasks, saves) of one host-hour: every task saves in every interval."""
    level = rng.choice(list(XF), size=tasks, p=[0.5, 0.3, 0.2])
    per = rng.integers(10, 1000, size=(intervals, tasks))
    task_ids = np.arange(1, tasks + 1)
    n = intervals * tasks
    iv = np.repeat(np.arange(intervals, dtype=np.int32), tasks)
    tk = np.tile(task_ids, intervals)
    xf = np.tile(np.array([XF[x] for x in level], dtype=np.uint64), intervals)
    cnt = per.reshape(-1).astype(np.int64)

    def block(event: str, load: int | None) -> pa.Table:
        return pa.table(
            {
                "interval": iv, "task": tk, "pid": tk.astype(np.int32) + 1000,
                "tgid": tk.astype(np.int32) + 1000, "vso": pa.array([f"v{t}" for t in tk]),
                "event": pa.array([event] * n), "xfeatures": xf,
                "load_fpu": pa.array([load] * n, type=pa.int8()),
                "arg": np.zeros(n, dtype=np.uint32), "count": cnt,
                "first_ns": iv.astype(np.int64) * 10**9, "last_ns": iv.astype(np.int64) * 10**9,
            },
            schema=COUNTS_SCHEMA,
        )  # fmt: skip

    counts = pa.concat_tables([block("regs_deactivated", None), block("regs_activated", 1)])
    cg = [f"/system.slice/svc-{i % cgroups}.service" for i in range(tasks)]
    task_rows = pa.table(
        {
            "task": task_ids, "pid": task_ids.astype(np.int32) + 1000,
            "tgid": task_ids.astype(np.int32) + 1000, "ppid": np.ones(tasks, dtype=np.int32),
            "comm": [f"worker-{i % 20}" for i in range(tasks)], "cmdline": [None] * tasks,
            "cgroup": cg, "switches": per.sum(axis=0) + 5, "oncpu_ns": np.full(tasks, 10**9),
            "first_ns": np.zeros(tasks, dtype=np.int64), "exit_ns": [None] * tasks,
            "execs": np.zeros(tasks, dtype=np.int32), "forked": [False] * tasks,
            "cgroup_id": np.arange(tasks, dtype=np.uint64) % cgroups + 100,
        },
        schema=TASKS_SCHEMA,
    )  # fmt: skip
    return counts, task_rows, int(cnt.sum())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recordings", type=int, default=1000)
    ap.add_argument("--hosts", type=int, default=40)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--cgroups", type=int, default=20)
    ap.add_argument("--interval", type=float, default=60.0, help="seconds per drain (rows)")
    ap.add_argument("--templates", type=int, default=20, help="distinct host-hours, copied")
    ap.add_argument("--keep", type=Path, help="generate here and keep it")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="fptrace-fleet-")) / "fleet"
    intervals = int(3600 / args.interval)
    rng = np.random.default_rng(0)
    host = collect_host().host
    t_gen = time.monotonic()
    made = [tables(rng, args.tasks, args.cgroups, intervals) for _ in range(args.templates)]
    start = datetime(2026, 11, 1, tzinfo=UTC)
    saves_total = 0
    staged: list[Path] = []
    for t in range(args.templates):  # each template written once, then copied
        d = root / f"_t{t}"
        d.mkdir(parents=True)
        pq.write_table(made[t][0], d / "counts.parquet")
        pq.write_table(made[t][1], d / "tasks.parquet")
        pq.write_table(VSO_SCHEMA.empty_table(), d / "vso.parquet")
        staged.append(d)
    for i in range(args.recordings):
        h = i % args.hosts
        when = start + timedelta(hours=i // args.hosts)
        path = segment_path(root, f"host-{h:03d}", when)
        shutil.copytree(staged[i % args.templates], path)
        saves_total += made[i % args.templates][2]
        kernel = ("6.1.0-28-amd64", "6.12.6-amd64")[h % 2]
        m = Manifest(
            target=Target(mode="system"),
            host=host.__class__(
                hostname=f"host-{h:03d}",
                kernel=host.kernel.__class__(release=kernel),
                cpu={"model_name": ("AMD EPYC 9654", "Intel Xeon 8480+")[h % 3 == 0]},
                xstate=host.xstate,
            ),
            status="complete",
            started_at=when.isoformat(),
            duration_s=3600.0,
            interval_s=args.interval,
            intervals=intervals,
            segment=Segment(index=i // args.hosts),
        )
        (path / "manifest.json").write_text(json.dumps(m.to_json()))
    for d in staged:
        shutil.rmtree(d)
    gen_s = time.monotonic() - t_gen
    du = subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True).stdout
    result: dict = {
        "recordings": args.recordings,
        "hosts": args.hosts,
        "tasks_per_recording": args.tasks,
        "count_rows_per_recording": 2 * args.tasks * intervals,
        "bytes_on_disk": int(du.split()[0]),
        "generate_s": round(gen_s, 1),
        "runs": {},
    }
    for key in ("host", "cgroup", "kernel", "date", "cpu", "comm"):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-m", "fptrace", "fleet", str(root), "--group-by", key, "-f", "json"],
            capture_output=True, text=True, cwd=ROOT,
        )  # fmt: skip
        secs = time.monotonic() - t0
        if out.returncode != 0:
            raise SystemExit(out.stderr)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        got = sum(g["saves"] for g in json.loads(out.stdout)["groups"])
        result["runs"][key] = {
            "seconds": round(secs, 2),
            # ru_maxrss of all children so far: the largest child's peak, in KiB
            "peak_rss_mb": round(max(peak, before) / 1024, 1),
            "groups": len(json.loads(out.stdout)["groups"]),
            "saves_match": got == saves_total,
        }
        print(key, result["runs"][key], flush=True)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.keep is None:
        shutil.rmtree(root.parent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
