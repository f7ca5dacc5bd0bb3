"""How the switch-path probes attach: tp_btf with direct loads here, raw tracepoints as fallback."""

from __future__ import annotations

import json
import os
import struct
import subprocess

from fptrace.analysis import summary
from fptrace.cache import cache_dir
from fptrace.collectors.bpf_session import BpfSession
from fptrace.probes.headers import choose_headers
from fptrace.probes.kernel import LiveKernel, find_tracefs
from fptrace.probes.plan import FPU_EVENT_IDS, REASONS, PlanOptions, plan_probes
from tests import known_answer
from tests.integration.conftest import require_tool

N = 3000
PROBE_READ_KERNEL = 113  # BPF_FUNC_probe_read_kernel
GET_CURRENT_PID_TGID = 14  # BPF_FUNC_get_current_pid_tgid
GET_CURRENT_TASK_BTF = 158  # BPF_FUNC_get_current_task_btf
SWITCH_PATH = ("x86_fpu_regs_deactivated", "x86_fpu_regs_activated")


def calls(session: BpfSession, name: str, src: int) -> list[int]:
    """The immediates of the call instructions of function ``name`` with source ``src``
    (0: helper numbers; 2: kfunc BTF ids)."""
    code = session.obj.progs[name].insns
    return [
        struct.unpack_from("<i", code, i + 4)[0]
        for i in range(0, len(code), 8)
        if code[i] == 0x85 and code[i + 1] >> 4 == src
    ]


def helper_calls(session: BpfSession, name: str) -> list[int]:
    return calls(session, name, 0)


def live_plan(**kw: object):
    return plan_probes(
        LiveKernel(find_tracefs(mount=True)),
        PlanOptions(filter_targets=False, self_tgid=os.getpid(), **kw),  # type: ignore[arg-type]
    )


def counts_after_refusal(plan, said: str, kind: str) -> None:
    """Load with the verifier refusing a build (monkeypatched): the notes say ``said``,
    every FPU event attaches as ``kind``, and switches are counted."""
    with BpfSession(plan, choose_headers(os.uname().release).path) as session:
        assert session.tp_btf_refused and said in session.tp_btf_refused
        session.attach_fpu()
        assert set(session.attached_as.values()) == {kind}
        os.system("true")  # a few switches
        session.detach_fpu()
        assert int(session.snapshot().counts.count.sum()) > 0


def test_the_switch_path_reads_the_task_with_no_helper_call():
    """tp_btf: the task (pid, tgid, __state, TIF flags) through bpf_rdonly_cast of its fpu,
    a kfunc the verifier turns into a move: each helper call would be a call and a return on
    every context switch (docs/overhead.md).  The raw build still asks the helpers."""
    plan = live_plan()
    assert "TASK_FROM_FPU" in plan.macros  # 6.18: bpf_rdonly_cast and task_struct in BTF
    headers = choose_headers(os.uname().release).path
    with BpfSession(plan, headers) as session:
        assert session.tp_btf_refused is None  # the verifier took the kfunc build
        for event in SWITCH_PATH:
            helpers = helper_calls(session, "btf__" + event)
            assert GET_CURRENT_PID_TGID not in helpers
            assert GET_CURRENT_TASK_BTF not in helpers
            assert calls(session, "btf__" + event, 2) == [plan.macros["KFUNC_BPF_RDONLY_CAST"]]
    with BpfSession(live_plan(raw_tp=True), headers) as session:
        for event in SWITCH_PATH:
            assert GET_CURRENT_PID_TGID in helper_calls(session, "fpu__" + event)
            assert calls(session, "fpu__" + event, 2) == []


def test_a_refused_kfunc_build_keeps_tp_btf_with_helper_calls(monkeypatch):
    """A verifier that refuses the kfunc (or the cast task's loads) costs a helper call per
    event, not the tp_btf direct loads: the build without it is tried before raw."""
    from fptrace.collectors import bpf_session

    real = bpf_session.load_tp_btf

    def refuse_kfuncs(insns: bytes, *args: object) -> int:
        if any(insns[i] == 0x85 and insns[i + 1] >> 4 == 2 for i in range(0, len(insns), 8)):
            raise OSError(22, "Invalid argument: calling kernel function is not supported")
        return real(insns, *args)

    monkeypatch.setattr(bpf_session, "load_tp_btf", refuse_kfuncs)
    counts_after_refusal(live_plan(), "through its fpu", "tp_btf")


def test_direct_loads_survive_bccs_rewriter():
    """btf__* must read the fpu argument without helper calls, or tp_btf buys nothing."""
    env = LiveKernel(find_tracefs(mount=True))
    headers = choose_headers(os.uname().release).path
    calls = {}
    for raw in (False, True):
        plan = plan_probes(
            env, PlanOptions(filter_targets=False, self_tgid=os.getpid(), raw_tp=raw)
        )
        assert ("FPU_DIRECT" in plan.macros) is not raw
        with BpfSession(plan, headers) as session:
            assert session.tp_btf_refused is None
            fn = "fpu__" if raw else "btf__"
            calls[raw] = helper_calls(session, fn + "x86_fpu_regs_deactivated")
    # The raw build's three switch-path reads (fpu->fpstate, XSTATE_BV, current->__state
    # for the reason) are helper calls; the tp_btf build has them as loads (the probe reads
    # left are on the miss path: task and VSO bookkeeping).
    assert calls[True].count(PROBE_READ_KERNEL) - calls[False].count(PROBE_READ_KERNEL) == 3


