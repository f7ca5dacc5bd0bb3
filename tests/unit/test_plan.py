"""Probe decisions against fake kernels: features, not versions."""

from __future__ import annotations

import pytest

from fptrace.probes.plan import FPU_EVENT_IDS, PlanOptions, plan_probes
from tests.unit.fake_kernels import KERNELS, FakeKernel, kernel_4_19, kernel_6_18

ALL = PlanOptions(filter_targets=False, self_tgid=42)
FILTERED = PlanOptions(filter_targets=True, self_tgid=42)


def attached_raw(plan) -> set[str]:
    return {p.name.split("x86_fpu_", 1)[1] for p in plan.attached() if p.kind == "raw_tracepoint"}


@pytest.mark.parametrize("version", sorted(KERNELS))
def test_every_supported_kernel_plans_without_fatal_problems(version: str) -> None:
    plan = plan_probes(KERNELS[version](), FILTERED)
    assert plan.fatal == []
    assert {"regs_deactivated", "regs_activated"} <= attached_raw(plan)
    # Each attached raw probe is compiled in under its event id.
    for short in attached_raw(plan):
        assert plan.macros[f"EV_{short.upper()}"] == FPU_EVENT_IDS[short]


def test_6_18_has_seven_events_and_skips_the_removed_ones_with_a_reason() -> None:
    plan = plan_probes(kernel_6_18(), ALL)
    assert attached_raw(plan) == {
        "regs_deactivated",
        "regs_activated",
        "dropped",
        "copy_dst",
        "before_save",
        "after_save",
        "xstate_check_failed",
    }
    skipped = {p.name: p.reason for p in plan.skipped() if p.kind == "raw_tracepoint"}
    assert "removed in 6.16" in skipped["x86_fpu:x86_fpu_copy_src"]
    assert "removed in 6.16" in skipped["x86_fpu:x86_fpu_init_state"]
    assert all(not p.required for p in plan.skipped())


def test_6_18_finds_struct_fpu_after_task_struct() -> None:
    plan = plan_probes(kernel_6_18(), ALL)
    assert plan.macros["TASK_FPU_OFF"] == 3264  # sizeof(struct task_struct)
    assert plan.macros["HAVE_FPSTATE"] == 1
    assert plan.macros["FPU_FPSTATE_OFF"] == 16
    assert plan.macros["FPSTATE_REGS_OFF"] == 64
    assert plan.macros["FPSTATE_IS_VALLOC_BIT"] == 256
    assert any("6.16+" in n for n in plan.notes)


@pytest.mark.parametrize("version", ["6.1", "6.12"])
def test_6_x_finds_struct_fpu_inside_thread_struct(version: str) -> None:
    plan = plan_probes(KERNELS[version](), ALL)
    assert plan.macros["TASK_FPU_OFF"] == 5056 + 192  # task->thread + thread_struct.fpu
    assert len(attached_raw(plan)) == 11
    assert plan.macros["HAVE_FPSTATE"] == 1


def test_5_10_uses_the_embedded_buffer() -> None:
    plan = plan_probes(KERNELS["5.10"](), ALL)
    assert "HAVE_FPSTATE" not in plan.macros
    assert plan.macros["FPU_STATE_OFF"] == 64
    assert not any(k.startswith("FPSTATE_") for k in plan.macros)
    assert any("before 5.16" in n for n in plan.notes)


def test_load_fpu_calibration_only_where_the_record_has_load_fpu() -> None:
    assert plan_probes(kernel_6_18(), ALL).macros.get("CALIBRATE_TIF") == 1
    old = plan_probes(kernel_4_19(), ALL)
    assert "CALIBRATE_TIF" not in old.macros
    cal = [p for p in old.probes if p.kind == "tracepoint" and p.name.startswith("x86_fpu")]
    assert cal and not cal[0].attach and "initialized" in cal[0].reason


