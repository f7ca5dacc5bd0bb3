"""An independent per-thread count of the kernel's FPU events: bpftrace, not fptrace.

bpftrace attaches its own programs to the classic ``x86_fpu`` and ``signal`` tracepoints and
counts per (tgid, tid), classifying ``regs_activated`` by the **record's own** ``load_fpu``
field — which fptrace does not read (it reads the task's TIF word itself), so a wrong TIF bit
or a wrong pairing rule in fptrace shows up as a difference.  Nothing here imports fptrace.

Usage::

    with Oracle() as oracle:       # returns once bpftrace's probes are attached
        run the workload
    oracle.counts[(tgid, tid)]     # {"deactivated": n, "restores": n, ...}
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections import defaultdict
from types import TracebackType

SCRIPT = """
BEGIN { printf("attached\\n"); }
tracepoint:x86_fpu:x86_fpu_regs_deactivated /1 WHO/ { @deactivated[pid, tid] = count(); }
tracepoint:x86_fpu:x86_fpu_regs_activated /args->load_fpu WHO/
{ @restores[pid, tid] = count(); }
tracepoint:x86_fpu:x86_fpu_regs_activated /!args->load_fpu WHO/
{ @activated_other[pid, tid] = count(); }
tracepoint:x86_fpu:x86_fpu_dropped /1 WHO/ { @dropped[pid, tid] = count(); }
tracepoint:signal:signal_deliver /args->sa_handler > 1 WHO/ { @signal_frames[pid, tid] = count(); }
"""
LINE = re.compile(r"^@(\w+)\[(\d+), (\d+)\]: (\d+)$")


class Oracle:
    """bpftrace counting x86_fpu events per thread, system-wide, while the block runs."""

    def __init__(self, timeout: float = 60, comm: str | None = None) -> None:
        """``comm``: count only tasks of that name.  The counts are per pid, so where the
        pid space wraps during the run, another process that gets a workload's old pid would
        be counted as that workload (a CI run once saw +183 saves when a test suite ran
        beside 40,000 short-lived processes)."""
        self.timeout = timeout
        self.script = SCRIPT.replace("WHO", f'&& comm == "{comm}"' if comm else "")
        self.counts: dict[tuple[int, int], dict[str, int]] = defaultdict(dict)
        self._lines: list[str] = []
        self._attached = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> Oracle:
        exe = shutil.which("bpftrace")
        if exe is None:
            raise FileNotFoundError("bpftrace")
        env = dict(os.environ, BPFTRACE_MAP_KEYS_MAX="32768")
        self._proc = subprocess.Popen(
            [exe, "-B", "line", "-e", self.script],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # BEGIN runs once every probe is attached; "-B line" sends its line at once.
        if not self._attached.wait(self.timeout):
            self._stop()
            raise RuntimeError(f"bpftrace did not attach: {self._lines[-3:]}")
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            self._lines.append(line.rstrip("\n"))
            if line == "attached\n":
                self._attached.set()

    def _stop(self) -> None:
        assert self._proc is not None and self._reader is not None
        self._proc.send_signal(signal.SIGINT)  # bpftrace prints its maps, then exits
        try:
            self._proc.wait(timeout=self.timeout)
        finally:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
        self._reader.join(self.timeout)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
        for line in self._lines:
            m = LINE.match(line.strip())
            if m:
                name, tgid, tid, n = m.groups()
                self.counts[(int(tgid), int(tid))][name] = int(n)

    def threads_of(self, tgids: set[int]) -> dict[int, dict[str, int]]:
        """Per tid, the counts of the threads of processes ``tgids``."""
        return {tid: dict(c) for (tgid, tid), c in self.counts.items() if tgid in tgids}
