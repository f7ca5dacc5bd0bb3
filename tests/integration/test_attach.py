"""How the switch-path probes attach: tp_btf with direct loads here, raw tracepoints as fallback."""

from __future__ import annotations

import os
import struct

from fptrace.analysis import summary
from fptrace.collectors.bpf_session import BpfSession
from fptrace.probes.headers import choose_headers
from fptrace.probes.kernel import LiveKernel, find_tracefs
from fptrace.probes.plan import PlanOptions, plan_probes
from tests import known_answer

N = 3000
PROBE_READ_KERNEL = 113  # BPF_FUNC_probe_read_kernel


def helper_calls(session: BpfSession, name: str) -> list[int]:
    code = session.obj.progs[name].insns
    return [
        struct.unpack_from("<i", code, i + 4)[0] for i in range(0, len(code), 8) if code[i] == 0x85
    ]


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
    plan = plan_probes(
        LiveKernel(find_tracefs(mount=True)),
        PlanOptions(filter_targets=False, self_tgid=os.getpid()),
    )
    assert "FPU_DIRECT" in plan.macros
    with BpfSession(plan, choose_headers(os.uname().release).path) as session:
        assert session.tp_btf_refused and "invalid mem access" in session.tp_btf_refused
        session.attach_fpu()
        assert set(session.attached_as.values()) == {"raw_tracepoint"}
        os.system("true")  # a few switches
        session.detach_fpu()
        assert int(session.snapshot().counts.count.sum()) > 0
