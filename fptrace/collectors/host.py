"""Host facts for the recording's manifest: kernel, boot line, config, CPU and xstate layout.

Everything here is read once per recording and is what ``fptrace compare`` diffs between
machines and kernels (../shared/docs/kernel-fpu.md §7.3).  Each reader degrades to
``None`` with no exception: a missing fact is recorded as missing, not fatal.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import os
import platform
import re
import struct
import subprocess
from dataclasses import dataclass
from typing import Any

from fptrace.collectors.procfs import read_text
from fptrace.recording.manifest import Host, KernelId
from fptrace.recording.schema import KERNEL_CONFIG
from fptrace.xstate import Layout

AT_MINSIGSTKSZ = 51

# Kernel config options that change FPU/xstate behaviour or the save/restore rate (§7.2).
FPU_CONFIG_OPTIONS = (
    "CONFIG_X86_DEBUG_FPU",
    "CONFIG_X86_INTEL_MEMORY_PROTECTION_KEYS",
    "CONFIG_X86_USER_SHADOW_STACK",
    "CONFIG_PREEMPT_NONE",
    "CONFIG_PREEMPT_VOLUNTARY",
    "CONFIG_PREEMPT",
    "CONFIG_PREEMPT_LAZY",
    "CONFIG_PREEMPT_RT",
    "CONFIG_PREEMPT_DYNAMIC",
    "CONFIG_HZ",
    "CONFIG_NO_HZ_FULL",
    "CONFIG_KVM",
    "CONFIG_IA32_EMULATION",
    "CONFIG_X86_X32_ABI",
    "CONFIG_PROC_PID_ARCH_STATUS",
    "CONFIG_DYNAMIC_SIGFRAME",
    "CONFIG_STRICT_SIGALTSTACK_SIZE",
    "CONFIG_COREDUMP",
    "CONFIG_MATH_EMULATION",
    "CONFIG_KPROBES",
    "CONFIG_DEBUG_INFO_BTF",
    "CONFIG_BPF_EVENTS",
    "CONFIG_FTRACE_SYSCALLS",
)
# CPU flags worth keeping out of the hundreds in /proc/cpuinfo (the full list is kept too).
FPU_CPU_FLAGS = re.compile(
    r"^(fpu|fxsr|xsave\w*|xgetbv1|avx\w*|amx\w*|pku|ospke|user_shstk|apx\w*|sse\w*|ssse3|fma)$"
)


def kernel_config() -> tuple[str | None, str | None]:
    """The running kernel's config text and where it came from."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return f.read(), "/proc/config.gz"
    except OSError:
        pass
    # FPTRACE_KERNEL_CONFIG: set by `fptrace lab`, whose guests' configs are on the host disk.
    path = os.environ.get("FPTRACE_KERNEL_CONFIG") or f"/boot/config-{os.uname().release}"
    text = read_text(path)
    return (text, path) if text is not None else (None, None)


def parse_config(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value.strip('"')
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = "n"
    return out


def read_cpuid_leaf_d(cpu: int = 0) -> dict[int, tuple[int, int, int, int]] | None:
    """CPUID(0xD, 0..63) through /dev/cpu/N/cpuid (CONFIG_X86_CPUID, root)."""
    try:
        fd = os.open(f"/dev/cpu/{cpu}/cpuid", os.O_RDONLY)
    except OSError:
        return None
    try:
        out = {}
        for sub in range(64):
            data = os.pread(fd, 16, 0xD | sub << 32)
            out[sub] = struct.unpack("<IIII", data)
        return out
    except OSError:
        return None
    finally:
        os.close(fd)


_DMESG_OFFSET = re.compile(r"xstate_offset\[(\d+)\]:\s*(\d+), xstate_sizes\[\d+\]:\s*(\d+)")
_DMESG_ENABLED = re.compile(
    r"Enabled xstate features (0x[0-9a-f]+), context size is (\d+) bytes, using '(\w+)' format"
)


def dmesg_fpu_lines() -> list[str] | None:
    try:
        proc = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln) for ln in proc.stdout.splitlines()]
    return [ln for ln in lines if ln.startswith("x86/fpu:")]


def cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (the one parser of it)."""
    text = read_text("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (``avx512f``, ``xsaves``…)."""
    return set(cpuinfo_fields().get("flags", "").split())


