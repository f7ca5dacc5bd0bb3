#!/usr/bin/env python3
"""`fptrace agent` over a long run with process churn: its memory stays flat.

Runs the agent system-wide (rotating, with /metrics scraped every minute and retention on)
while tests/workloads/forker.c starts --processes short-lived processes, paced evenly over
--seconds (100,000 over an hour by default, in batches).  Samples the agent's VmRSS every
5 s, from outside; at the end stops it with SIGTERM and reports the RSS over time (the max
of the first and last tenth, and a least-squares slope after the first 5 minutes), the
rotations and their tracer CPU (the agent's own figures), and the drops every recording
reports.

Run as root after `make setup`:  .venv/bin/python scripts/agent_soak.py [--seconds 3600]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def slope_mb_per_hour(samples: list[tuple[float, int]]) -> float:
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(r for _, r in samples) / n
    cov = sum((t - mx) * (r - my) for t, r in samples)
    var = sum((t - mx) ** 2 for t, _ in samples)
    return cov / var * 3600 / 1024 if var else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3600)
    ap.add_argument("--processes", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500, help="processes per forker run")
    ap.add_argument("--rotate", default="300")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fptrace-soak-"))
    forker = tmp / "forker"
    subprocess.run(
        ["gcc", "-O2", "-o", str(forker), str(ROOT / "tests/workloads/forker.c")], check=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp / "fleet"
    agent = subprocess.Popen(
        [sys.executable, "-m", "fptrace", "agent", "-o", str(out), "--rotate", args.rotate,
         "--metrics", f"127.0.0.1:{port}", "--retain", "500M"],
        cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    while not list(out.glob("host=*/date=*/*/manifest.json")):
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}")
        time.sleep(0.1)
    t0 = time.monotonic()
    rss: list[tuple[float, int]] = []
    spawned = batches = 0
    next_sample = next_scrape = t0
    per_batch_s = args.seconds * args.batch / args.processes
    next_batch = t0
    while spawned < args.processes or time.monotonic() - t0 < args.seconds:
        now = time.monotonic()
        if now >= next_sample:
            rss.append((now - t0, rss_kb(agent.pid)))
            next_sample += 5
        if now >= next_scrape:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
            next_scrape += 60
        if spawned < args.processes and now >= next_batch:
            n = min(args.batch, args.processes - spawned)
            subprocess.run(
                [str(forker), "--children", str(n), "--parallel", "4"],
                stdout=subprocess.DEVNULL, check=True,
            )  # fmt: skip
            spawned += n
            batches += 1
            next_batch += per_batch_s
        if agent.poll() is not None:
            raise SystemExit(f"the agent exited with {agent.returncode}")
        time.sleep(0.2)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read()
    agent.send_signal(signal.SIGTERM)
    _, err = agent.communicate(timeout=120)
    m = re.search(r"rotation CPU: median ([\d.]+) ms, max ([\d.]+) ms", err)
    drops: dict[str, int] = {}
    for man in out.glob("host=*/date=*/*/manifest.json"):
        for k, v in (json.loads(man.read_text()).get("drops") or {}).items():
            drops[k] = drops.get(k, 0) + int(v)
    tenth = max(len(rss) // 10, 1)
    result = {
        "seconds": round(time.monotonic() - t0, 1),
        "processes": spawned,
        "forker_runs": batches,
        "rotate_s": float(args.rotate),
        "agent_exit": agent.returncode,
        "rss_mb_first_tenth_max": round(max(r for _, r in rss[:tenth]) / 1024, 1),
        "rss_mb_last_tenth_max": round(max(r for _, r in rss[-tenth:]) / 1024, 1),
        "rss_mb_max": round(max(r for _, r in rss) / 1024, 1),
        "rss_slope_mb_per_hour_after_5min": round(
            slope_mb_per_hour([(t, r) for t, r in rss if t >= 300] or rss), 2
        ),
        "rotation_cpu_ms_median": float(m[1]) if m else None,
        "rotation_cpu_ms_max": float(m[2]) if m else None,
        "recordings_kept": len(list(out.glob("host=*/date=*/*/manifest.json"))),
        "drops": drops,
        "intervals_total": int(
            float(re.search(rb"^fptrace_intervals_total (\S+)", metrics, re.M)[1])  # type: ignore[index]
        ),
        "rss_mb_series_per_minute": [round(r / 1024, 1) for t, r in rss if int(t) % 60 < 5],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