def test_tp_btf_and_the_raw_fallback_give_the_same_known_answer(record, pingpong):
    kinds = {}
    for mode, env in (("btf", None), ("raw", dict(os.environ, FPTRACE_RAW_TP="1"))):
        run = record("--", str(pingpong), "--mode", "avx", "--rounds", str(N), name=mode, env=env)
        assert run.proc.returncode == 0, run.proc.stderr
        work = run.workload_json()
        attached = run.rec.manifest.probes.attached
        kinds[mode] = {p.kind for p in attached if p.name.startswith("x86_fpu")} - {
            "tracepoint"  # the TIF calibration probe, when a run has no cached bit
        }
        t = summary.per_task(run.rec.counts, run.rec.tasks).set_index("pid")
        for who, pid in known_answer.sides(work):
            known_answer.check(work, who, int(t.loc[pid, "saves"]), int(t.loc[pid, "restores"]))
        vsos = run.rec.vso[run.rec.vso["pid"].isin([work["parent_pid"], work["child_pid"]])]
        assert (vsos["size"] > 0).all()  # the miss path still reads fpstate->size
    assert kinds == {"btf": {"tp_btf"}, "raw": {"raw_tracepoint"}}


def test_a_refused_tp_btf_build_is_rebuilt_as_raw_tracepoints(monkeypatch):
    """Kernels whose verifier rejects the direct loads still record, and say why."""
    from fptrace.collectors import bpf_session

    def refuse(*_args: object) -> int:
        raise OSError(13, "Permission denied: R1 invalid mem access 'scalar'")

    monkeypatch.setattr(bpf_session, "load_tp_btf", refuse)
    plan = live_plan()
    assert "FPU_DIRECT" in plan.macros
    counts_after_refusal(plan, "invalid mem access", "raw_tracepoint")


def test_a_tasks_switch_path_keys_do_not_evict_each_other():
    """A pipe ping-pong on one CPU: each task is preempted by the one it wakes about as often
    as it blocks, so its saves come with both reasons.  Each (task, kind of key) has a cache
    slot of its own: misses (each a clock read and shared-map work) stay a trickle.  With the
    reason outside the slot choice, a quarter of the saves missed (~3 % of the benchmark)."""
    perf = require_tool("perf")
    loops = 20000
    seen = []
    with BpfSession(live_plan(), choose_headers(os.uname().release).path) as session:
        session.attach_fpu()
        seq = session.maps["seq"]
        for _ in range(3):  # two tasks can share a group of slots (1 in 32): try again
            before = sum(seq[seq.Key(0)])
            subprocess.run(
                ["taskset", "-c", "0", perf, "bench", "sched", "pipe", "-l", str(loops)],
                check=True,
                capture_output=True,
            )
            seen.append(sum(seq[seq.Key(0)]) - before)
            if seen[-1] < 0.02 * 2 * loops:
                break
        session.detach_fpu()
        counts = session.snapshot().counts
    saves = counts.keys["event"] == FPU_EVENT_IDS["regs_deactivated"]
    by_reason = {
        name: int(counts.count[saves & (counts.keys["reason"] == value)].sum())
        for name, value in REASONS.items()
    }
    total = sum(by_reason.values())
    # The workload this is about: both reasons, in numbers.
    assert by_reason["REASON_VOLUNTARY"] > 0.05 * total, by_reason
    assert by_reason["REASON_INVOLUNTARY"] > 0.05 * total, by_reason
    assert min(seen) < 0.02 * 2 * loops, f"cache misses per run {seen} for {2 * loops} saves"


def test_a_first_run_holds_the_calibration_probe_until_the_command_ends(record, pingpong, tmp_path):
    """No probe is detached while a traced command runs: detaching a tracepoint's last-but-one
    probe re-patches its call sites (int3 text poking) under the workload's feet.

    A cache without the TIF bit (this kernel build never calibrated) and the host's compiled
    programs; the command itself lists, with bpftool, the BPF programs attached to perf
    tracepoints after its pingpong and 2 s more: long past the calibration (16 samples; the
    recorder looks every 10 ms while calibrating), when it used to detach the probe.
    """
    bpftool = require_tool("bpftool")
    host = cache_dir()
    cache = tmp_path / "cache"
    cache.mkdir()
    for sub in ("bpf", "btf", "headers", "bin"):
        if (host / sub).is_dir():
            (cache / sub).symlink_to(host / sub)
    listed = tmp_path / "perf.json"
    script = f"{pingpong} --mode avx --rounds {N} --cpu 0 && sleep 2 && {bpftool} perf show -j"
    script += f" > {listed}"
    run = record("--", "sh", "-c", script, env=dict(os.environ, FPTRACE_CACHE=str(cache)))
    assert run.proc.returncode == 0, run.proc.stderr
    attached = run.rec.manifest.probes.attached
    assert ("x86_fpu:x86_fpu_regs_activated", "tracepoint") in {(p.name, p.kind) for p in attached}
    assert run.rec.manifest.load_fpu is not None and run.rec.manifest.load_fpu.tif_bit is not None
    mine = [e for e in json.loads(listed.read_text()) if e.get("fd_type") == "tracepoint"]
    assert "x86_fpu_regs_activated" in {e["tracepoint"] for e in mine}, mine
    assert list(cache.glob("tif-bit-*")), "the calibrated bit was not cached"
    # and after the run nothing of fptrace's is left on that tracepoint
    proc = subprocess.run([bpftool, "perf", "show", "--json"], capture_output=True, text=True)
    left = [e for e in json.loads(proc.stdout or "[]") if e.get("fd_type") == "tracepoint"]
    assert "x86_fpu_regs_activated" not in {e["tracepoint"] for e in left}, left
