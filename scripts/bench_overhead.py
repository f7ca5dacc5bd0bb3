#!/usr/bin/env python3
"""Overhead of `fptrace record -a` on the context-switch path (issue: fptrace record).

`perf bench sched pipe` with both tasks pinned to one CPU (every switch saves FPU state),
untraced and traced, interleaved in pairs so that drift in the VM hits both sides; the
result is the median of per-pair ratios (traced / untraced ops/s) with a bootstrap 95 %
interval, plus the time from `fptrace record` starting to its probes being attached.

Run as root after `make setup`:  .venv/bin/python scripts/bench_overhead.py [--pairs 9]

To compare two versions of fptrace in one run (a change's cost, within the noise of one
session): ``--against DIR``, where DIR is another source tree (``git worktree add /tmp/base
HEAD~1``).  Each round then runs untraced, traced by this tree and traced by DIR, in a
rotating order, and the result gives both ratios and their per-round quotient.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OPS = re.compile(r"([\d.]+)\s+ops/sec")


def pipe_bench(loops: int, cpu: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", str(cpu), "perf", "bench", "sched", "pipe", "-l", str(loops)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = OPS.search(out)
    if not m:
        raise SystemExit(f"cannot parse perf bench output:\n{out}")
    return float(m.group(1))


def agent_args() -> list[str]:
    """`fptrace agent` as deployed: rotating (each minute here) and serving /metrics."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return ["agent", "--rotate", "60", "--metrics", f"127.0.0.1:{port}"]


def manifests(out: Path) -> list[Path]:
    """The recording's manifest, or the agent's (one per rotation)."""
    return (
        [out / "manifest.json"]
        if (out / "manifest.json").exists()
        else sorted(out.glob("host=*/date=*/*/manifest.json"))
    )


def start_tracer(
    out: Path,
    extra: list[str],
    tracer_cpu: int | None = None,
    tree: Path | None = None,
    agent: bool = False,
) -> tuple[subprocess.Popen[bytes], float]:
    shutil.rmtree(out, ignore_errors=True)
    pin = ["taskset", "-c", str(tracer_cpu)] if tracer_cpu is not None else []
    how = (
        [*agent_args(), "-q", "-o", str(out)]
        if agent
        else ["record", "-a", "-q", "-f", "-o", str(out)]
    )
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "fptrace", *how, *extra],
        stdout=subprocess.DEVNULL,
        cwd=tree,  # python -m fptrace: that tree's package first on the path
        env=dict(os.environ, PYTHONPATH=str(tree)) if tree else None,
    )
    while not manifests(out):
        if proc.poll() is not None:
            raise SystemExit(f"fptrace record exited with {proc.returncode}")
        time.sleep(0.01)
    return proc, time.monotonic() - t0


