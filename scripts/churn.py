#!/usr/bin/env python3
"""Process churn under `fptrace record`: many short-lived processes, nothing lost, state flat.

Runs ``fptrace record -- forker --children N`` (tests/workloads/forker.c: N short-lived
child processes, at most --parallel alive at once) and measures, from outside fptrace:
its resident memory (VmRSS, sampled every 0.5 s) and the number of entries in its kernel
maps (``bpftool map dump``, every 2 s); and from the recording: drops, task rows, the
per-interval map occupancy and recorder memory fptrace wrote itself, and drain lateness.

Run as root after `make setup`:  .venv/bin/python scripts/churn.py [--children 100000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fptrace.recording.loader import load_recording  # noqa: E402

MAPS = ("counts", "tasks", "vsos")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def map_ids(pid: int) -> dict[str, int]:
    """fptrace's maps by name, from the map fds its process holds (bpftool)."""
    out = subprocess.run(
        ["bpftool", "-j", "map", "show"], capture_output=True, text=True, check=True
    ).stdout
    maps = {m["id"]: m.get("name", "") for m in json.loads(out)}
    held = set()
    for fd in Path(f"/proc/{pid}/fdinfo").iterdir():
        try:
            for line in fd.read_text().splitlines():
                if line.startswith("map_id:"):
                    held.add(int(line.split()[1]))
        except OSError:
            continue
    return {maps[i]: i for i in held if maps.get(i) in MAPS}


def entries(map_id: int) -> int:
    out = subprocess.run(
        ["bpftool", "-j", "map", "dump", "id", str(map_id)], capture_output=True, text=True
    ).stdout
    return len(json.loads(out)) if out.strip() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--children", type=int, default=100_000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fptrace-churn-"))
    forker = tmp / "forker"
    subprocess.run(
        ["gcc", "-O2", "-o", str(forker), str(ROOT / "tests/workloads/forker.c")], check=True
    )
    out = tmp / "rec"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "fptrace", "record", "-q", "-o", str(out), "--"),
            *(str(forker), "--children", str(args.children), "--parallel", str(args.parallel)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    rss: list[tuple[float, int]] = []
    occupancy: list[tuple[float, dict[str, int]]] = []
    t0 = time.monotonic()

    def sample() -> None:
        ids: dict[str, int] = {}
        last_maps = 0.0
        while proc.poll() is None:
            now = time.monotonic() - t0
            try:
                rss.append((now, rss_kb(proc.pid)))
                if not ids:
                    ids = map_ids(proc.pid)
                if ids and now - last_maps >= 2:
                    occupancy.append((now, {n: entries(i) for n, i in ids.items()}))
                    last_maps = now
            except (OSError, subprocess.CalledProcessError, ValueError):
                pass
            time.sleep(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.join()
    elapsed = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"fptrace record exited with {proc.returncode}")
    work = json.loads(stdout.strip().splitlines()[-1])
    rec = load_recording(out)
    iv = rec.intervals
    assert iv is not None
    half = len(rss) // 2
    result = {
        "children": args.children,
        "parallel": args.parallel,
        "seconds": round(elapsed, 1),
        "distinct_pids": work["distinct_pids"],
        "task_rows": len(rec.tasks),
        "distinct_task_ids": int(rec.tasks["task"].nunique()),
        "drops": dict(rec.manifest.drops),
        "intervals": len(iv),
        "drain_lateness": rec.manifest.to_json().get("drains"),
        "rss_mb_first_half_max": round(max(r for _, r in rss[:half]) / 1024, 1) if half else None,
        "rss_mb_second_half_max": round(max(r for _, r in rss[half:]) / 1024, 1) if rss else None,
        # VmRSS every 0.5 s, to tell the drains' level from the end (the final merge).
        "rss_mb_series": [round(r / 1024) for _, r in rss],
        "map_entries_max_bpftool": {
            n: max((o[n] for _, o in occupancy if n in o), default=0) for n in MAPS
        },
        "map_samples_bpftool": len(occupancy),
        "map_tasks_per_interval": iv["map_tasks"].astype(int).tolist(),
        "map_keys_per_interval": iv["map_keys"].astype(int).tolist(),
        "recorder_rss_mb_per_interval": [
            round(b / 2**20, 1) for b in iv["recorder_rss_bytes"].astype(int)
        ],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
