"""Removes the ftrace backend's tracing instance when the recorder dies, however it dies.

A tracefs instance outlives its creator: a SIGKILLed recorder left its instance tracing
(an 8 MB buffer, eleven events enabled) until the next run noticed it.  The recorder starts
this program with a pipe on its stdin and keeps the other end; the kernel closes that end
when the recorder exits for any reason, SIGKILL included, and this program then turns the
instance off and removes it (after a clean stop the recorder has already done so).  It runs
in its own session, so a Ctrl-C meant for the recorder does not end it first.

Usage (by fptrace only): python -m fptrace.collectors.ftrace_watchdog INSTANCE_DIR
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path


def remove_instance(inst: Path) -> None:
    """Stop an instance's tracing and remove it (nothing if it is gone)."""
    with contextlib.suppress(OSError):
        (inst / "tracing_on").write_text("0")
        (inst / "events" / "enable").write_text("0")
    with contextlib.suppress(OSError):
        inst.rmdir()


def start(inst: Path) -> subprocess.Popen[bytes]:
    """The watchdog of ``inst``; close its stdin (or exit) to let it act."""
    return subprocess.Popen(
        [sys.executable, "-m", "fptrace.collectors.ftrace_watchdog", str(inst)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def main() -> int:
    inst = Path(sys.argv[1])
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):  # EOF: the recorder is gone, or done
            pass
    remove_instance(inst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
