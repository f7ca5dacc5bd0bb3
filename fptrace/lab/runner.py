"""`fptrace lab record`: every kernel × boot-option combination, one after another.

Per combination: make sure the kernel is in the cache, write a job (run script + job.json)
under ``OUT/.lab/<combination>/``, boot it, and read back ``result.json``.  A combination that
fails — a spec the mirror cannot satisfy, a guest that panics or hangs, a workload that fails —
is reported with its console log and the others still run; what they recorded is kept.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fptrace.cache import adopt, cache_dir
from fptrace.errors import FptraceError, OutputExistsError, UsageError
from fptrace.lab.apt import PrivateApt
from fptrace.lab.kernels import CachedKernel, lab_dir, prepare_debian, prepare_path
from fptrace.lab.qemu import Machine, kvm_usable, qemu_argv, qemu_binary, qemu_version, run_guest
from fptrace.lab.rootfs import bind_paths, debootstrap_root
from fptrace.lab.specs import KernelSpec, combination_name, parse_spec
from fptrace.recording.manifest import Lab
from fptrace.recording.outdir import chown_tree
from fptrace.recording.schema import MANIFEST
from fptrace.recording.writer import amend_manifest

Progress = Callable[[str], None]
#: Kernel command line every guest gets before the user's boot options.
BASE_CMDLINE = "console=ttyS0 panic=-1 quiet"
JOBS = ".lab"
#: Boots of a combination whose kernel panics before fptrace's /init (docs/lab.md, Failures):
#: TCG's rare boot-time crashes (7.2: 2 of 8 boots here) should not fail a combination.
BOOT_ATTEMPTS = 3


@dataclass
class LabOptions:
    kernels: list[str]
    output: Path
    cmd: list[str]
    appends: list[str] = field(default_factory=lambda: [""])
    record_args: list[str] = field(default_factory=list)
    timeout: float = 600.0
    accel: str = "auto"  # auto | kvm | tcg
    memory: str = "2G"
    smp: int = 2
    force: bool = False
    refresh: bool = False
    root: str = "host"  # host | debootstrap (docs/lab.md)


@dataclass
class ComboResult:
    name: str
    kernel: str  # the spec as given
    append: str
    status: str  # ok | workload-failed | record-failed | no-result | timeout | kernel-error
    message: str = ""
    release: str | None = None
    boot_s: float | None = None
    recording: str | None = None
    console: str | None = None
    attempts: int = 1  # >1: earlier boots panicked before /init (their consoles are kept)

    @property
    def ok(self) -> bool:
        return self.status == "ok"


RUN_SH = """#!/bin/sh
# fptrace lab, combination {name}: runs as PID 1 in the guest (generated, do not edit).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
export LC_ALL=C.UTF-8 TERM=dumb
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
ln -sfn /proc/self/fd /dev/fd
ln -sfn /proc/self/fd/0 /dev/stdin
ln -sfn /proc/self/fd/1 /dev/stdout
ln -sfn /proc/self/fd/2 /dev/stderr
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
ulimit -l unlimited 2>/dev/null
echo "fptrace-lab: guest up: $(uname -r)"
{python} -m fptrace.lab.guest {job}
echo "fptrace-lab: powering off"
sync
echo o > /proc/sysrq-trigger
# Power-off is asynchronous; PID 1 must not exit (a panic) nor exec from the going shares.
while :; do :; done
"""


def _check_output(out: Path, force: bool) -> None:
    if any(c.isspace() for c in str(out)) or "," in str(out):
        raise UsageError(f"output {out}: the path may not contain spaces or commas (qemu shares)")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(out, "exists and is not a directory")
    if out.is_dir() and any(p.name != JOBS for p in out.iterdir()) and not force:
        raise OutputExistsError(out, "is not empty")


def write_job(out: Path, name: str, kernel: CachedKernel, opts: LabOptions) -> Path:
    """The run script and job.json for one combination; returns the run script."""
    jobdir = out / JOBS / name
    shutil.rmtree(jobdir, ignore_errors=True)
    jobdir.mkdir(parents=True)
    # The guest shares the host's fptrace cache (built workloads; writes land in the overlay).
    # What the guest adds to the cache (compiled probes, BTF facts) is spilled into the job
    # directory and adopted by the host's cache after the guest ends: the next boot of this
    # kernel starts without BCC's compiler or a BTF parse.
    env = {
        "FPTRACE_KERNEL_CONFIG": str(kernel.path / "config"),
        "FPTRACE_CACHE": str(cache_dir()),
        "FPTRACE_CACHE_SPILL": str(jobdir / "cache"),
    }
    if kernel.headers is not None:
        env["FPTRACE_KERNEL_HEADERS"] = str(kernel.headers)
    cmd = opts.cmd
    if cmd and cmd[0] == "fptrace":  # the guest runs this fptrace, like its recorder
        cmd = [sys.executable, "-m", "fptrace", *cmd[1:]]
    job = {
        "recording": str(out / name),
        "record_args": opts.record_args,
        "cmd": cmd,
        "cwd": os.getcwd(),
        "env": env,
    }
    (jobdir / "job.json").write_text(json.dumps(job, indent=2) + "\n")
    script = jobdir / "run.sh"
    script.write_text(
        RUN_SH.format(
            name=name,
            python=shlex.quote(sys.executable),
            job=shlex.quote(str(jobdir / "job.json")),
        )
    )
    script.chmod(0o755)
    if opts.root == "debootstrap":
        extra = [cache_dir(), lab_dir(), opts.output.resolve()]
        (jobdir / "binds").write_text("".join(f"{p}\n" for p in bind_paths(opts.cmd, extra)))
    return script


def _resolve(
    specs: list[KernelSpec], refresh: bool, progress: Progress
) -> list[tuple[KernelSpec, CachedKernel | None, str]]:
    """Each spec's cached kernel, or the one-line reason it has none."""
    apt: PrivateApt | None = None
    out: list[tuple[KernelSpec, CachedKernel | None, str]] = []
    for spec in specs:
        try:
            if spec.is_debian:
                if apt is None:
                    apt = PrivateApt(lab_dir() / "apt")
                    note = apt.update(force=refresh)
                    if note:
                        progress(note)
                kernel = prepare_debian(apt, apt.resolve(spec), progress)
            else:
                kernel = prepare_path(spec, progress)
            out.append((spec, kernel, ""))
        except FptraceError as exc:
            out.append((spec, None, str(exc)))
    return out


