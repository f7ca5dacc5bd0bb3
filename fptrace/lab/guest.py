"""Inside a lab guest: run `fptrace record` on the job's command and leave the result behind.

Started by the combination's run script (PID 1 in the guest) with the path of ``job.json``
on the writable lab share; runs the recording in this process and writes ``result.json``
next to it.  Everything printed here goes
to the serial console, which the host keeps as ``console.log``.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path


def _dmesg() -> str:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _record(argv: list[str]) -> tuple[int, str | None]:
    """`fptrace record ARGV` in this process (one Python start-up less per boot under TCG):
    its exit code, and what went wrong if it raised."""
    from fptrace.cli import main as fptrace_main

    try:
        return fptrace_main(argv), None
    except SystemExit as exc:  # argparse's usage errors
        return (exc.code if isinstance(exc.code, int) else 1), None
    except Exception as exc:  # a bug in fptrace: the console shows it, result.json follows
        traceback.print_exc()
        return 1, f"{type(exc).__name__}: {exc}"


def main(job_path: str) -> int:
    job_file = Path(job_path)
    job = json.loads(job_file.read_text())
    os.environ.update(job.get("env", {}))
    argv = ["record", "-q", "-o", job["recording"], *job["record_args"], "--", *job["cmd"]]
    cwd = job.get("cwd") if os.path.isdir(job.get("cwd") or "") else "/"
    os.chdir(cwd)
    print(f"fptrace-lab: {os.uname().release}: fptrace {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    rc, error = _record(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    elapsed = time.monotonic() - started
    (job_file.parent / "dmesg.txt").write_text(_dmesg())
    result = {
        "returncode": rc,
        "error": error,
        "record_s": round(elapsed, 2),
        "release": os.uname().release,
        "cmdline": Path("/proc/cmdline").read_text().strip(),
        # Set only in a debootstrapped root (fptrace/lab/rootfs.py marks it complete).
        "debootstrap_root": Path("/.fptrace-root-complete").exists(),
    }
    (job_file.parent / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"fptrace-lab: record exited {rc} after {elapsed:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
