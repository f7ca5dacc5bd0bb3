#!/usr/bin/env python3
"""Report speed and memory on a synthetic busy hour (issue: fptrace report).

Writes a recording the size of one hour of whole-system tracing on a busy host: 3,600
intervals, 2,000 tasks, 4,000 VSOs (each task gets a second VSO halfway, as an AMX
reallocation would), every task saving and restoring in every interval: 14.4 M count rows.
Then times `fptrace report -f html` in a child process and reads its peak RSS.

Run: .venv/bin/python scripts/bench_report.py [--intervals 3600 --tasks 2000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.recording.schema import (
    COUNTS_SCHEMA,
    FORMAT_NAME,
    FORMAT_VERSION,
    TASKS_SCHEMA,
    VSO_SCHEMA,
)

XSTATES = np.array([0xA2, 0xE6, 0x2, 0x600A2], dtype=np.uint64)


def write_synthetic(path: Path, intervals: int, tasks: int) -> int:
    path.mkdir(parents=True)
    rng = np.random.default_rng(1)
    pids = np.arange(1000, 1000 + tasks, dtype=np.int32)
    vso_a = np.array([f"{i:016x}" for i in range(tasks)])
    vso_b = np.array([f"{i + tasks:016x}" for i in range(tasks)])
    xf_of_task = XSTATES[rng.integers(0, len(XSTATES), tasks)]
    writer = pq.ParquetWriter(path / "counts.parquet", COUNTS_SCHEMA)
    rows = 0
    for start in range(0, intervals, 100):
        block = np.arange(start, min(start + 100, intervals), dtype=np.int32)
        iv = np.repeat(block, tasks * 2)
        pid = np.tile(np.repeat(pids, 2), len(block))
        event = np.tile(np.array(["regs_deactivated", "regs_activated"]), tasks * len(block))
        half = iv >= intervals // 2
        idx = pid - 1000
        vso = np.where(half, vso_b[idx], vso_a[idx])
        n = len(iv)
        table = pa.table(
            {
                "interval": iv,
                "pid": pid,
                "tgid": pid,
                "vso": pa.array(vso).dictionary_encode(),
                "event": pa.array(event).dictionary_encode(),
                "xfeatures": xf_of_task[idx],
                "load_fpu": pa.nulls(n, pa.int8()),
                "arg": np.zeros(n, dtype=np.uint32),
                "count": rng.integers(1, 500, n),
                "first_ns": (iv.astype(np.int64)) * 1_000_000_000,
                "last_ns": (iv.astype(np.int64) + 1) * 1_000_000_000,
            }
        )
        writer.write_table(table.cast(COUNTS_SCHEMA))
        rows += n
    writer.close()
    pq.write_table(
        pa.Table.from_pylist(
            [
                {
                    "pid": int(p),
                    "tgid": int(p),
                    "ppid": 1,
                    "comm": f"worker-{i % 97}",
                    "cmdline": f"/usr/bin/worker --id {i}",
                    "cgroup": "/system.slice/busy.service",
                    "switches": 500_000,
                    "oncpu_ns": 600_000_000_000,
                    "first_ns": 0,
                    "exit_ns": None,
                    "execs": 0,
                    "forked": False,
                }
                for i, p in enumerate(pids)
            ],
            schema=TASKS_SCHEMA,
        ),
        path / "tasks.parquet",
    )
    vsos = []
    for i, p in enumerate(pids):
        for v, size, prev in ((vso_a[i], 2496, None), (vso_b[i], 10688, vso_a[i])):
            vsos.append(
                {
                    "vso": str(v),
                    "pid": int(p),
                    "tgid": int(p),
                    "size": size,
                    "user_size": size + 320,
                    "xfeatures": 0x600E7 if prev else 0x200E7,
                    "user_xfeatures": 0x600E7 if prev else 0x200E7,
                    "xfd": 0,
                    "xcomp_bv": (1 << 63) | (0x600E7 if prev else 0x200E7),
                    "layout_size": size,
                    "is_valloc": prev is not None,
                    "is_guest": False,
                    "first_ns": 0,
                    "prev_vso": None if prev is None else str(prev),
                }
            )
    pq.write_table(pa.Table.from_pylist(vsos, schema=VSO_SCHEMA), path / "vso.parquet")
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "status": "complete",
        "duration_s": float(intervals),
        "interval_s": 1.0,
        "drops": {},
        "target": {"mode": "system"},
        "host": {
            "xstate": {
                "components": [
                    {
                        "index": 2,
                        "name": "AVX",
                        "size": 256,
                        "offset": 576,
                        "supervisor": False,
                        "align64": False,
                    },
                    {
                        "index": 5,
                        "name": "AVX512_opmask",
                        "size": 64,
                        "offset": 1088,
                        "supervisor": False,
                        "align64": False,
                    },
                    {
                        "index": 6,
                        "name": "AVX512_ZMM_Hi256",
                        "size": 512,
                        "offset": 1152,
                        "supervisor": False,
                        "align64": False,
                    },
                    {
                        "index": 7,
                        "name": "AVX512_Hi16_ZMM",
                        "size": 1024,
                        "offset": 1664,
                        "supervisor": False,
                        "align64": False,
                    },
                    {
                        "index": 17,
                        "name": "AMX_TILECFG",
                        "size": 64,
                        "offset": 2752,
                        "supervisor": False,
                        "align64": True,
                    },
                    {
                        "index": 18,
                        "name": "AMX_TILEDATA",
                        "size": 8192,
                        "offset": 2816,
                        "supervisor": False,
                        "align64": True,
                        "xfd": True,
                    },
                ]
            }
        },
    }
    (path / "manifest.json").write_text(json.dumps(manifest))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", type=int, default=3600)
    ap.add_argument("--tasks", type=int, default=2000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fptrace-bench-report-") as tmp:
        rec = Path(tmp) / "busy-hour"
        t0 = time.monotonic()
        rows = write_synthetic(rec, args.intervals, args.tasks)
        print(
            f"synthetic recording: {rows:,} count rows, {args.tasks * 2:,} VSOs "
            f"({time.monotonic() - t0:.1f} s to write, "
            f"{sum(f.stat().st_size for f in rec.iterdir()) / 2**20:.0f} MiB on disk)"
        )
        out = Path(tmp) / "report.html"
        t0 = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "fptrace", "report", str(rec), "-o", str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if proc.returncode != 0:
            raise SystemExit(proc.stderr)
        result = {
            "count_rows": rows,
            "report_seconds": round(elapsed, 2),
            "peak_rss_mib": round(peak, 1),
            "html_mib": round(out.stat().st_size / 2**20, 1),
        }
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