def _interpret(name: str, spec: KernelSpec, append: str, out: Path, boot: Any) -> ComboResult:
    jobdir = out / JOBS / name
    res = ComboResult(
        name, spec.text, append, "ok", boot_s=round(boot.elapsed_s, 1), console=str(boot.console)
    )
    tail = " | ".join(boot.console_summary())
    try:
        result = json.loads((jobdir / "result.json").read_text())
    except (OSError, ValueError):
        result = None
    if result is not None:
        res.release = result.get("release")
    if (out / name / MANIFEST).exists():
        res.recording = str(out / name)
    if boot.timed_out and result is None:
        res.status, res.message = "timeout", f"guest still running after {boot.elapsed_s:.0f} s"
    elif result is None:
        res.status, res.message = "no-result", "the guest never finished the job"
    elif result["returncode"] != 0 and res.recording is None:
        res.status = "record-failed"
        res.message = f"fptrace record exited {result['returncode']} in the guest"
    elif result["returncode"] != 0:
        res.status = "workload-failed"
        res.message = f"the command exited {result['returncode']} in the guest (recording kept)"
    if not res.ok:
        res.message += f"; console {boot.console}: {tail}"
    return res


def _annotate(recording: Path, name: str, spec: KernelSpec, append: str, meta: dict) -> None:
    """Add the combination to the guest's manifest: which spec, boot options, machine."""
    amend_manifest(
        recording, lab=Lab(combination=name, kernel_spec=spec.text, append=append, extra=meta)
    )


