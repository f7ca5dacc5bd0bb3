"""Decide which probes to attach and how to build the BPF program for *this* kernel.

Features, not versions (../shared/docs/kernel-fpu.md §2.4): the event set and field names
come from tracefs, and every struct offset from BTF.  The result is a :class:`ProbePlan`:
each probe is required or optional, attached or skipped with a reason, plus the ``-D``
macros that describe the kernel's layout to the BPF C.  Pure function of a
:class:`~fptrace.probes.kernel.KernelEnv`, so fake kernels can test it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from fptrace.probes.kernel import KernelEnv, StructInfo
from fptrace.xstate import AMX_MASK, AVX512_MASK

# Stable numeric ids for events, shared by the BPF C (as macros) and the recording.
# Names are the tracepoint names without the ``x86_fpu_`` prefix.
FPU_EVENT_IDS: dict[str, int] = {
    "regs_deactivated": 1,
    "regs_activated": 2,
    "dropped": 3,
    "copy_dst": 4,
    "before_save": 5,
    "after_save": 6,
    "xstate_check_failed": 7,
    "copy_src": 8,
    "before_restore": 9,
    "after_restore": 10,
    "init_state": 11,
    "activate_state": 12,
    "deactivate_state": 13,
}
# Events that are not x86_fpu tracepoints but are counted in the same table.
# Events that are not x86_fpu tracepoints count from here (their keys hold no buffer and no
# load_fpu; columns.load_fpu_column and the readers rely on it).
AUX_EVENT_BASE = 32
AUX_EVENT_IDS: dict[str, int] = {"signal_deliver": AUX_EVENT_BASE, "xcomp_perm": AUX_EVENT_BASE + 1}
EVENT_NAMES: dict[int, str] = {v: k for k, v in (FPU_EVENT_IDS | AUX_EVENT_IDS).items()}

# The two switch-path events: without them there is nothing to record.
REQUIRED_FPU_EVENTS = ("regs_deactivated", "regs_activated")

# Bit positions TIF_NEED_FPU_LOAD has had: 14 (x86 TIF bits, 5.2 - 6.1x) and 19 (generic TIF
# bits; observed on 6.18, read in 7.2).  The BPF program keeps both and a short calibration
# at start-up tells which one this kernel uses (kernel-fpu.md §2.4 item 5).
TIF_CANDIDATE_BITS = (14, 19)
#: The classic tracepoint that finds which of them is TIF_NEED_FPU_LOAD (the first run on a
#: kernel build); the FPU probes on the same event are tp_btf or raw tracepoints.
CALIBRATION_TP = "x86_fpu:x86_fpu_regs_activated"
# load_bits value of events whose load_fpu is deliberately not read (regs_deactivated).
LOAD_NOT_READ = 0x8000
# -D macros named KFUNC_<NAME> hold a kfunc's BTF id, which the BPF C calls like a helper
# number; the loader turns those calls into kfunc calls.  Helper numbers stay far below
# KFUNC_MIN_ID (~210 on 6.18), so no helper call can be mistaken for one.
KFUNC_PREFIX = "KFUNC_"
KFUNC_MIN_ID = 1024
# The tp_btf build's switch-path task read through its fpu (task_from_fpu_macros): left out
# of a rebuild when the kernel refuses it.
TASK_FROM_FPU_MACROS = ("TASK_FROM_FPU", f"{KFUNC_PREFIX}BPF_RDONLY_CAST", "TASK_STRUCT_BTF_ID")
# Per-CPU direct-mapped cache in front of the shared counts map (a power of two, >= 8):
# groups of 8 slots, one group per task (and XSTATE_BV), one slot per kind of key in it.
CACHE_SLOTS = 256
# --events: events per ring record, gathered per CPU (a power of two; 64 measured no
# better).  collectors/ring.py decodes the records with it.
EVENT_BATCH = 32

# Map capacities (entries), derived from the machine's pid space (map_sizes).  The tasks
# map is keyed by pid, so it never holds more than pid_max entries (an exited task's entry
# is replaced when its pid is reused, and removed once drained, collectors/recorder.py);
# counts holds a few keys per task (event x XSTATE_BV x load_fpu) and the VSOs one or two
# per task, for live tasks and those exited within the last two intervals.
KEYS_PER_TASK = 4
VSOS_PER_TASK = 2
MIN_TASKS = 32768  # the default pid_max of a small machine
MAX_TASKS_CAP = 131072  # preallocated: ~30 MB of kernel memory for all maps at the cap


# record --cgroup: how many cgroups one run may name, and how deep below the root the kernel
# side looks for one of them among a task's ancestors (a systemd container's cgroup is ~4
# levels down; Kubernetes pods' ~6).
MAX_CGROUP_TARGETS = 64
CGROUP_MAX_DEPTH = 16


def map_sizes(pid_max: int) -> dict[str, int]:
    """Map capacities for a kernel whose pids go up to ``pid_max`` (docs/overhead.md)."""
    tasks = min(max(pid_max, MIN_TASKS), MAX_TASKS_CAP)
    return {
        "MAX_COUNTS": KEYS_PER_TASK * tasks,
        "MAX_VSOS": VSOS_PER_TASK * tasks,
        "MAX_TASKS": tasks,
        "MAX_TARGETS": tasks,
    }


# Kernel-side event-loss counters (index in the per-CPU ``drops`` array); the BPF C has
# each index as DROP_<NAME> (without "_map": DROP_COUNTS_FULL), from shared_macros().
DROP_COUNTERS = (
    "counts_map_full",
    "vso_map_full",
    "task_map_full",
    "aux_map_full",
    "target_map_full",
    "lost_events",
    "ring_full",
    "stack_lost",
)


# Why a switch-path save happened (counts.reason): the task blocked (its state was not
# TASK_RUNNING when it left the CPU) or was preempted; REASON_NONE for every other event.
REASONS = {"REASON_NONE": 0, "REASON_VOLUNTARY": 1, "REASON_INVOLUNTARY": 2}
REASON_NAMES = {1: "voluntary", 2: "involuntary"}

# record --stacks: which saves get a stack (state beyond SSE live: AVX, AVX-512, AMX, APX),
# and the maps' sizes (distinct stacks; distinct (task, XSTATE_BV, reason, stacks) keys).
STACK_LIVE_MASK = (1 << 2) | AVX512_MASK | AMX_MASK | (1 << 19)
STACK_ENTRIES = 16384
STACK_HINT_SLOTS = 1024  # per CPU: which tasks' last save had wide state live
STACK_SKIP = 8  # a candidate's switches per clock read (the rate limit's)
STACK_KEYS = 65536

# arch_prctl's xstate-permission options (asm/prctl.h).  Only the REQ ones' second argument
# (an xfeature number) is recorded: the GET ones pass a user-space pointer, which must not
# reach a shareable file.
ARCH_PRCTL_XCOMP = {
    "ARCH_GET_XCOMP_SUPP": 0x1021,
    "ARCH_GET_XCOMP_PERM": 0x1022,
    "ARCH_REQ_XCOMP_PERM": 0x1023,
    "ARCH_GET_XCOMP_GUEST_PERM": 0x1024,
    "ARCH_REQ_XCOMP_GUEST_PERM": 0x1025,
}
XCOMP_REQUEST_OPTIONS = (
    ARCH_PRCTL_XCOMP["ARCH_REQ_XCOMP_PERM"],
    ARCH_PRCTL_XCOMP["ARCH_REQ_XCOMP_GUEST_PERM"],
)


def shared_macros() -> dict[str, int]:
    """The numbers the BPF C and Python share, defined here once and passed as -D flags."""
    macros = {
        "LOAD_NOT_READ": LOAD_NOT_READ,
        "CACHE_SLOTS": CACHE_SLOTS,
        "EVENT_BATCH": EVENT_BATCH,
        "DROP_COUNTERS_N": len(DROP_COUNTERS),
        "MAX_CGROUP_TARGETS": MAX_CGROUP_TARGETS,
        "CGROUP_MAX_DEPTH": CGROUP_MAX_DEPTH,
        **REASONS,
        **ARCH_PRCTL_XCOMP,
    }
    for i, name in enumerate(DROP_COUNTERS):
        macros["DROP_" + name.replace("_map", "").upper()] = i
    return macros


@dataclass(frozen=True)
class ProbeDecision:
    """One probe: what it is, whether the run needs it, and whether it will be attached."""

    name: str  # "group:event"
    kind: str  # "raw_tracepoint" | "tracepoint"
    required: bool
    attach: bool
    reason: str = ""  # why skipped, or what it is for
    fn_name: str = ""  # BPF function to attach (raw tracepoints)
    btf_id: int = 0  # BTF typedef btf_trace_<event>: attachable as tp_btf (direct loads), 0: not


@dataclass
class ProbePlan:
    """Everything needed to build, attach and later describe the probes."""

    probes: list[ProbeDecision] = field(default_factory=list)
    macros: dict[str, int] = field(default_factory=dict)
    fatal: list[str] = field(default_factory=list)  # reasons the run cannot start
    notes: list[str] = field(default_factory=list)
    self_tgid: int = 0  # never traced: written into the self_tgid map after loading
    calibrate: bool = False  # attach the TIF_NEED_FPU_LOAD calibration tracepoint
    calibration_held: bool = False  # ... and detach it with the FPU probes, not once done
    tif_bit: int | None = None  # TIF_NEED_FPU_LOAD's bit, where an earlier run calibrated it

    @property
    def ok(self) -> bool:
        return not self.fatal

    def attached(self) -> list[ProbeDecision]:
        return [p for p in self.probes if p.attach]

    def skipped(self) -> list[ProbeDecision]:
        return [p for p in self.probes if not p.attach]

    def cflags(self, without: Iterable[str] = ()) -> list[str]:
        """The -D flags; ``without``: macros left out (a build the kernel refused)."""
        drop = set(without)
        return [f"-D{k}={v}" for k, v in sorted(self.macros.items()) if k not in drop]


@dataclass(frozen=True)
class PlanOptions:
    """What the run asks for, and the one host fact the BPF clock needs."""

    filter_targets: bool  # -p / -- CMD: only some process trees
    self_tgid: int = 0
    calibrated_tif_bit: int | None = None  # known from an earlier run on this kernel build
    load_on_switch: bool = False  # --load-fpu: read load_fpu on the switch-path events too
    events_pages: int = 0  # --events: ring buffer size in pages (a power of 2), 0 = off
    arch_prctl: bool = True  # attach the (system-wide costly) syscall tracepoint
    raw_tp: bool = False  # FPTRACE_RAW_TP=1: plain raw tracepoints even where tp_btf works
    pid_max: int = MIN_TASKS  # /proc/sys/kernel/pid_max: sizes the maps
    filter_cgroups: bool = False  # --cgroup: only tasks in some cgroups (v2) or below
    stacks_per_s: int = 0  # --stacks=RATE: stacks per second per key and CPU; 0 = off
    reason: bool = True  # read why each switch-path save happens (counts.reason)
    #: A command is traced: the calibration tracepoint stays until the FPU probes go, after
    #: the command.  Detaching re-patches every call site of the tracepoint (static calls,
    #: int3-based text poking) while the workload runs through them; in the 7.2 guest under
    #: qemu TCG (2 vCPUs) that detach twice ended in "Oops: int3" at switch_fpu_return.
    hold_calibration: bool = False


def _member_off(btf: StructInfo, struct: str, member: str) -> int | None:
    members = btf.members(struct)
    if members is None or member not in members:
        return None
    return members[member].offset


def layout_macros(btf: StructInfo) -> tuple[dict[str, int], list[str], list[str]]:
    """BTF-derived offsets as macros, plus fatal problems and notes."""
    macros: dict[str, int] = {}
    fatal: list[str] = []
    notes: list[str] = []
    fpu = btf.members("fpu")
    if fpu is None:
        return macros, ["BTF has no 'struct fpu' (not an x86 kernel?)"], notes
    if "fpstate" in fpu:  # 5.16+: fpu->fpstate points at the active buffer
        macros["HAVE_FPSTATE"] = 1
        macros["FPU_FPSTATE_OFF"] = fpu["fpstate"].offset
        fps = btf.members("fpstate") or {}
        for name in ("size", "user_size", "xfeatures", "user_xfeatures", "xfd", "regs"):
            if name not in fps:
                fatal.append(f"BTF 'struct fpstate' lacks member '{name}'")
                continue
            macros[f"FPSTATE_{name.upper()}_OFF"] = fps[name].offset
        for flag in ("is_valloc", "is_guest"):
            if flag in fps:
                macros[f"FPSTATE_{flag.upper()}_BIT"] = fps[flag].bit_offset
    elif "state" in fpu:  # up to 5.15: the buffer is embedded in struct fpu
        macros["FPU_STATE_OFF"] = fpu["state"].offset
        notes.append("kernel before 5.16: VSO is fpu->state; size comes from xcomp_bv and CPUID")
    else:
        fatal.append("BTF 'struct fpu' has neither 'fpstate' nor 'state'")

    task_size = btf.struct_size("task_struct")
    task = btf.members("task_struct") or {}
    thread_fpu = _member_off(btf, "thread_struct", "fpu")
    if thread_fpu is not None and "thread" in task:  # up to 6.15: task->thread.fpu
        macros["TASK_FPU_OFF"] = task["thread"].offset + thread_fpu
    elif task_size:  # 6.16+: struct fpu follows task_struct (x86_task_fpu)
        macros["TASK_FPU_OFF"] = task_size
        notes.append("struct fpu follows task_struct (6.16+ layout)")
    else:
        fatal.append("cannot locate struct fpu relative to task_struct in BTF")
    for name in ("pid", "tgid", "nvcsw", "nivcsw"):
        if name in task:
            macros[f"TASK_{name.upper()}_OFF"] = task[name].offset
        else:
            fatal.append(f"BTF 'struct task_struct' lacks member '{name}'")
    if "start_time" in task:  # the task's identity with its pid (pids are reused)
        macros["TASK_START_OFF"] = task["start_time"].offset
    runtime = _member_off(btf, "sched_entity", "sum_exec_runtime")
    if "se" in task and runtime is not None:
        macros["TASK_RUNTIME_OFF"] = task["se"].offset + runtime
    # The task's scheduling state: `__state` (5.14+, unsigned int) or `state` (a long before;
    # its low 32 bits on little-endian x86 hold every state bit).
    for name in ("__state", "state"):
        if name in task:
            macros["TASK_STATE_OFF"] = task[name].offset
            break
    else:
        notes.append("task_struct has no __state: saves are not split by reason")
    ti_flags = _member_off(btf, "thread_info", "flags")
    if "thread_info" in task and ti_flags is not None:
        macros["TASK_TIF_OFF"] = task["thread_info"].offset + ti_flags
    else:
        notes.append("thread_info is not in task_struct: load_fpu is not recorded")
    return macros, fatal, notes


def cgroup_events(group: Mapping[str, set[str]], btf: StructInfo | None) -> Mapping[str, set[str]]:
    """The cgroup tracepoints the probes can use: ``cgroup_attach_task`` only where its
    ``dst_id`` is the id ``bpf_get_current_cgroup_id()`` gives.  Since 5.5 both are the
    cgroup directory's kernfs id; before, ``dst_id`` was ``struct cgroup``'s own ``id``
    member (gone in 5.5), another number.  Without BTF that cannot be told: not used."""
    fields = group.get("cgroup_attach_task")
    if fields is None or not {"dst_root", "dst_id", "pid"} <= set(fields):
        return {}
    cgrp = btf.members("cgroup") if btf is not None else None
    if cgrp is None or "id" in cgrp:
        return {}
    return {"cgroup_attach_task": set(fields)}


def task_from_fpu_macros(macros: Mapping[str, int], btf: StructInfo | None) -> dict[str, int]:
    """Macros for reading the switch-path task through its fpu, with no helper call.

    The tp_btf build types the task as ``bpf_rdonly_cast(fpu - TASK_FPU_OFF, <task_struct>)``
    (a kfunc, 6.2+, that the verifier turns into a register move); clang emits the kfunc as
    a call to its BTF id, which the loader marks as a kfunc call (KFUNC_PREFIX macros,
    collectors/bpf_object.relocations).  Empty where BTF lacks the kfunc or the layout.
    """
    if btf is None or "TASK_FPU_OFF" not in macros:
        return {}
    cast = btf.func_id("bpf_rdonly_cast")
    task = btf.struct_id("task_struct")
    if not cast or not task or cast < KFUNC_MIN_ID:
        return {}
    return {"TASK_FROM_FPU": 1, f"{KFUNC_PREFIX}BPF_RDONLY_CAST": cast, "TASK_STRUCT_BTF_ID": task}


def plan_probes(env: KernelEnv, opts: PlanOptions) -> ProbePlan:
    """Decide the probe set for ``env``; never raises, problems go into ``plan.fatal``."""
    plan = ProbePlan()
    fpu_events = env.events("x86_fpu")
    if fpu_events is None:
        plan.fatal.append("tracefs cannot be read: the x86_fpu tracepoints cannot be listed")
        return plan
    btf = env.btf
    if btf is None:
        plan.fatal.append(f"no kernel BTF ({env.btf_error or 'missing'})")
    else:
        macros, fatal, notes = layout_macros(btf)
        plan.macros.update(macros)
        plan.fatal.extend(fatal)
        plan.notes.extend(notes)

    # Every x86_fpu event the kernel has: raw tracepoints (cheaper than classic ones).
    present = {name.removeprefix("x86_fpu_"): fields for name, fields in fpu_events.items()}
    for short in REQUIRED_FPU_EVENTS:
        if short not in present:
            plan.fatal.append(f"tracepoint x86_fpu:x86_fpu_{short} is missing")
    for short, fields in sorted(present.items(), key=lambda kv: FPU_EVENT_IDS.get(kv[0], 99)):
        name = f"x86_fpu:x86_fpu_{short}"
        if short not in FPU_EVENT_IDS:
            plan.probes.append(
                ProbeDecision(name, "raw_tracepoint", False, False, "event unknown to fptrace")
            )
            continue
        if "fpu" not in fields:
            plan.probes.append(
                ProbeDecision(name, "raw_tracepoint", False, False, "event has no 'fpu' field")
            )
            continue
        plan.macros[f"EV_{short.upper()}"] = FPU_EVENT_IDS[short]
        plan.probes.append(
            ProbeDecision(
                name,
                "raw_tracepoint",
                short in REQUIRED_FPU_EVENTS,
                True,
                fn_name=f"fpu__x86_fpu_{short}",
                btf_id=(btf.typedef_id(f"btf_trace_x86_fpu_{short}") or 0) if btf else 0,
            )
        )
    for short in sorted(set(FPU_EVENT_IDS) - set(present), key=FPU_EVENT_IDS.__getitem__):
        if short in ("copy_src", "before_restore", "after_restore", "init_state"):
            reason = "not in this kernel (removed in 6.16)"
        elif short in ("activate_state", "deactivate_state"):
            reason = "not in this kernel (pre-5.2 only)"
        else:
            reason = "not in this kernel"
        plan.probes.append(
            ProbeDecision(
                f"x86_fpu:x86_fpu_{short}",
                "raw_tracepoint",
                short in REQUIRED_FPU_EVENTS,
                False,
                reason,
            )
        )

    # load_fpu calibration: which TIF bit is TIF_NEED_FPU_LOAD on this kernel.
    act = present.get("regs_activated", set())
    if "TASK_TIF_OFF" in plan.macros and "load_fpu" in act:
        # Compiled in whether or not this run calibrates, so that the first run on a kernel
        # and the later ones share one compiled program (collectors/bpf_object.py).
        plan.macros["CALIBRATE_TIF"] = 1
    if "TASK_TIF_OFF" in plan.macros and opts.calibrated_tif_bit in TIF_CANDIDATE_BITS:
        plan.tif_bit = opts.calibrated_tif_bit
        plan.notes.append(
            f"TIF_NEED_FPU_LOAD is bit {opts.calibrated_tif_bit} (calibrated by an earlier run)"
        )
    elif "CALIBRATE_TIF" in plan.macros:
        plan.calibrate = True
        plan.calibration_held = opts.hold_calibration
        plan.probes.append(
            ProbeDecision(
                CALIBRATION_TP,
                "tracepoint",
                False,
                True,
                "calibrates the TIF_NEED_FPU_LOAD bit; detached once done",
            )
        )
    else:
        why = "kernel field is 'initialized' (pre-5.2)" if "initialized" in act else "no field"
        plan.probes.append(
            ProbeDecision(
                CALIBRATION_TP,
                "tracepoint",
                False,
                False,
                f"load_fpu calibration skipped: {why}",
            )
        )
        plan.notes.append("load_fpu is not recorded on this kernel")

    # Scheduler, signal and syscall events: rare, so classic tracepoints are fine.
    sched = env.events("sched") or {}
    signal = env.events("signal") or {}
    syscalls = env.events("syscalls") or {}
    cgroup_all = env.events("cgroup") or {}
    cgroup = cgroup_events(cgroup_all, btf)
    others = [
        (
            "sched:sched_process_fork",
            sched,
            "PROBE_FORK",
            opts.filter_targets,
            "follows descendants; records parents",
        ),
        ("sched:sched_process_exec", sched, "PROBE_EXEC", False, "task names after exec"),
        ("sched:sched_process_exit", sched, "PROBE_EXIT", False, "final switches and on-CPU time"),
        (
            "sched:sched_process_free",
            sched,
            "PROBE_FREE",
            False,
            "exited tasks leave the maps a drain sooner",
        ),
        (
            "cgroup:cgroup_attach_task",
            cgroup,
            "PROBE_CGROUP_ATTACH",
            False,
            "a task's cgroup when it is moved (how containers start)",
        ),
        ("signal:signal_deliver", signal, "PROBE_SIGNAL", False, "signal frames (XSAVE to stack)"),
        (
            "syscalls:sys_enter_arch_prctl",
            syscalls,
            "PROBE_ARCH_PRCTL",
            False,
            "xstate permission requests",
        ),
    ]
    for name, group, macro, required, what in others:
        event = name.split(":", 1)[1]
        if macro == "PROBE_ARCH_PRCTL" and not opts.arch_prctl and event in group:
            plan.probes.append(
                ProbeDecision(
                    name,
                    "tracepoint",
                    False,
                    False,
                    "off: a syscall tracepoint slows every syscall of every task "
                    "(~1% of a pipe ping-pong); enable with --arch-prctl",
                )
            )
            continue
        if event in group:
            plan.macros[macro] = 1
            plan.probes.append(ProbeDecision(name, "tracepoint", required, True, what))
        else:
            reason = "not in this kernel"
            if name.startswith("syscalls:"):
                reason += " (needs CONFIG_FTRACE_SYSCALLS)"
            elif group is cgroup and event in cgroup_all:
                reason = "its dst_id is not the BPF cgroup id (before 5.5, or no BTF to tell)"
            plan.probes.append(ProbeDecision(name, "tracepoint", required, False, reason))
            if required:
                plan.fatal.append(f"tracepoint {name} is missing ({what})")

    if opts.filter_targets:
        plan.macros["FILTER_TARGETS"] = 1
    elif opts.filter_cgroups:
        plan.macros["FILTER_CGROUPS"] = 1
    if opts.load_on_switch:
        plan.macros["LOAD_ON_SWITCH"] = 1
    if not opts.reason and plan.macros.pop("TASK_STATE_OFF", None) is not None:
        plan.notes.append("saves are not split by reason (a helper call per save saved)")
    if opts.stacks_per_s and "sched_switch" in sched:
        # A program on every context switch, only with --stacks (raw, or tp_btf with the
        # FPU probes): it takes the stacks while the task's address space is still there.
        plan.macros["PROBE_STACK_SWITCH"] = 1
        plan.probes.append(
            ProbeDecision(
                "sched:sched_switch",
                "raw_tracepoint",
                False,
                True,
                "--stacks: user and kernel stacks, before the address space is switched",
                fn_name="fpu__sched_switch",
                btf_id=(btf.typedef_id("btf_trace_sched_switch") or 0) if btf else 0,
            )
        )
    elif opts.stacks_per_s:
        plan.notes.append("no sched:sched_switch tracepoint: --stacks takes no stacks")
    if opts.stacks_per_s:
        plan.macros["STACKS"] = 1
        plan.macros["STACK_HINT_SLOTS"] = STACK_HINT_SLOTS
        plan.macros["STACK_SKIP"] = STACK_SKIP
        plan.macros["STACK_PERIOD_NS"] = 10**9 // opts.stacks_per_s
        plan.macros["STACK_LIVE_MASK"] = STACK_LIVE_MASK
        plan.macros["STACK_ENTRIES"] = STACK_ENTRIES
        plan.macros["STACK_KEYS"] = STACK_KEYS
    plan.macros.update(shared_macros())
    if opts.events_pages:
        plan.macros["EVENTS"] = 1
        plan.macros["EVENT_PAGES"] = opts.events_pages
    fpu_probes = [p for p in plan.attached() if p.kind == "raw_tracepoint"]
    if fpu_probes and all(p.btf_id for p in fpu_probes) and not opts.raw_tp:
        plan.macros["FPU_DIRECT"] = 1  # compile the tp_btf variant (direct loads)
        tif = "TASK_TIF_OFF" in plan.macros
        if tif and btf is not None and btf.has_func("bpf_get_current_task_btf"):  # 5.11+
            plan.macros["CURRENT_TASK_BTF"] = 1
        plan.macros.update(task_from_fpu_macros(plan.macros, btf))
    plan.self_tgid = opts.self_tgid
    for i, bit in enumerate(TIF_CANDIDATE_BITS):
        plan.macros[f"TIF_BIT_{i}"] = bit
    for name, ident in AUX_EVENT_IDS.items():
        plan.macros[f"AUX_{name.upper()}"] = ident
    plan.macros.update(map_sizes(opts.pid_max))
    return plan