def test_a_known_tif_bit_needs_no_calibration_probe() -> None:
    plan = plan_probes(kernel_6_18(), PlanOptions(False, 1, calibrated_tif_bit=19))
    assert not plan.calibrate and plan_probes(kernel_6_18(), ALL).calibrate
    assert not [p for p in plan.attached() if p.kind == "tracepoint" and "x86_fpu" in p.name]
    assert any("bit 19" in n for n in plan.notes)
    assert plan.tif_bit == 19 and plan_probes(kernel_6_18(), ALL).tif_bit is None  # a field
    # The calibration program stays compiled in: one compiled program before and after.
    assert plan.cflags() == plan_probes(kernel_6_18(), ALL).cflags()


def test_a_traced_command_holds_the_calibration_probe_to_the_end() -> None:
    """No kernel text patched while the command runs (the int3 oops in the 7.2 guest)."""
    held = plan_probes(kernel_6_18(), PlanOptions(False, 1, hold_calibration=True))
    assert held.calibrate and held.calibration_held
    assert not plan_probes(kernel_6_18(), ALL).calibration_held  # -a: detached once done
    known = PlanOptions(False, 1, calibrated_tif_bit=19, hold_calibration=True)
    assert not plan_probes(kernel_6_18(), known).calibration_held  # nothing to hold


def test_missing_syscall_tracepoints_are_skipped_with_the_config_to_enable() -> None:
    plan = plan_probes(kernel_4_19(), ALL)
    p = next(p for p in plan.probes if p.name == "syscalls:sys_enter_arch_prctl")
    assert not p.attach and "CONFIG_FTRACE_SYSCALLS" in p.reason
    assert "PROBE_ARCH_PRCTL" not in plan.macros
    assert plan.fatal == []


def test_missing_switch_event_is_fatal() -> None:
    k = kernel_6_18()
    del k.groups["x86_fpu"]["x86_fpu_regs_deactivated"]
    plan = plan_probes(k, ALL)
    assert any("regs_deactivated" in f for f in plan.fatal)


def test_following_children_requires_the_fork_tracepoint() -> None:
    k = kernel_6_18()
    del k.groups["sched"]["sched_process_fork"]
    assert any("sched_process_fork" in f for f in plan_probes(k, FILTERED).fatal)
    assert plan_probes(k, ALL).fatal == []  # -a needs no following


def test_no_tracefs_and_no_btf_are_fatal_with_reasons() -> None:
    assert "tracefs" in plan_probes(FakeKernel("x", None, None), ALL).fatal[0]
    k = kernel_6_18()
    k.fake_btf = None
    k.btf_error = "cannot read /sys/kernel/btf/vmlinux"
    assert any("BTF" in f for f in plan_probes(k, ALL).fatal)


def test_unknown_struct_layout_is_fatal() -> None:
    k = kernel_6_18()
    k.fake_btf.structs["fpu"] = {"last_cpu": k.fake_btf.structs["fpu"]["last_cpu"]}
    assert any("neither 'fpstate' nor 'state'" in f for f in plan_probes(k, ALL).fatal)


def test_filtering_and_self_exclusion_reach_the_bpf_c() -> None:
    plan = plan_probes(kernel_6_18(), FILTERED)
    assert plan.macros["FILTER_TARGETS"] == 1
    assert plan.self_tgid == 42
    # Not a -D flag: the compiled program must not change from one run to the next (cache).
    assert not [f for f in plan.cflags() if "42" in f]
    assert "FILTER_TARGETS" not in plan_probes(kernel_6_18(), ALL).macros


def test_syscall_probe_can_be_turned_off_with_the_reason() -> None:
    plan = plan_probes(kernel_6_18(), PlanOptions(False, 1, arch_prctl=False))
    p = next(p for p in plan.probes if p.name == "syscalls:sys_enter_arch_prctl")
    assert not p.attach and "--arch-prctl" in p.reason
    assert "PROBE_ARCH_PRCTL" not in plan.macros


