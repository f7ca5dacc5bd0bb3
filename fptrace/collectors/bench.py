"""`fptrace bench`: run the FPU-state-aware microbenchmarks (fptrace/workloads/fpbench.c).

Method as pyperf does it: every measurement is a separate process (so one run's state
cannot leak into the next); a warm-up round is run and discarded; the state levels are
interleaved, in an order rotated every repetition, so that drift hits every level alike;
tasks are pinned.  Statistics live in fptrace/analysis/bench.py.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fptrace.collectors.host import HostFacts, cpu_flags
from fptrace.errors import EnvironmentProblem, UsageError
from fptrace.recording.manifest import Bench as BenchInfo
from fptrace.recording.manifest import BenchItem, Manifest, Target
from fptrace.recording.writer import RecordingWriter
from fptrace.workloads.build import workload_binary

STATES = ("init", "sse", "avx", "avx512", "amx")
CPU_FLAG = {"avx": "avx", "avx512": "avx512f", "amx": "amx_tile"}
SKIP_EXIT = 5
NOT_LIVE_EXIT = 3


@dataclass(frozen=True)
class Bench:
    """One benchmark: which fpbench mode, with what, and what one operation is."""

    name: str
    mode: str  # fpbench's first argument
    op: str  # what one operation is (shown in the output)
    iters: int
    quick_iters: int
    args: tuple[str, ...] = ()
    states: tuple[str, ...] = STATES
    cpus: int = 1  # CPUs it needs
    metrics: dict[str, str] = field(default_factory=lambda: {"op": "ns_per_op"})


BENCHMARKS: dict[str, Bench] = {
    b.name: b
    for b in (
        Bench("ctx-pipe", "pipe", "round trip, 2 processes, 1 CPU", 20000, 4000),
        Bench(
            "ctx-pipe-threads", "pipe", "round trip, 2 threads, 1 CPU", 20000, 4000, ("--threads",)
        ),
        Bench(
            "ctx-pipe-cross",
            "pipe",
            "round trip, 2 processes, 2 CPUs",
            2000,
            400,
            ("--cpu-b", "1"),
            cpus=2,
        ),
        Bench("ctx-futex", "futex", "round trip, 2 processes, 1 CPU", 20000, 4000),
        Bench(
            "ctx-futex-threads",
            "futex",
            "round trip, 2 threads, 1 CPU",
            20000,
            4000,
            ("--threads",),
        ),
        Bench("ctx-yield", "yield", "sched_yield, 2 processes, 1 CPU", 20000, 4000),
        Bench("signal", "signal", "caught signal: delivery + sigreturn", 20000, 4000),
        Bench("fork", "fork", "fork + exit + wait", 500, 150),
        Bench("exec", "exec", "fork + exec + exit + wait", 100, 30),
        Bench(
            "calibrate",
            "xsave",
            "one user-space XSAVE-family instruction",
            200000,
            50000,
            metrics={
                "xsavec": "xsavec_ns",
                "xrstor": "xrstor_ns",
                "xsave": "xsave_ns",
                "xsaveopt": "xsaveopt_ns",
            },
        ),
        Bench(
            "amx-first",
            "amx-first",
            "first tile load in a new process (#NM + fpstate realloc)",
            1,
            1,
            states=("amx",),
            metrics={"first": "ns_per_op", "later": "later_ns"},
        ),
    )
}
DEFAULT_SET = (
    "ctx-pipe",
    "ctx-pipe-threads",
    "ctx-pipe-cross",
    "ctx-futex-threads",
    "signal",
    "fork",
    "exec",
    "calibrate",
    "amx-first",
)


def resolve(names: list[str], states: list[str] | None) -> tuple[list[Bench], list[str]]:
    """Validate the user's choice; unknown names or a state the CPU lacks are errors."""
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        raise UsageError(
            f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}"
        )
    benches = [BENCHMARKS[n] for n in (names or DEFAULT_SET)]
    flags = cpu_flags()
    if states:
        bad = [s for s in states if s not in STATES]
        if bad:
            raise UsageError(f"unknown state {', '.join(bad)}: choose from {', '.join(STATES)}")
        lacking = [s for s in states if s in CPU_FLAG and CPU_FLAG[s] not in flags]
        if lacking:
            raise EnvironmentProblem(
                f"this CPU lacks {', '.join(lacking)} (no {CPU_FLAG[lacking[0]]} in "
                "/proc/cpuinfo): leave it out of --states"
            )
        return benches, states
    return benches, [s for s in STATES if s not in CPU_FLAG or CPU_FLAG[s] in flags]


