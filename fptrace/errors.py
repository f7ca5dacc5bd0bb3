"""Errors users can act on.  Each carries an exit code and a one-line message (what, how to fix).

Only the CLI's ``main()`` prints them; a traceback appears only with ``--debug``.
"""

from __future__ import annotations

import errno
from pathlib import Path


class FptraceError(Exception):
    """Base class: ``str(err)`` is the one-line message."""

    exit_code = 2


class UsageError(FptraceError):
    exit_code = 2


class PrivilegeError(FptraceError):
    exit_code = 77  # sysexits EX_NOPERM


class EnvironmentProblem(FptraceError):
    """The machine lacks something fptrace needs (BCC, BTF, tracefs, headers…)."""

    exit_code = 69  # EX_UNAVAILABLE


class TargetError(FptraceError):
    """The PID or command to trace does not exist."""

    exit_code = 66  # EX_NOINPUT-ish: nothing to trace


class OutputExistsError(FptraceError):
    exit_code = 73  # EX_CANTCREAT

    def __init__(
        self,
        path: Path,
        what: str = "already exists",
        fix: str = "choose another -o, or add --force to replace it",
    ) -> None:
        super().__init__(f"output {path} {what}: {fix}")


class OutputWriteError(FptraceError):
    exit_code = 74  # EX_IOERR

    def __init__(self, path: Path, exc: OSError) -> None:
        if exc.errno == errno.ENOSPC:
            hint = "the disk is full: free space or record elsewhere with -o"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            hint = "not writable: choose another -o"
        else:
            hint = exc.strerror or str(exc)
        super().__init__(f"cannot write {path}: {hint}")


class RecordingError(FptraceError):
    """A directory that is not a readable recording."""

    exit_code = 65  # EX_DATAERR


class NotComparableError(FptraceError):
    """Two setups whose numbers cannot be compared (different workload, format, probes)."""

    exit_code = 65