def test_load_fpu_on_the_switch_path_is_opt_in() -> None:
    assert "LOAD_ON_SWITCH" not in plan_probes(kernel_6_18(), ALL).macros
    plan = plan_probes(kernel_6_18(), PlanOptions(False, 1, load_on_switch=True))
    assert plan.macros["LOAD_ON_SWITCH"] == 1


def test_backend_choice_falls_back_to_ftrace_and_says_so(monkeypatch) -> None:
    import importlib.util

    from fptrace.collectors import options
    from fptrace.errors import EnvironmentProblem

    said: list[str] = []
    ok_plan = plan_probes(kernel_6_18(), ALL)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    opts = options.RecordOptions(system=True)
    assert options.choose_backend(opts, ok_plan, said.append) == "ftrace"
    assert said and "python3-bpfcc" in said[0] and "ftrace backend" in said[0]
    with pytest.raises(EnvironmentProblem, match="cannot trace with BCC"):
        options.choose_backend(
            options.RecordOptions(system=True, backend="bcc"), ok_plan, said.append
        )
    forced = options.RecordOptions(system=True, backend="ftrace", events=True)
    assert options.choose_backend(forced, ok_plan, said.append) == "ftrace"  # events work too
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert options.choose_backend(opts, ok_plan, said.append) == "bcc"
    no_btf = plan_probes(FakeKernel("x", kernel_6_18().groups, None, "no BTF"), ALL)
    assert options.choose_backend(opts, no_btf, said.append) == "ftrace"  # BTF is BCC's need


def test_fpu_probes_carry_the_btf_id_tp_btf_attaches_by() -> None:
    kernel = kernel_6_18()
    assert kernel.fake_btf is not None
    kernel.fake_btf.typedefs = {"btf_trace_x86_fpu_regs_deactivated": 8223}
    by_name = {p.name: p for p in plan_probes(kernel, ALL).attached()}
    assert by_name["x86_fpu:x86_fpu_regs_deactivated"].btf_id == 8223
    assert by_name["x86_fpu:x86_fpu_regs_activated"].btf_id == 0  # no typedef: raw only


def test_the_tp_btf_build_needs_every_fpu_probe_to_have_a_btf_id() -> None:
    kernel = kernel_6_18()
    assert kernel.fake_btf is not None
    names = [p.name.split(":")[1] for p in plan_probes(kernel, ALL).attached()]
    assert "FPU_DIRECT" not in plan_probes(kernel, ALL).macros  # no typedefs at all
    kernel.fake_btf.typedefs = {f"btf_trace_{n}": i + 1 for i, n in enumerate(names)}
    assert plan_probes(kernel, ALL).macros["FPU_DIRECT"] == 1
    raw = PlanOptions(filter_targets=False, self_tgid=42, raw_tp=True)
    assert "FPU_DIRECT" not in plan_probes(kernel, raw).macros
    del kernel.fake_btf.typedefs["btf_trace_x86_fpu_dropped"]
    assert "FPU_DIRECT" not in plan_probes(kernel, ALL).macros  # one build for all events


def test_map_sizes_follow_the_pid_space() -> None:
    from fptrace.probes.plan import MAX_TASKS_CAP, MIN_TASKS, map_sizes

    small = map_sizes(32768)
    assert small["MAX_TASKS"] == 32768 and small["MAX_COUNTS"] == 4 * 32768
    assert map_sizes(1000)["MAX_TASKS"] == MIN_TASKS  # never below a small machine's
    assert map_sizes(4_194_304)["MAX_TASKS"] == MAX_TASKS_CAP  # preallocated: capped


