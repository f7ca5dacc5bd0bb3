"""The traced command: forked blocked on a pipe, so that nothing it does precedes the
probes; under sudo it runs as the invoking user (least privilege)."""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import sys

from fptrace.errors import TargetError


def _drop_identity(keep_root: bool) -> tuple[int, int, list[int], dict[str, str]] | None:
    """Under sudo, the command runs as the invoking user (least privilege)."""
    uid = os.environ.get("SUDO_UID")
    if keep_root or os.geteuid() != 0 or not uid or not uid.isdigit() or int(uid) == 0:
        return None
    try:
        pw = pwd.getpwuid(int(uid))
    except KeyError:
        return None
    groups = os.getgrouplist(pw.pw_name, pw.pw_gid)
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    return pw.pw_uid, pw.pw_gid, groups, env


class BlockedChild:
    """A forked command that waits for a byte on a pipe before it execs."""

    def __init__(self, argv: list[str], keep_root: bool) -> None:
        drop = _drop_identity(keep_root)
        go_r, self._go_w = os.pipe()
        self._err_r, err_w = os.pipe()
        os.set_inheritable(err_w, False)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # child
            code = 127
            try:
                os.close(self._go_w)
                os.close(self._err_r)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                if os.read(go_r, 1) != b"g":
                    os._exit(code)  # fptrace gave up before starting us
                os.close(go_r)
                env = dict(os.environ)
                if drop is not None:
                    uid, gid, groups, extra = drop
                    os.setgroups(groups)
                    os.setgid(gid)
                    os.setuid(uid)
                    env.update(extra)
                os.execvpe(argv[0], argv, env)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.write(err_w, f"{exc.errno}:{exc.strerror}".encode())
                code = 126 if exc.errno == 13 else 127
            os._exit(code)
        os.close(go_r)
        os.close(err_w)
        self.pid = pid
        self.argv = argv
        self.status: int | None = None
        self.released = False

    def release(self) -> None:
        self.released = True
        os.write(self._go_w, b"g")
        os.close(self._go_w)
        err = os.read(self._err_r, 256)
        os.close(self._err_r)
        if err:
            self.wait()
            raise TargetError(f"cannot run {self.argv[0]}: {err.decode().split(':', 1)[-1]}")

    def abandon(self) -> None:
        """Let the child exit without running the command."""
        with contextlib.suppress(OSError):
            os.close(self._go_w)
        self.wait()

    def poll(self) -> int | None:
        if self.status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def wait(self) -> int:
        if self.status is None:
            _, status = os.waitpid(self.pid, 0)
            self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def signal(self, signum: int) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    @property
    def exit_code(self) -> int:
        code = self.wait()
        return 128 - code if code < 0 else code
