"""Kernel-matrix lane: `fptrace lab` boots real Debian kernels in qemu and records inside them.

The first run fetches the kernels (through the lab's private apt configuration) into the lab
cache; later runs reuse it.  Needs qemu and the Debian mirror; a machine without them skips
with the reason, and in CI (FPTRACE_NO_SKIP=1) that is a failure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fptrace.recording.loader import Recording, load_recording
from fptrace.workloads.build import workload_binary
from tests import hardware
from tests.conftest import skip_or_fail

#: The lane's kernels: label -> spec.  5.10: pre-fpstate layout (fpu->state); 6.1, 6.12:
#: fpstate with 11 events; 7.x: the 7-event set, struct fpu after task_struct.
KERNELS = {"5.10": "debian:5.10", "6.1": "debian:6.1", "6.12": "debian:6.12", "7": "debian:7"}
ROUNDS = 2000
LAB_TIMEOUT = 1500


@dataclass
class LabRun:
    out: Path
    proc: subprocess.CompletedProcess[str]
    seconds: float

    @property
    def summary(self) -> dict:
        return json.loads((self.out / "lab.json").read_text())

    def combo(self, prefix: str, append: str = "") -> dict:
        """The combination whose release starts with ``prefix.`` (and has these options)."""
        for c in self.summary["combinations"]:
            release = c["release"] or c["name"]
            if re.match(re.escape(prefix) + r"[.+-]", release) and c["append"] == append:
                return c
        raise AssertionError(f"no combination {prefix} {append!r} in {self.summary}")

    def recording(self, prefix: str, append: str = "") -> Recording:
        c = self.combo(prefix, append)
        assert c["status"] == "ok", c
        return load_recording(Path(c["recording"]))

    def workload(self, prefix: str, append: str = "") -> dict:
        """The pingpong's own JSON line, from the guest's console."""
        console = Path(self.combo(prefix, append)["console"]).read_text(errors="replace")
        lines = [ln for ln in console.splitlines() if ln.startswith('{"mode"')]
        assert lines, console[-2000:]
        return json.loads(lines[-1])

    def guest_cpu(self, prefix: str, append: str = "") -> hardware.Cpu:
        """The guest's CPUID and XCR0, as the tests' own probe printed them on its console."""
        console = Path(self.combo(prefix, append)["console"]).read_text(errors="replace")
        lines = [ln for ln in console.splitlines() if ln.startswith('{"ecx1"')]
        assert lines, console[-2000:]
        return hardware.parse_probe(lines[-1])


def lab(*args: str, timeout: float = LAB_TIMEOUT, env: dict | None = None):
    return fptrace_cli("lab", *args, timeout=timeout, env=env)


def fptrace_cli(*args: str, timeout: float = 300, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "fptrace", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


@pytest.fixture(scope="session", autouse=True)
def have_qemu() -> None:
    if shutil.which("qemu-system-x86_64") is None:
        skip_or_fail("qemu-system-x86_64 is not installed (apt install qemu-system-x86)")
    if shutil.which("busybox") is None:
        skip_or_fail("busybox is not installed (apt install busybox-static)")


def _run_lab(out: Path, *args: str) -> LabRun:
    t0 = time.monotonic()
    proc = lab("record", "-o", str(out), *args)
    run = LabRun(out, proc, time.monotonic() - t0)
    if not (out / "lab.json").exists():
        if "mirror" in proc.stderr:
            skip_or_fail(f"the Debian mirror is not reachable: {proc.stderr.strip()[-300:]}")
        pytest.fail(f"fptrace lab record wrote no lab.json: {proc.stderr[-2000:]}")
    sys.stderr.write(f"\n[lab {out.name}: {run.seconds:.0f} s]\n")
    return run


@pytest.fixture(scope="session")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """The known-answer pingpong (AVX live) under fptrace record in each of the four kernels.

    The tests' own CPUID probe runs first in each guest (its line on the console), so the
    expected sizes come from the guest CPU, not from what fptrace wrote in its manifest.
    """
    pingpong = workload_binary("pingpong")  # a host binary, run at its host path in the guest
    probe = hardware.build_probe(tmp_path_factory.mktemp("probe"))  # /tmp: seen by the guest
    kernels = [a for spec in KERNELS.values() for a in ("--kernel", spec)]
    out = tmp_path_factory.mktemp("lab") / "matrix"
    script = f"{probe} && exec {pingpong} --mode avx --rounds {ROUNDS} --cpu 0"
    return _run_lab(out, *kernels, "--", "sh", "-c", script)


@pytest.fixture(scope="session")
def noxsave(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """Debian 6.1 booted twice, default and `noxsave`, running the same SSE workload."""
    out = tmp_path_factory.mktemp("lab") / "noxsave"
    cmd = ["fptrace", "workload", "pingpong", "--mode", "sse", "--rounds", str(ROUNDS)]
    return _run_lab(out, "--kernel", KERNELS["6.1"], "--append", "noxsave", "--", *cmd)


@pytest.fixture(scope="session")
def ftrace_guest(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """The known answer on 5.10 with the ftrace backend: no BCC, sizes from the boot facts."""
    out = tmp_path_factory.mktemp("lab") / "ftrace"
    cmd = [str(workload_binary("pingpong")), "--mode", "avx", "--rounds", str(ROUNDS)]
    return _run_lab(
        out, "--kernel", KERNELS["5.10"], "--record", "--backend ftrace", "--", *cmd, "--cpu", "0"
    )


@pytest.fixture(scope="session")
def debootstrap_guest(tmp_path_factory: pytest.TempPathFactory) -> LabRun:
    """The fallback root: Debian bookworm from debootstrap, host paths bound in for the job."""
    out = tmp_path_factory.mktemp("lab") / "debootstrap"
    cmd = [str(workload_binary("pingpong")), "--mode", "avx", "--rounds", str(ROUNDS)]
    return _run_lab(out, "--kernel", KERNELS["6.1"], "--root", "debootstrap", "--", *cmd)