def test_the_ring_layout_check_catches_a_field_moved_in_the_c_alone() -> None:
    """ring.py decodes struct fp_batch with numpy types; the BPF session compares them with
    the layout the compiled object describes before it reads any event."""
    import ctypes

    from fptrace.collectors.ring import BATCH, layout_mismatch

    def batch(fields: list[tuple[str, type]]) -> type:
        event = type("fp_event", (ctypes.Structure,), {"_fields_": fields})
        return type(
            "fp_batch",
            (ctypes.Structure,),
            {"_fields_": [("n", ctypes.c_uint32), ("pad", ctypes.c_uint32), ("e", event * BATCH)]},
        )

    u64, u32, u16 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_uint16
    as_in_c = [("ts", u64), ("vso", u64), ("xfeatures", u64), ("pid", u32), ("tgid", u32)]
    as_in_c += [("event", u16), ("load_bits", u16), ("cpu", u16), ("pad", u16)]
    assert layout_mismatch(batch(as_in_c)) is None
    swapped = [*as_in_c[:3], ("tgid", u32), ("pid", u32), *as_in_c[5:]]
    assert "fp_event.pid is at 28" in (layout_mismatch(batch(swapped)) or "")
    wider = [*as_in_c[:-1], ("pad", u32)]
    assert "bytes" in (layout_mismatch(batch(wider)) or "")


def test_the_tp_btf_build_reads_the_switch_path_task_through_its_fpu() -> None:
    """bpf_rdonly_cast(fpu - TASK_FPU_OFF, task_struct): only with the kfunc, the struct's
    id and the layout in BTF, only in the tp_btf build, never with an id a helper could have."""
    from fptrace.probes.plan import KFUNC_MIN_ID

    kernel = kernel_6_18()
    btf = kernel.fake_btf
    assert btf is not None
    names = [p.name.split(":")[1] for p in plan_probes(kernel, ALL).attached()]
    btf.typedefs = {f"btf_trace_{n}": i + 1 for i, n in enumerate(names)}
    assert "TASK_FROM_FPU" not in plan_probes(kernel, ALL).macros  # no kfunc in BTF
    btf.funcs.add("bpf_rdonly_cast")
    btf.ids = {"func bpf_rdonly_cast": 64911, "struct task_struct": 114}
    macros = plan_probes(kernel, ALL).macros
    assert macros["TASK_FROM_FPU"] == 1
    assert macros["KFUNC_BPF_RDONLY_CAST"] == 64911
    assert macros["TASK_STRUCT_BTF_ID"] == 114
    assert macros["TASK_FPU_OFF"] == 3264  # 6.16+: struct fpu right after task_struct
    raw = PlanOptions(filter_targets=False, self_tgid=42, raw_tp=True)
    assert "TASK_FROM_FPU" not in plan_probes(kernel, raw).macros
    btf.ids["func bpf_rdonly_cast"] = KFUNC_MIN_ID - 1  # could be taken for a helper number
    assert "TASK_FROM_FPU" not in plan_probes(kernel, ALL).macros
    btf.ids["func bpf_rdonly_cast"] = 64911
    del btf.ids["struct task_struct"]
    assert "TASK_FROM_FPU" not in plan_probes(kernel, ALL).macros
    assert "KFUNC_BPF_RDONLY_CAST" not in " ".join(plan_probes(kernel, ALL).cflags())


def test_a_task_moved_to_another_cgroup_is_followed_where_the_ids_agree() -> None:
    attach = "cgroup:cgroup_attach_task"
    plan = plan_probes(kernel_6_18(), ALL)  # 5.5+: dst_id is the kernfs id, as in BPF
    assert plan.macros["PROBE_CGROUP_ATTACH"] == 1
    assert next(p for p in plan.probes if p.name == attach).attach
    # Before 5.5 `struct cgroup` had an id of its own, and the tracepoint gave that one.
    old = plan_probes(kernel_4_19(), ALL)
    assert "PROBE_CGROUP_ATTACH" not in old.macros
    assert "not the BPF cgroup id" in next(p for p in old.skipped() if p.name == attach).reason
    no_btf = plan_probes(FakeKernel("x", kernel_6_18().groups, None, "no BTF"), ALL)
    assert "PROBE_CGROUP_ATTACH" not in no_btf.macros
    groups = kernel_6_18().groups
    assert groups is not None
    del groups["cgroup"]
    gone = plan_probes(FakeKernel("x", groups, kernel_6_18().fake_btf), ALL)
    assert "not in this kernel" in next(p for p in gone.skipped() if p.name == attach).reason
