"""Known answer inside real kernels: the host's invariants hold on 5.10, 6.1, 6.12 and 7.x.

Each guest ran `fptrace record -- pingpong --mode avx --rounds N --cpu 0` (two processes, one
CPU, a pipe round trip per round: deterministic on CFS and EEVDF alike, unlike sched_yield).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fptrace.analysis import summary
from fptrace.lab.kernels import lab_dir
from tests import known_answer
from tests.kernels.conftest import KERNELS, ROUNDS, LabRun

AVX = 1 << 2
#: x86_fpu events per kernel (kernel-lab.md): 11 up to 6.x, 7 from 6.18/7.x.
EVENTS = {"5.10": 11, "6.1": 11, "6.12": 11, "7": 7}
#: The first run on a kernel build finds TIF_NEED_FPU_LOAD's bit with this classic tracepoint.
CALIBRATION_PROBE = ("x86_fpu:x86_fpu_regs_activated", "tracepoint")


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_guest_booted_the_kernel_asked_for(matrix: LabRun, kernel: str) -> None:
    c = matrix.combo(kernel)
    assert c["status"] == "ok", c
    m = matrix.recording(kernel).manifest
    assert m.host.kernel.release == c["release"]
    assert m.host.kernel.release.startswith(kernel + ".")
    assert m.lab.kernel_spec == KERNELS[kernel] and m.lab.combination == c["name"]
    assert m.host.kernel_config["source"].endswith("/config")  # the guest's own config
    assert m.backend == "bcc" and sum(m.drops.values()) == 0
    jobdir = matrix.out / ".lab" / c["name"]
    assert json.loads((jobdir / "result.json").read_text())["debootstrap_root"] is False


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_pingpong_known_answer(matrix: LabRun, kernel: str) -> None:
    rec = matrix.recording(kernel)
    work = matrix.workload(kernel)
    assert work["live"] and work["rounds"] == ROUNDS, work
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    for who, pid in known_answer.sides(work):
        t = tasks.loc[pid]
        # The parent exec'd under the tracer: in a guest its binary and libraries come over
        # 9p under TCG, and each blocking page-in is one more switch, so one more save
        # (+14..+20 seen): counted by the workload's getrusage, as are preemptions.
        known_answer.check(work, who, int(t.saves), int(t.restores))
        s = rec.counts[(rec.counts["pid"] == pid) & (rec.counts["event"] == "regs_deactivated")]
        total = int(s["count"].sum())
        with_avx = int(s[s["xfeatures"].astype("int64") & AVX != 0]["count"].sum())
        assert with_avx >= total - 3, (kernel, pid, with_avx, total)  # XSTATE_BV has AVX


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_vso_size_is_the_guests_cpuid_size(matrix: LabRun, kernel: str) -> None:
    """TCG's CPU: standard format, so every buffer spans every enabled user component.

    Expected from the guest's own CPUID leaf 0xD and XCR0 (the tests' probe), and CPUID(0xD,0)
    .EBX says the same; the manifest's figures must agree with both.
    """
    rec = matrix.recording(kernel)
    guest = matrix.guest_cpu(kernel)
    expect = guest.standard_size(guest.xcr0)
    assert expect == guest.leaf_d[0][1]  # EBX: the standard size for the current XCR0
    xs = rec.manifest.host.xstate
    assert xs["source"] == "cpuid" and xs["format"] == "standard", xs
    work = matrix.workload(kernel)
    for pid in (work["parent_pid"], work["child_pid"]):
        v = rec.vso[rec.vso["pid"] == pid].iloc[0]
        assert int(v["size"]) == expect, v
        assert xs["standard_size_enabled"] == xs["kernel_context_size"] == expect, xs
        assert int(v["xcomp_bv"]) == 0  # no XSAVEC under TCG


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_probes_and_layout_branch(matrix: LabRun, kernel: str) -> None:
    probes = matrix.recording(kernel).manifest.probes
    fpu = {p.name for p in probes.attached if p.name.startswith("x86_fpu:")}
    assert len(fpu) == EVENTS[kernel], sorted(fpu)
    assert "x86_fpu:x86_fpu_regs_deactivated" in fpu
    for p in probes.skipped:  # skipped only where the kernel lacks the probe, with why
        assert p.reason and not p.required, p
    notes = " ".join(probes.notes)
    assert ("VSO is fpu->state" in notes) == (kernel == "5.10"), notes
    assert ("struct fpu follows task_struct" in notes) == (kernel == "7"), notes
    # Every one of these kernels has BTF for its tracepoints and takes the typed tp_btf
    # programs (direct loads); a raw_tracepoint here would mean the fast path was refused.
    # The one classic tracepoint allowed is the TIF_NEED_FPU_LOAD calibration, attached by
    # the first run on a kernel build (a fresh machine's cache), detached after the command.
    kinds = {
        p.kind
        for p in probes.attached
        if p.name.startswith("x86_fpu:") and (p.name, p.kind) != CALIBRATION_PROBE
    }
    assert kinds == {"tp_btf"}, (kernel, probes.attached)
    assert not any("tp_btf" in n and "refused" in n for n in probes.notes), notes


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_load_fpu_bit_is_the_kernels_own(matrix: LabRun, kernel: str) -> None:
    """TIF_NEED_FPU_LOAD, calibrated in the guest or by an earlier run: the kernel's header.

    Expected from the Debian headers package the lab fetched for BCC (thread_info.h): 14 up
    to 6.x, 19 on 7.x (x86's own TIF bits moved up).
    """
    rec = matrix.recording(kernel)
    release = matrix.combo(kernel)["release"]
    headers = lab_dir() / "kernels" / release / "usr/src"
    [thread_info] = headers.glob("linux-headers-*-common/arch/x86/include/asm/thread_info.h")
    [bit] = re.findall(r"^#define TIF_NEED_FPU_LOAD\s+(\d+)", thread_info.read_text(), re.M)
    assert rec.manifest.load_fpu is not None
    assert rec.manifest.load_fpu.tif_bit == int(bit), rec.manifest.load_fpu
    calibrated = CALIBRATION_PROBE in {(p.name, p.kind) for p in rec.manifest.probes.attached}
    noted = any("calibrated by an earlier run" in n for n in rec.manifest.probes.notes)
    assert calibrated != noted, rec.manifest.probes  # one or the other, never both


def kernel_config(path: Path) -> dict[str, str]:
    """A kernel's .config as the Debian package ships it: CONFIG_X -> value ("n" if unset)."""
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            out[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = "n"
    return out


def test_compare_across_two_real_kernels(matrix: LabRun) -> None:
    """`fptrace compare` of the 6.1 and 6.12 guests' recordings: what really differs.

    Expected from the kernels themselves: their releases (from the lab's result) and the
    difference of the two Debian packages' config files.
    """
    from fptrace.lab.kernels import list_cached
    from tests.kernels.conftest import fptrace_cli

    old, new = matrix.combo("6.1"), matrix.combo("6.12")
    proc = fptrace_cli("compare", old["recording"], new["recording"], "-f", "json")
    assert proc.returncode == 0, proc.stderr
    [comp] = json.loads(proc.stdout)
    changes = {(c["category"], c["key"]): c for c in comp["changes"]}
    release = changes[("kernel", "release")]
    assert (release["a"], release["b"]) == (old["release"], new["release"])
    packaged = [k for k in list_cached() if (k.path / "config").is_file()]  # Debian's own
    configs = {k.release: kernel_config(k.path / "config") for k in packaged}
    a, b = configs[old["release"]], configs[new["release"]]
    want = {k for k in a.keys() | b.keys() if a.get(k, "n") != b.get(k, "n")}
    got = {key for (category, key) in changes if category == "config"}
    assert got == want, (sorted(got ^ want)[:20], len(got), len(want))
    # User shadow stacks (CET_U state in every fpstate) came in 6.6: an FPU-relevant change.
    shstk = changes[("config", "CONFIG_X86_USER_SHADOW_STACK")]
    assert shstk["fpu_relevant"] and shstk["b"] == "y", shstk
    # Same TCG CPU on both: the xstate layout does not differ.
    assert not any(category == "xstate" for category, _ in changes), sorted(changes)[:5]


def test_lane_time_and_summary(matrix: LabRun) -> None:
    assert matrix.proc.returncode == 0, matrix.proc.stdout + matrix.proc.stderr
    combos = matrix.summary["combinations"]
    assert [c["status"] for c in combos] == ["ok"] * len(KERNELS)
    assert matrix.summary["machine"]["accel"] in ("tcg", "kvm")


def test_lab_list_shows_the_cache_and_the_suites(matrix: LabRun) -> None:
    from tests.kernels.conftest import lab

    proc = lab("list", timeout=120)
    assert proc.returncode == 0, proc.stderr
    for c in matrix.summary["combinations"]:
        assert c["release"] in proc.stdout
    assert "debian:bookworm" in proc.stdout and "debian:sid" in proc.stdout


def test_ftrace_backend_in_a_guest_agrees(ftrace_guest: LabRun, matrix: LabRun) -> None:
    rec = ftrace_guest.recording("5.10")
    assert rec.manifest.backend == "ftrace"
    work = ftrace_guest.workload("5.10")
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    bcc_vso = matrix.recording("5.10").vso
    for who, pid in known_answer.sides(work):
        t = tasks.loc[pid]
        known_answer.check(work, who, int(t.saves), int(t.restores))
        size = int(rec.vso[rec.vso["pid"] == pid].iloc[0]["size"])
        guest = matrix.guest_cpu("5.10")  # the same TCG CPU model as this guest's
        expect = guest.standard_size(guest.xcr0)
        assert size == int(bcc_vso.iloc[0]["size"]) == expect  # both backends, standard format


def test_debootstrap_root_fallback(debootstrap_guest: LabRun) -> None:
    """Only the job's paths come from the host; the rest of / is the debootstrapped Debian."""
    c = debootstrap_guest.combo("6.1")
    assert c["status"] == "ok", c
    rec = debootstrap_guest.recording("6.1")
    assert rec.manifest.lab.extra["root"] == "debootstrap"
    work = debootstrap_guest.workload("6.1")
    tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
    child = tasks.loc[work["child_pid"]]
    known_answer.check(work, "child", int(child.saves), int(child.restores))
    jobdir = debootstrap_guest.out / ".lab" / c["name"]
    assert json.loads((jobdir / "result.json").read_text())["debootstrap_root"] is True
    binds = (jobdir / "binds").read_text().split()
    assert binds and "/" not in binds and all(b.startswith("/") for b in binds)