def lab_record(opts: LabOptions, progress: Progress) -> list[ComboResult]:
    """Run every combination; never raises for one combination's failure."""
    if not opts.cmd:
        raise UsageError("no command: fptrace lab record --kernel SPEC -o DIR -- COMMAND ARGS…")
    specs = [parse_spec(s) for s in opts.kernels]
    if not specs:
        raise UsageError("no --kernel given (e.g. --kernel debian:bookworm)")
    out = opts.output.resolve()
    _check_output(out, opts.force)
    qemu_binary()
    out.mkdir(parents=True, exist_ok=True)
    _prebuild_workload(opts.cmd)
    resolved = _resolve(specs, opts.refresh, progress)
    ready = [k for _, k, _ in resolved if k is not None]
    accel = opts.accel
    if accel == "auto":
        accel = (
            "kvm"
            if ready and kvm_usable((ready[0].vmlinuz, ready[0].initrd()), lab_dir(), progress)
            else "tcg"
        )
    machine = Machine(accel=accel, smp=opts.smp, memory=opts.memory)
    labroot = debootstrap_root(lab_dir(), progress) if opts.root == "debootstrap" else None
    meta = {
        "root": opts.root,
        "accel": accel,
        "cpu": "host" if accel == "kvm" else machine.cpu,
        "qemu": qemu_version(),
    }
    results: list[ComboResult] = []
    try:
        _run_combinations(opts, resolved, out, machine, meta, results, progress, labroot)
    finally:  # also after Ctrl-C: the combinations done so far are listed and kept
        summary = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": opts.cmd,
            "machine": asdict(machine) | meta,
            "combinations": [asdict(r) for r in results],
        }
        (out / "lab.json").write_text(json.dumps(summary, indent=2) + "\n")
        chown_tree(out)  # under sudo, the lab directory belongs to the invoking user
    return results


def _run_combinations(
    opts: LabOptions,
    resolved: list[tuple[KernelSpec, CachedKernel | None, str]],
    out: Path,
    machine: Machine,
    meta: dict[str, Any],
    results: list[ComboResult],
    progress: Progress,
    labroot: Path | None = None,
) -> None:
    """Boot each combination in turn, appending to ``results`` as each one ends."""
    accel = machine.accel
    combos = [(s, k, err, a) for s, k, err in resolved for a in opts.appends]
    seen: set[str] = set()
    for i, (spec, kernel, err, append) in enumerate(combos, 1):
        label = f"[{i}/{len(combos)}]"
        if kernel is None:  # one entry per spec, not one per boot option
            name = spec.text.replace(":", "-").replace("/", "_")
            if name in seen:
                continue
            seen.add(name)
            results.append(ComboResult(name, spec.text, "", "kernel-error", err))
            progress(f"{label} {name}: FAILED: {err}")
            continue
        name = combination_name(kernel.release, append)
        if name in seen:
            continue
        seen.add(name)
        shutil.rmtree(out / name, ignore_errors=True)
        script = write_job(out, name, kernel, opts)
        root = "labroot" if labroot is not None else "hostroot"
        plumbing = f"fptrace.out={out} fptrace.run={script} fptrace.root={root}"
        cmdline = f"{BASE_CMDLINE} {plumbing} {append.strip()}".strip()
        argv = qemu_argv(machine, kernel.vmlinuz, kernel.initrd(), cmdline, out, labroot)
        progress(f"{label} {name}: booting ({accel}, -append '{append.strip()}')")
        console = out / JOBS / name / "console.log"
        boot = run_guest(argv, console, opts.timeout)
        attempts = 1
        while boot.died_before_init and attempts < BOOT_ATTEMPTS:
            kept = console.with_name(f"console-boot{attempts}.log")
            os.replace(console, kept)
            progress(f"{label} {name}: the kernel panicked before /init ({kept}); booting again")
            boot = run_guest(argv, console, opts.timeout)
            attempts += 1
        adopt(out / JOBS / name / "cache")
        res = _interpret(name, spec, append, out, boot)
        res.attempts = attempts
        if res.recording is not None:
            _annotate(Path(res.recording), name, spec, append, meta | {"boot_s": res.boot_s})
        results.append(res)
        word = "ok" if res.ok else f"FAILED ({res.status}): {res.message}"
        progress(f"{label} {name}: {word} in {res.boot_s} s")


def _prebuild_workload(cmd: list[str]) -> None:
    """`fptrace workload NAME …` builds on the host once; every guest under TCG would not."""
    if len(cmd) >= 3 and Path(cmd[0]).name == "fptrace" and cmd[1] == "workload":
        from fptrace.workloads.build import WORKLOADS, workload_binary

        name = next((a for a in cmd[2:] if not a.startswith("-")), None)
        if name in WORKLOADS:
            workload_binary(name)