def stop_tracer(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bootstrap_ci(values: list[float], n: int = 2000) -> tuple[float, float]:
    rng = random.Random(1)
    meds = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(n))
    return meds[int(0.025 * n)], meds[int(0.975 * n)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=9)
    ap.add_argument("--loops", type=int, default=200000)
    ap.add_argument("--cpu", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--interval", default="1", help="fptrace record --interval (drain period)")
    ap.add_argument("--events", action="store_true", help="trace with record --events")
    ap.add_argument("--backend", default="auto", help="record --backend (auto, bcc, ftrace)")
    ap.add_argument(
        "--stacks",
        nargs="?",
        const="100",
        help="trace with record --stacks[=RATE] (stack samples of AVX-live saves)",
    )
    ap.add_argument(
        "--agent",
        action="store_true",
        help="trace with `fptrace agent` (rotating, serving /metrics) instead of record -a",
    )
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for the traced command, both trees (e.g. --extra=--reason)",
    )
    ap.add_argument(
        "--raw-tp",
        action="store_true",
        help="attach plain raw tracepoints instead of tp_btf (FPTRACE_RAW_TP=1), to compare",
    )
    ap.add_argument(
        "--tracer-cpu",
        type=int,
        help="pin fptrace record (its ring consumer) to this CPU, away from --cpu",
    )
    ap.add_argument(
        "--against",
        type=Path,
        help="another fptrace source tree to trace with in the same rounds (a baseline)",
    )
    args = ap.parse_args()
    if args.against and not (args.against / "fptrace" / "__main__.py").exists():
        raise SystemExit(f"--against {args.against}: not an fptrace source tree")
    if args.raw_tp:
        os.environ["FPTRACE_RAW_TP"] = "1"  # inherited by fptrace record
    if shutil.which("perf") is None:
        raise SystemExit("perf is missing: apt-get install linux-perf")
    tmp = Path(tempfile.mkdtemp(prefix="fptrace-bench-"))
    ratios, base, traced, startups, events, cpu_s, drops = [], [], [], [], [], [], []
    against: list[float] = []
    sides = ["untraced", "traced"] + (["against"] if args.against else [])
    pipe_bench(args.loops // 4, args.cpu)  # warm-up
    for i in range(args.pairs):
        order = sides[i % len(sides) :] + sides[: i % len(sides)]
        order = order if i % 2 == 0 else order[::-1]
        got = {}
        for side in order:
            if side == "untraced":
                got[side] = pipe_bench(args.loops, args.cpu)
                continue
            extra = ["--interval", args.interval, *args.extra]
            if not args.agent:
                extra += ["--backend", args.backend] + (["--events"] if args.events else [])
                extra += [f"--stacks={args.stacks}"] if args.stacks else []
            tree = args.against if side == "against" else None
            proc, startup = start_tracer(tmp / "rec", extra, args.tracer_cpu, tree, args.agent)
            try:
                cpu0 = process_cpu_s(proc.pid)  # only the window: not start-up/compile
                got[side] = pipe_bench(args.loops, args.cpu)
                cpu = process_cpu_s(proc.pid) - cpu0
            finally:
                stop_tracer(proc)
            if side == "against":
                continue
            startups.append(startup)
            cpu_s.append(cpu)
            found = [json.loads(p.read_text()) for p in manifests(tmp / "rec")]
            drops.append(sum(sum((m.get("drops") or {}).values()) for m in found))
            m = found[-1]
            if args.events:
                events.append(m.get("events", {}))
        base.append(got["untraced"])
        traced.append(got["traced"])
        ratios.append(got["traced"] / got["untraced"])
        line = (
            f"round {i + 1}: untraced {got['untraced']:,.0f}  traced {got['traced']:,.0f} ops/s"
            f"  ratio {ratios[-1]:.3f}"
        )
        if args.against:
            against.append(got["against"] / got["untraced"])
            line += f"  against {against[-1]:.3f}"
        print(line, flush=True)
    lo, hi = bootstrap_ci(ratios)
    result = {
        "benchmark": f"taskset -c {args.cpu} perf bench sched pipe -l {args.loops}",
        "pairs": args.pairs,
        "tracer_cpu": args.tracer_cpu,
        "untraced_median_ops": statistics.median(base),
        "traced_median_ops": statistics.median(traced),
        "ratio_median": statistics.median(ratios),
        "ratio_ci95": [lo, hi],
        "startup_median_s": statistics.median(startups),
        "startup_max_s": max(startups),
        "tracer": "fptrace agent" if args.agent else "fptrace record -a",
        "extra": args.extra,
        "stacks": args.stacks,
        "backend": args.backend,
        "attach": "raw_tracepoint" if args.raw_tp else "tp_btf where the kernel takes it",
        "drops_total": sum(drops),
    }
    if args.against:
        quotients = [t / a for t, a in zip(ratios, against, strict=True)]
        result["against"] = str(args.against)
        result["against_ratio_median"] = statistics.median(against)
        result["against_ratio_ci95"] = list(bootstrap_ci(against))
        result["traced_over_against_median"] = statistics.median(quotients)
        result["traced_over_against_ci95"] = list(bootstrap_ci(quotients))
    if args.events:
        result["events_recorded_median"] = statistics.median(e.get("recorded", 0) for e in events)
        result["events_lost_total"] = sum(e.get("lost", 0) for e in events)
        per_event = [c / e["recorded"] * 1e9 for c, e in zip(cpu_s, events, strict=True) if e]
        result["tracer_cpu_ns_per_event_median"] = statistics.median(per_event)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
