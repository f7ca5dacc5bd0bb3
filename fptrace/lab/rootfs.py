"""The fallback guest root: a debootstrapped Debian, for when the host's own root will not do.

The default guest root is the host's `/` (read-only, overlaid): every path is the host's.
With ``--root debootstrap`` the guest instead boots a minimal Debian (python3, BCC) built once
into the lab cache, and only the paths the job needs — fptrace's venv and source, its cache,
the working directory and the command's directory — are bind-mounted from the host at their
host paths.  Building it needs root once (debootstrap), about a minute.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import fptrace
from fptrace.errors import EnvironmentProblem, PrivilegeError
from fptrace.lab.apt import host_mirror

SUITE = "bookworm"
PACKAGES = ("python3", "python3-bpfcc", "kmod", "procps", "util-linux")
DONE = ".fptrace-root-complete"


def debootstrap_root(base: Path, progress: Callable[[str], None]) -> Path:
    """The cached root (built on first use)."""
    root = base / "rootfs" / SUITE
    if (root / DONE).exists():
        return root
    if shutil.which("debootstrap") is None:
        raise EnvironmentProblem("--root debootstrap needs debootstrap: apt install debootstrap")
    if os.geteuid() != 0:
        raise PrivilegeError("--root debootstrap builds its root once as root: run it with sudo")
    tmp = root.with_name(f".tmp-{SUITE}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    progress(f"building the {SUITE} guest root with debootstrap (once, about a minute)")
    argv = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE]
    proc = subprocess.run(
        [*argv, str(tmp), host_mirror()], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-1:]
        raise EnvironmentProblem(f"debootstrap {SUITE} failed: {' '.join(tail)}")
    (tmp / DONE).touch()
    shutil.rmtree(root, ignore_errors=True)
    os.replace(tmp, root)
    return root


def bind_paths(cmd: list[str], extra: list[Path]) -> list[str]:
    """Host directories the job needs in a debootstrapped guest, outermost only."""
    want = [Path(sys.prefix), Path(fptrace.__file__).resolve().parents[1], Path.cwd(), *extra]
    if cmd and "/" in cmd[0]:
        want.append(Path(cmd[0]).resolve().parent)
    dirs = sorted({p.resolve() for p in want if p.is_dir() and p != Path("/")}, key=str)
    out: list[Path] = []
    for d in dirs:
        if not any(d.is_relative_to(o) for o in out):
            out.append(d)
    return [str(d) for d in out]
