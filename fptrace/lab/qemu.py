"""Booting one kernel in qemu: the command line, the accelerator, a timeout, the console log.

Two 9p shares: the host's root filesystem read-only (``hostroot``; the guest overlays a tmpfs
on it) and the lab output directory writable (``labout``), mounted in the guest at its host
path.  The serial console goes to a file; a guest that does not power off within the timeout
is killed and its console log is what the user gets to read.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fptrace.errors import EnvironmentProblem

QEMU = "qemu-system-x86_64"
INSTALL_HINT = "install qemu (Debian: apt install qemu-system-x86)"


@dataclass
class BootResult:
    returncode: int | None  # None: killed after the timeout
    elapsed_s: float
    console: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    @property
    def died_before_init(self) -> bool:
        """The kernel panicked before fptrace's /init ran: nothing of the job was involved.

        Under TCG this happens now and then on its own (seen: an ``int3`` Oops in 7.2 during
        boot-time code patching on two vCPUs), so the lab boots such a guest once more.
        """
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return False
        return (
            not self.timed_out
            and "fptrace-lab: initramfs up" not in text
            and "Kernel panic" in text
        )

    def console_summary(self, lines: int = 6) -> list[str]:
        """What a user needs first: a panic or fptrace-lab failure line, then the last lines."""
        tail = self.console_tail(400)
        key = [ln for ln in tail if re.search(r"Kernel panic|fptrace-lab: FAILED|BUG:|Oops", ln)]
        last = tail[-lines:]
        return [ln for ln in key[:1] if ln not in last] + last

    def console_tail(self, lines: int = 15) -> list[str]:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return []
        clean = [re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", "", ln) for ln in text.splitlines()]
        return [ln for ln in clean if ln.strip()][-lines:]


@dataclass
class Machine:
    """How guests are started: accelerator, CPU model, size."""

    accel: str = "tcg"
    cpu: str = "max"
    smp: int = 2
    memory: str = "2G"
    extra: list[str] = field(default_factory=list)


def qemu_binary() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise EnvironmentProblem(f"{QEMU} not found: {INSTALL_HINT}")
    return path


def qemu_version() -> str:
    proc = subprocess.run([qemu_binary(), "--version"], capture_output=True, text=True)
    return proc.stdout.split("\n", 1)[0].removeprefix("QEMU emulator version ").strip()


def qemu_argv(
    machine: Machine,
    vmlinuz: Path,
    initrd: Path,
    cmdline: str,
    share: Path,
    labroot: Path | None = None,
) -> list[str]:
    accel = ["-accel", "kvm", "-cpu", "host"] if machine.accel == "kvm" else ["-accel", "tcg"]
    if machine.accel != "kvm":
        accel += ["-cpu", machine.cpu]
    fs = "security_model=none,multidevs=remap"
    return [
        qemu_binary(),
        *accel,
        "-smp",
        str(machine.smp),
        "-m",
        machine.memory,
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
        "-kernel",
        str(vmlinuz),
        "-initrd",
        str(initrd),
        "-append",
        cmdline,
        "-fsdev",
        f"local,id=hostroot,path=/,readonly=on,{fs}",
        "-device",
        "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
        "-fsdev",
        f"local,id=labout,path={share},{fs}",
        "-device",
        "virtio-9p-pci,fsdev=labout,mount_tag=labout",
        *(
            [
                "-fsdev",
                f"local,id=labroot,path={labroot},readonly=on,{fs}",
                "-device",
                "virtio-9p-pci,fsdev=labroot,mount_tag=labroot",
            ]
            if labroot is not None
            else []
        ),
        *machine.extra,
    ]


def run_guest(argv: list[str], console: Path, timeout: float) -> BootResult:
    """Run qemu with its console in ``console``; kill it (and only it) after ``timeout``."""
    started = time.monotonic()
    with open(console, "wb") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = None
        except BaseException:
            _kill(proc)
            raise
        if rc is None:
            _kill(proc)
    return BootResult(rc, time.monotonic() - started, console)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def kvm_usable(
    probe: tuple[Path, Path], cache: Path, progress: Callable[[str], None] = print
) -> bool:
    """Whether ``-accel kvm`` boots a guest here: tried once per host kernel and qemu, cached.

    /dev/kvm can exist and still fail (a paravirtual host's KVM aborts with "failed to set
    MSR" or hangs in the BIOS), so the only test is to boot: the guest's /init exits at
    once (``rdinit=/bin/false``), the kernel panics, and ``-no-reboot`` ends qemu.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    key = f"{os.uname().release} {qemu_version()}"
    stamp = cache / "kvm.json"
    try:
        seen = json.loads(stamp.read_text())
        if seen.get("key") == key:
            return bool(seen["usable"])
    except (OSError, ValueError, KeyError):
        pass
    progress("checking once whether KVM boots a guest here (up to 30 s)")
    machine = Machine(accel="kvm", memory="256M", smp=1)
    argv = qemu_argv(machine, probe[0], probe[1], "console=ttyS0 panic=-1 rdinit=/bin/false", cache)
    console = cache / "kvm-probe.log"
    result = run_guest(argv, console, timeout=30)
    text = console.read_text(errors="replace") if console.exists() else ""
    usable = not result.timed_out and "Linux version" in text
    cache.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "usable": usable}))
    return usable