@dataclass
class BenchRun:
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)


def _run_one(binary: Path, bench: Bench, state: str, iters: int) -> tuple[int, dict[str, Any]]:
    cmd = [str(binary), bench.mode, "--state", state, "--iters", str(iters), *bench.args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise EnvironmentProblem(
            f"benchmark {bench.name} ({state}) failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip()[:200] or 'no output'}"
        )
    return proc.returncode, json.loads(lines[-1])


def run(
    benches: list[Bench],
    states: list[str],
    reps: int,
    quick: bool,
    progress: Callable[[str], None] | None = None,
) -> BenchRun:
    binary = workload_binary("fpbench")
    out = BenchRun(
        config={"reps": reps, "quick": quick, "states": states, "warmup": 1, "pinned": True}
    )
    ncpu = os.cpu_count() or 1
    for bench in benches:
        iters = bench.quick_iters if quick else bench.iters
        todo = [s for s in states if s in bench.states]
        if bench.cpus > ncpu:
            out.skipped.append({"bench": bench.name, "state": "*", "reason": "needs 2 CPUs"})
            continue
        for s in [s for s in bench.states if s not in states]:
            out.skipped.append({"bench": bench.name, "state": s, "reason": "state not selected"})
        for rep in range(reps + 1):  # rep 0 is the warm-up, discarded
            k = rep % max(len(todo), 1)
            for state in todo[k:] + todo[:k]:
                code, res = _run_one(binary, bench, state, iters)
                if code == SKIP_EXIT:
                    out.skipped.append(
                        {"bench": bench.name, "state": state, "reason": res.get("skipped", "?")}
                    )
                    todo.remove(state)
                    continue
                if code == NOT_LIVE_EXIT or not res.get("live"):
                    raise EnvironmentProblem(
                        f"benchmark {bench.name}: the {state} state was not live "
                        f"(XINUSE {int(res.get('xinuse_a', 0)):#x}): results would be wrong"
                    )
                if code != 0:
                    raise EnvironmentProblem(f"benchmark {bench.name} ({state}) exit {code}")
                if rep == 0:
                    continue
                for metric, key in bench.metrics.items():
                    value = float(res.get(key, -1))
                    if value < 0:  # instruction not supported (e.g. no XSAVEOPT)
                        continue
                    out.rows.append(
                        {
                            "bench": bench.name,
                            "state": state,
                            "metric": metric,
                            "rep": rep,
                            "ns": value,
                            "ops": int(res.get("ops", 0)),
                            "xinuse": int(res.get("xinuse_a", 0)),
                            "pid_a": int(res.get("pid_a", 0)),
                            "pid_b": int(res.get("pid_b", 0)),
                        }
                    )
        if progress is not None:
            progress(f"{bench.name}: {reps} repetitions x {len(todo)} levels done")

    return out


def write_results(
    writer: RecordingWriter,
    run_result: BenchRun,
    benches: list[Bench],
    facts: HostFacts,
    calibration: dict[str, Any] | None,
    started_at: str,
    ended_at: str,
    duration_s: float,
    argv: list[str],
) -> Manifest:
    """Store the results as a recording: the bench table, the cost table, the host."""
    from fptrace import __version__

    manifest = Manifest(
        kind="bench",
        status="complete",
        fptrace_version=__version__,
        started_at=started_at,
        ended_at=ended_at,
        duration_s=round(duration_s, 3),
        command_line=tuple(argv),
        target=Target(mode="bench"),
        bench=BenchInfo(
            benchmarks=tuple(BenchItem(b.name, b.op, b.mode) for b in benches),
            skipped=tuple(run_result.skipped),
            extra=run_result.config,
        ),
        calibration=calibration,
        host=facts.host,
    )
    writer.append("bench", run_result.rows)
    if facts.config_text is not None:
        writer.write_kernel_config(facts.config_text)
    if calibration is not None:
        writer.write_calibration(calibration)
    writer.finalize(manifest)
    return manifest