def cpu_info() -> dict[str, Any]:
    fields = cpuinfo_fields()
    flags = fields.get("flags", "").split()
    return {
        "model_name": fields.get("model name"),
        "vendor": fields.get("vendor_id"),
        "family": fields.get("cpu family"),
        "model": fields.get("model"),
        "stepping": fields.get("stepping"),
        "microcode": fields.get("microcode"),
        "logical_cpus": os.cpu_count(),
        "fpu_flags": sorted(f for f in flags if FPU_CPU_FLAGS.match(f)),
        "flags": flags,
    }


def at_minsigstksz() -> int | None:
    try:
        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        value = int(libc.getauxval(AT_MINSIGSTKSZ))
    except (OSError, AttributeError):
        return None
    return value or None


def xstate_facts(dmesg: list[str] | None) -> tuple[dict[str, Any], Layout | None]:
    """The xstate layout: CPUID leaf 0xD when readable, else the kernel's boot lines."""
    facts: dict[str, Any] = {}
    layout: Layout | None = None
    leaf = read_cpuid_leaf_d()
    if leaf is not None:
        layout = Layout.from_cpuid(leaf)
        eax0, ebx0, ecx0, edx0 = leaf[0]
        eax1, ebx1, ecx1, edx1 = leaf[1]
        facts.update(
            source="cpuid",
            supported_user_features=eax0 | edx0 << 32,
            supported_supervisor_features=ecx1 | edx1 << 32,
            standard_size_enabled=ebx0,
            standard_size_max=ecx0,
            compacted_size_enabled=ebx1,
            xsaveopt=bool(eax1 & 1),
            xsavec=bool(eax1 & 2),
            xgetbv1=bool(eax1 & 4),
            xsaves=bool(eax1 & 8),
            xfd=bool(eax1 & 16),
        )
    for line in dmesg or []:
        if "x87 FPU will use FXSAVE" in line:  # noxsave, or a CPU without XSAVE
            facts.update(format="fxsave", enabled_features=0x3, kernel_context_size=512)
        m = _DMESG_ENABLED.search(line)
        if m:
            facts["enabled_features"] = int(m.group(1), 16)
            facts["kernel_context_size"] = int(m.group(2))
            facts["format"] = m.group(3)
    if layout is None and dmesg:
        comps: dict[int, dict[str, Any]] = {}
        for line in dmesg:
            m = _DMESG_OFFSET.search(line)
            if m:
                i, off, size = (int(g) for g in m.groups())
                comps[i] = {"index": i, "size": size, "offset": off}
        if comps:
            # Boot-line offsets are compacted ones when the format is compacted (§6.2).
            facts["source"] = "dmesg"
            layout = Layout.from_json(
                [c | {"supervisor": False, "align64": False} for c in comps.values()]
            )
    if layout is not None:
        facts["components"] = layout.to_json()
    if "format" not in facts and leaf is not None:
        facts["format"] = "compacted" if facts.get("xsavec") or facts.get("xsaves") else "standard"
    return facts, layout


@dataclass(frozen=True)
class HostFacts:
    """What :func:`collect_host` found: the manifest's ``host``, the xstate layout, and the
    kernel's full config text (for the recording's kernel-config.gz)."""

    host: Host
    layout: Layout | None
    config_text: str | None


def collect_host() -> HostFacts:
    """The host manifest section, the xstate layout and the kernel config."""
    uname = platform.uname()
    config_text, config_source = kernel_config()
    config = parse_config(config_text) if config_text else {}
    config_facts: dict[str, Any] = {"source": config_source}
    if config_text is not None:
        config_facts["sha256"] = hashlib.sha256(config_text.encode()).hexdigest()
        config_facts["fpu_options"] = {k: config.get(k, "n") for k in FPU_CONFIG_OPTIONS}
        config_facts["copy"] = KERNEL_CONFIG
    dmesg = dmesg_fpu_lines()
    xstate, layout = xstate_facts(dmesg)
    host = Host(
        hostname=uname.node,
        kernel=KernelId(release=uname.release, version=uname.version, machine=uname.machine),
        boot_cmdline=(read_text("/proc/cmdline") or "").strip() or None,
        kernel_config=config_facts,
        cpu=cpu_info(),
        xstate=xstate,
        at_minsigstksz=at_minsigstksz(),
        dmesg_fpu_lines=tuple(dmesg or ()),
    )
    return HostFacts(host, layout, config_text)
