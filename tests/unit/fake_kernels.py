"""Fake kernels for probe planning: the tracepoints and BTF facts of real releases.

Values come from ../shared/docs/kernel-fpu.md §2 (event sets per release) and the 6.18
BTF of this machine; for older kernels the offsets are plausible stand-ins: the tests check
which *branch* the plan takes, and that offsets flow from BTF into the macros unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fptrace.probes.btf import Member

FIELDS = {"fpu", "load_fpu", "xfeatures", "xcomp_bv"}
EVENTS_11 = [
    "after_restore",
    "after_save",
    "before_restore",
    "before_save",
    "copy_dst",
    "copy_src",
    "dropped",
    "init_state",
    "regs_activated",
    "regs_deactivated",
    "xstate_check_failed",
]
EVENTS_7 = [
    "after_save",
    "before_save",
    "copy_dst",
    "dropped",
    "regs_activated",
    "regs_deactivated",
    "xstate_check_failed",
]


def m(name: str, offset: int, size: int = 8, bit: int | None = None, bf: int = 0) -> Member:
    return Member(name, offset, 0 if bf else size, offset * 8 if bit is None else bit, bf)


@dataclass
class FakeBTF:
    structs: dict[str, dict[str, Member]]
    sizes: dict[str, int]
    funcs: set[str] = field(default_factory=set)
    typedefs: dict[str, int] = field(default_factory=dict)
    ids: dict[str, int] = field(default_factory=dict)  # "func NAME" / "struct NAME" -> type id

    def has_func(self, name: str) -> bool:
        return name in self.funcs

    def func_id(self, name: str) -> int | None:
        return self.ids.get(f"func {name}") if name in self.funcs else None

    def struct_id(self, name: str) -> int | None:
        return self.ids.get(f"struct {name}") if name in self.structs else None

    def typedef_id(self, name: str) -> int | None:
        return self.typedefs.get(name)

    def struct_size(self, name: str) -> int | None:
        return self.sizes.get(name)

    def members(self, name: str) -> dict[str, Member] | None:
        return self.structs.get(name)


@dataclass
class FakeKernel:
    release: str
    groups: dict[str, dict[str, set[str]]] | None
    fake_btf: FakeBTF | None
    btf_error: str | None = None

    def events(self, group: str) -> dict[str, set[str]] | None:
        if self.groups is None:
            return None
        return self.groups.get(group, {})

    @property
    def btf(self) -> FakeBTF | None:
        return self.fake_btf


def _groups(fpu_events: list[str], field_set: set[str] = FIELDS, syscalls: bool = True):
    return {
        "x86_fpu": {f"x86_fpu_{e}": set(field_set) for e in fpu_events},
        "sched": {
            "sched_process_fork": {"parent_pid", "child_pid"},
            "sched_process_exec": {"filename", "pid", "old_pid"},
            "sched_process_exit": {"comm", "pid", "prio"},
            "sched_process_free": {"comm", "pid", "prio"},
            "sched_switch": {"prev_pid", "next_pid"},
        },
        "signal": {"signal_deliver": {"sig", "errno", "code", "sa_handler", "sa_flags"}},
        "cgroup": {
            "cgroup_attach_task": {"dst_root", "dst_id", "dst_level", "pid", "dst_path", "comm"}
        },
        "syscalls": {"sys_enter_arch_prctl": {"option", "arg2"}} if syscalls else {},
    }


FPSTATE = {
    "size": m("size", 0, 4),
    "user_size": m("user_size", 4, 4),
    "xfeatures": m("xfeatures", 8),
    "user_xfeatures": m("user_xfeatures", 16),
    "xfd": m("xfd", 24),
    "is_valloc": m("is_valloc", 32, bit=256, bf=1),
    "is_guest": m("is_guest", 32, bit=257, bf=1),
    "regs": m("regs", 64, 4096),
}
FPU_516 = {
    "last_cpu": m("last_cpu", 0, 4),
    "avx512_timestamp": m("avx512_timestamp", 8),
    "fpstate": m("fpstate", 16),
    "__task_fpstate": m("__task_fpstate", 24),
    "__fpstate": m("__fpstate", 64, 4160),
}
COMMON = {
    "thread_info": {"flags": m("flags", 0), "syscall_work": m("syscall_work", 8)},
    "sched_entity": {"sum_exec_runtime": m("sum_exec_runtime", 104)},
    # 5.5+: a cgroup's id is its kernfs node's (no "id" member of its own)
    "cgroup": {"self": m("self", 0, 200), "kn": m("kn", 264)},
}


def task(extra: dict[str, Member]) -> dict[str, Member]:
    base = {
        "thread_info": m("thread_info", 0, 24),
        "__state": m("__state", 24, 4),  # the task's scheduling state (counts.reason)
        "se": m("se", 128, 256),
        "pid": m("pid", 1264, 4),
        "tgid": m("tgid", 1268, 4),
        "nvcsw": m("nvcsw", 1536),
        "nivcsw": m("nivcsw", 1544),
    }
    return base | extra


def kernel_6_18() -> FakeKernel:
    btf = FakeBTF(
        {
            "fpu": FPU_516,
            "fpstate": FPSTATE,
            "task_struct": task({}),
            "thread_struct": {"sp": m("sp", 0)},
        }
        | COMMON,
        {"task_struct": 3264, "fpu": 4224},
        {"bpf_jiffies64"},
    )
    return FakeKernel("6.18.44", _groups(EVENTS_7), btf)


def kernel_6_x(release: str) -> FakeKernel:
    """6.1 and 6.12: struct fpu is the last member of thread_struct inside task_struct."""
    btf = FakeBTF(
        {
            "fpu": FPU_516,
            "fpstate": FPSTATE,
            "task_struct": task({"thread": m("thread", 5056, 4736)}),
            "thread_struct": {"sp": m("sp", 0), "fpu": m("fpu", 192, 4544)},
        }
        | COMMON,
        {"task_struct": 9792},
        {"bpf_jiffies64"},
    )
    return FakeKernel(release, _groups(EVENTS_11), btf)


def kernel_5_10() -> FakeKernel:
    """Before 5.16: no struct fpstate, the buffer is embedded as fpu->state."""
    btf = FakeBTF(
        {
            "fpu": {
                "last_cpu": m("last_cpu", 0, 4),
                "avx512_timestamp": m("avx512_timestamp", 8),
                "state": m("state", 64, 4096),
            },
            "task_struct": task({"thread": m("thread", 4800, 4352)}),
            "thread_struct": {"sp": m("sp", 0), "fpu": m("fpu", 192, 4160)},
        }
        | COMMON,
        {"task_struct": 9152},
        {"bpf_jiffies64"},
    )
    return FakeKernel("5.10.262", _groups(EVENTS_11), btf)


def kernel_4_19() -> FakeKernel:
    """Before 5.2: the record's field is 'initialized', not 'load_fpu'."""
    k = kernel_5_10()
    fields = {"fpu", "initialized", "xfeatures", "xcomp_bv"}
    k.groups = _groups(EVENTS_11, fields, syscalls=False)
    k.release = "4.19.325"
    assert k.fake_btf is not None
    k.fake_btf.structs["cgroup"] = {"self": m("self", 0, 200), "id": m("id", 200, 4)}
    return k


KERNELS = {
    "5.10": kernel_5_10,
    "6.1": lambda: kernel_6_x("6.1.176"),
    "6.12": lambda: kernel_6_x("6.12.117"),
    "6.18": kernel_6_18,
}
