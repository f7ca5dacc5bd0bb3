"""Known answer: two tasks pinned to one CPU ping-pong N round trips over pipes.

Each task leaves the CPU at least once per round trip, so it is saved at least N times and
restored at least N times, and at most once per context switch the workload counted itself
(tests/known_answer.py: the bounds and why).
"""

from __future__ import annotations

import json
import os

import pytest

from fptrace.analysis import summary
from tests import known_answer
from tests.conftest import require_level
from tests.hardware import AVX, LEVEL_MARK, XTILEDATA, ZMM_HI256

N = 5000
TOL = 10
AMX_TILEDATA = 1 << XTILEDATA


def saves_with_bit(counts, pid: int, bit: int) -> tuple[int, int]:
    s = counts[(counts["pid"] == pid) & (counts["event"] == "regs_deactivated")]
    total = int(s["count"].sum())
    with_bit = int(s[s["xfeatures"].astype("int64") & bit != 0]["count"].sum())
    return with_bit, total


def expected_size(cpu, xcomp_bv: int, xfeatures: int) -> int:
    """The buffer size CPUID gives for this layout (compacted if bit 63, else standard)."""
    if xcomp_bv >> 63:
        return cpu.compacted_size(xcomp_bv)
    return cpu.standard_size(xfeatures)


@pytest.mark.parametrize(
    ("mode", "load_fpu"),
    [("avx512", False), ("avx512", True), ("avx", False), ("avx", True), ("none", False)],
)
def test_pingpong_saves_restores_sizes_and_live_state(record, pingpong, cpu, mode, load_fpu):
    """AVX runs on every x86-64 CPU fptrace supports; AVX-512 where the CPU has it."""
    if mode != "none":
        require_level(mode)
    bit = LEVEL_MARK.get(mode)
    extra = ["--load-fpu"] if load_fpu else []
    run = record(*extra, "--", str(pingpong), "--mode", mode, "--rounds", str(N))
    assert run.proc.returncode == 0, run.proc.stderr
    work = run.workload_json()
    assert work["live"], work  # XINUSE confirmed the state was live in the workload
    rec = run.rec
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    for who, pid in known_answer.sides(work):
        t = tasks.loc[pid]
        known_answer.check(work, who, int(t.saves), int(t.restores))
        # fptrace's switch count reads the same kernel counters as getrusage (at exit).
        lo, hi = known_answer.bounds(work, who)
        assert lo <= int(t.switches) <= hi, (pid, t)
        assert int(t.oncpu_ns) > 0
        # The VSO's kernel size equals the size computed from CPUID and its xcomp_bv.
        vsos = rec.vso[rec.vso["pid"] == pid]
        assert len(vsos) == 1
        v = vsos.iloc[0]
        expect = expected_size(cpu, int(v["xcomp_bv"]), int(v["xfeatures"]))
        assert int(v["size"]) == expect == int(v["layout_size"])
        assert int(v["user_size"]) == cpu.standard_size(int(v["user_xfeatures"]))
        # XSTATE_BV carries the dirtied component for (nearly) every save, and not otherwise.
        probe = bit if bit is not None else (1 << ZMM_HI256) | (1 << AVX)
        with_bit, total = saves_with_bit(rec.counts, pid, probe)
        if bit is not None:
            assert with_bit >= total - 3, (with_bit, total)
        else:
            assert with_bit <= 3, (with_bit, total)
    # Restores are classified by the calibrated TIF_NEED_FPU_LOAD bit, read at every
    # regs_activated, and every one of the ping-pong's had it set; --load-fpu reads it at
    # regs_deactivated too, which is not read by default (it costs on every switch).
    assert rec.manifest.load_fpu.tif_bit in (14, 19)
    acts = rec.counts[rec.counts["event"] == "regs_activated"]
    assert acts["load_fpu"].notna().all()
    mine = acts[acts["pid"].isin([work["parent_pid"], work["child_pid"]])]
    assert int(mine[mine["load_fpu"] == 1]["count"].sum()) >= 2 * N
    deacts = rec.counts[rec.counts["event"] == "regs_deactivated"]["load_fpu"]
    assert deacts.notna().all() if load_fpu else deacts.isna().all()
    # xstate permission requests are counted in command mode (probe attached).
    attached = {p.name for p in rec.manifest.probes.attached}
    assert "syscalls:sys_enter_arch_prctl" in attached
    assert sum(rec.manifest.drops.values()) == 0
    # The child's fork copy is accounted to the child and its own VSO.
    copies = rec.counts[rec.counts["event"] == "copy_dst"]
    assert list(copies["pid"]) == [work["child_pid"]]
    assert set(copies["vso"]) <= set(rec.vso["vso"])


