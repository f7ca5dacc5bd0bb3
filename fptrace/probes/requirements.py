"""`fptrace doctor`: every requirement of `fptrace record`, with ok/missing, why, and the fix.

Uses the same plan as `record`, so what doctor says is what record will do.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from fptrace.probes.headers import choose_headers
from fptrace.probes.kernel import KernelEnv
from fptrace.probes.plan import PlanOptions, plan_probes


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    required: bool
    detail: str  # what was found, or why it is missing
    fix: str = ""


def _bcc_importable() -> bool:
    return importlib.util.find_spec("bcc") is not None


def run_checks(env: KernelEnv, tracefs_problem: str, euid: int | None = None) -> list[Check]:
    """Every requirement; ``tracefs_problem`` is :func:`kernel.tracefs_problem`'s answer."""
    euid = os.geteuid() if euid is None else euid
    tracefs_ok = not tracefs_problem
    checks = [
        Check(
            "privilege",
            euid == 0,
            True,
            "running as root" if euid == 0 else f"running as uid {euid}",
            "run `sudo fptrace …`",
        ),
        Check(
            "tracefs",
            tracefs_ok,
            True,
            "mounted" if tracefs_ok else tracefs_problem,
            "run as root: sudo fptrace doctor"
            if "only by root" in tracefs_problem
            else "mount -t tracefs nodev /sys/kernel/tracing (as root)",
        ),
        Check(
            "BTF",
            env.btf is not None,
            True,
            "/sys/kernel/btf/vmlinux readable" if env.btf is not None else str(env.btf_error),
            "a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        ),
        Check(
            "BCC python module",
            _bcc_importable(),
            True,
            "import bcc works" if _bcc_importable() else "import bcc fails",
            "apt-get install python3-bpfcc bpfcc-tools (make setup)",
        ),
    ]
    headers = choose_headers(env.release) if euid == 0 else None
    if headers is not None:
        checks.append(
            Check(
                "kernel headers for BCC",
                headers.path is not None,
                True,
                headers.note or str(headers.path or "none found"),
                "apt-get install linux-headers-amd64 (make setup)",
            )
        )
    plan = plan_probes(env, PlanOptions(filter_targets=True))
    for reason in plan.fatal:
        checks.append(Check("kernel layout", False, True, reason, "see docs/kernel-support.md"))
    for p in plan.probes:
        checks.append(
            Check(
                f"{p.kind} {p.name}",
                p.attach,
                p.required,
                p.reason or "present",
                "" if p.attach else "a kernel with this tracepoint",
            )
        )
    for key in sorted(k for k in plan.macros if k.endswith("_OFF")):
        checks.append(Check(f"BTF offset {key}", True, True, str(plan.macros[key])))
    for n in plan.notes:
        checks.append(Check("note", True, False, n))
    return checks