def test_failing_command_exit_code_and_complete_recording(record):
    run = record("--", "sh", "-c", "exit 7")
    assert run.proc.returncode == 7
    rec = run.rec
    assert rec.manifest.status == "complete"
    assert rec.manifest.target.exit_code == 7
    assert not rec.recovered


def test_descendants_are_followed_through_fork_and_exec(record, pingpong):
    n = 1000
    script = f"{pingpong} --rounds {n} --cpu 0 & {pingpong} --rounds {n} --cpu 1; wait"
    run = record("--", "sh", "-c", script)
    assert run.proc.returncode == 0, run.proc.stderr
    rec = run.rec
    tasks = summary.per_task(rec.counts, rec.tasks)
    pp = tasks[tasks["comm"].str.startswith("pingpong")]
    assert len(pp) == 4, tasks  # 2 workloads x (parent + forked child)
    works = [json.loads(ln) for ln in run.proc.stdout.splitlines() if ln.startswith("{")]
    assert len(works) == 2
    by_pid = pp.set_index("pid")
    for work in works:
        for who, pid in known_answer.sides(work):
            t = by_pid.loc[pid]
            known_answer.check(work, who, int(t.saves), int(t.restores))
    info = rec.tasks.set_index("pid")
    root = int(info[info["comm"] == "sh"].index[0])
    for pid in pp["pid"]:
        chain, cur = [], int(pid)
        while cur != root and cur in info.index and len(chain) < 5:
            chain.append(cur)
            cur = int(info.loc[cur, "ppid"])
        assert cur == root, (pid, chain)  # every pingpong descends from the traced sh
    assert int(info.loc[info["comm"].str.startswith("pingpong"), "execs"].sum()) >= 2


def test_amx_first_use_replaces_the_vso(record, pingpong, cpu):
    """AMX permission, then first tile use: the kernel reallocates each task's fpstate."""
    require_level("amx")
    run = record("--", str(pingpong), "--mode", "amx", "--rounds", str(N))
    work = run.workload_json()
    assert run.proc.returncode == 0 and work["live"], (run.proc.stderr, work)
    rec = run.rec
    perm = rec.counts[rec.counts["event"] == "xcomp_perm"]
    assert list(perm["xfeatures"]) == [18] and list(perm["arg"]) == [0x1023]  # XTILEDATA
    for pid in (work["parent_pid"], work["child_pid"]):
        vsos = rec.vso[rec.vso["pid"] == pid]
        new = vsos[vsos["is_valloc"]]
        old = vsos[~vsos["is_valloc"]]
        assert len(new) == 1 and len(old) == 1, vsos
        v = new.iloc[0]
        assert int(v["xfeatures"]) & AMX_TILEDATA
        assert int(v["size"]) == cpu.compacted_size(int(v["xcomp_bv"])) > int(old.iloc[0]["size"])
        assert v["prev_vso"] == old.iloc[0]["vso"]  # replaced under the same task
        with_bit, total = saves_with_bit(rec.counts, pid, AMX_TILEDATA)
        assert abs(with_bit - N) <= TOL and total - with_bit <= TOL
        assert set(
            rec.counts[
                (rec.counts["pid"] == pid)
                & (rec.counts["xfeatures"].astype("int64") & AMX_TILEDATA != 0)
            ]["vso"]
        ) == {v["vso"]}  # tile state only in the new one


def test_tif_bit_is_calibrated_on_a_fresh_cache_and_then_reused(record, pingpong, tmp_path):
    env = dict(os.environ, FPTRACE_CACHE=str(tmp_path / "cache"))
    first = record("--load-fpu", "--", str(pingpong), "--rounds", "500", env=env, name="a")
    assert first.proc.returncode == 0, first.proc.stderr
    m = first.rec.manifest
    assert m.load_fpu.tif_bit in (14, 19)
    assert "calibrated" in m.load_fpu.method
    cal = [
        p
        for p in m.probes.attached
        if p.name == "x86_fpu:x86_fpu_regs_activated" and p.kind == "tracepoint"
    ]
    assert cal and "calibrates" in cal[0].reason
    acts = first.rec.counts[first.rec.counts["event"] == "regs_activated"]
    assert int(acts[acts["load_fpu"] == 1]["count"].sum()) >= 2 * 500
    second = record("--", "true", env=env, name="b")
    m2 = second.rec.manifest
    assert all(
        p.kind != "tracepoint" or not p.name.startswith("x86_fpu") for p in m2.probes.attached
    )  # no calibration probe the second time
    assert m2.load_fpu.tif_bit == m.load_fpu.tif_bit
