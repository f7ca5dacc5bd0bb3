"""A directory that fptrace, often as root, writes a recording into: safe against other users.

`sudo fptrace record -o DIR` runs as root in a place the user chose, which may be a shared
one (/tmp) or a directory someone else can write.  Path-based writes there follow symlinks
that another user plants while fptrace records, and root would then overwrite or chown
files of that user's choosing.  So:

- the directory is opened once (``O_DIRECTORY|O_NOFOLLOW``) and every file is created
  *relative to that descriptor* with ``O_CREAT|O_EXCL|O_NOFOLLOW``: a name that already
  exists (a planted symlink included) is never opened for writing;
- a file appears whole or not at all: written under ``NAME.tmp``, flushed to disk, renamed
  over ``NAME`` (a rename replaces a symlink itself, never its target);
- under sudo each file and directory is handed to the invoking user with ``fchown`` on the
  descriptor fptrace created, never by path;
- an existing directory is used only with ``--force``, only if it is a real directory owned
  by root or the invoking user that no other user can write, and ``--force`` removes only
  the files an fptrace recording consists of (anything else there: refused, nothing removed).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from fptrace.errors import OutputExistsError, OutputWriteError
from fptrace.recording.schema import (
    ALL_TABLES,
    CALIBRATION,
    EVENTS,
    KERNEL_CONFIG,
    MANIFEST,
    PARTS_DIR,
    REPORT,
)

OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK

# What an fptrace recording consists of: the only names `--force` removes.
RECORDING_FILES = frozenset(
    {MANIFEST, KERNEL_CONFIG, CALIBRATION, EVENTS, REPORT}
    | {f"{name}.parquet" for name in ALL_TABLES}
)
PART_FILE = re.compile(rf"(?:{'|'.join(ALL_TABLES)})-(?:\d+|latest)\.parquet")
TMP = ".tmp"
TMP_NAME = re.compile(r"\.[0-9a-f]{16}\.tmp$")


def invoking_user() -> tuple[int, int] | None:
    """The user who ran sudo, so that what root writes belongs to them."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid and uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return None


def _unpart(name: str) -> str:
    """A file's name without the temporary suffix a write in progress gives it."""
    return TMP_NAME.sub("", name)


def _ours(name: str) -> bool:
    return _unpart(name) in RECORDING_FILES


class OutputDir:
    """An open directory: create, replace, read and remove names in it without following a
    symlink (see the module docstring)."""

    def __init__(self, fd: int, path: Path, owner: tuple[int, int] | None) -> None:
        self.fd, self.path, self.owner = fd, path, owner

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def create(cls, path: Path, force: bool = False) -> OutputDir:
        """The recording directory ``path``: made new, or (``force``) an existing one that
        passes :meth:`_check_existing`, emptied of a previous recording's files."""
        owner = invoking_user()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.mkdir(path, 0o755)
            made = True
        except FileExistsError:
            made = False
        except OSError as exc:
            raise OutputWriteError(path, exc) from exc
        if not made and not force:
            raise OutputExistsError(path)
        try:
            fd = os.open(path, OPEN_DIR)
        except OSError as exc:
            if os.path.islink(path) or not os.path.isdir(path):
                raise OutputExistsError(
                    path, "is not a directory (or is a symlink)", "choose another -o"
                ) from None
            raise OutputWriteError(path, exc) from exc
        out = cls(fd, path, owner)
        try:
            if made:
                out._give(fd)
            else:
                out._check_existing()
                out._clear_recording()
        except BaseException:
            out.close()
            raise
        return out

    @classmethod
    def existing(cls, path: Path) -> OutputDir:
        """A directory to amend (``fptrace lab`` notes where a recording was made)."""
        try:
            return cls(os.open(path, OPEN_DIR), path, invoking_user())
        except OSError as exc:
            raise OutputWriteError(path, exc) from exc

    def _check_existing(self) -> None:
        """Refuse a directory another user could change under us."""
        st = os.fstat(self.fd)
        mine = {0, os.geteuid()} | ({self.owner[0]} if self.owner else set())
        if st.st_uid not in mine:
            raise OutputExistsError(
                self.path,
                f"belongs to another user (uid {st.st_uid})",
                "--force will not write into it; choose another -o",
            )
        if st.st_mode & stat.S_IWOTH or (
            st.st_mode & stat.S_IWGRP and st.st_gid != _primary_gid(st.st_uid)
        ):
            raise OutputExistsError(
                self.path,
                "is writable by other users",
                "--force will not write into it; choose another -o",
            )

    def _clear_recording(self) -> None:
        """Remove a previous recording's files, and only those; refuse anything else."""
        names = os.listdir(self.fd)
        if not names:
            return
        others = sorted(n for n in names if not _ours(n) and n != PARTS_DIR)
        if others or (MANIFEST not in names and PARTS_DIR not in names):
            shown = ", ".join(others[:3]) + (" …" if len(others) > 3 else "")
            raise OutputExistsError(
                self.path,
                f"holds files that are not an fptrace recording's ({shown or 'no manifest'})",
                "nothing was removed; choose another -o",
            )
        if PARTS_DIR in names:
            parts = self.open_dir(PARTS_DIR)
            try:
                extra = [n for n in os.listdir(parts.fd) if not PART_FILE.fullmatch(_unpart(n))]
                if extra:
                    raise OutputExistsError(
                        self.path / PARTS_DIR,
                        f"holds files fptrace did not write ({extra[0]})",
                        "nothing was removed; choose another -o",
                    )
                for n in os.listdir(parts.fd):
                    os.unlink(n, dir_fd=parts.fd)
            finally:
                parts.close()
            os.rmdir(PARTS_DIR, dir_fd=self.fd)
        for n in names:
            if n != PARTS_DIR:
                os.unlink(n, dir_fd=self.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> OutputDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names in it ---------------------------------------------------------------------

    def _give(self, fd: int) -> None:
        if self.owner is not None:
            with contextlib.suppress(OSError):
                os.fchown(fd, *self.owner)

    def make_dir(self, name: str) -> OutputDir:
        """A new subdirectory (``.parts``), open."""
        try:
            os.mkdir(name, 0o755, dir_fd=self.fd)
        except OSError as exc:
            raise OutputWriteError(self.path / name, exc) from exc
        sub = self.open_dir(name)
        self._give(sub.fd)
        return sub

    def open_dir(self, name: str) -> OutputDir:
        try:
            return OutputDir(os.open(name, OPEN_DIR, dir_fd=self.fd), self.path / name, self.owner)
        except OSError as exc:
            raise OutputWriteError(self.path / name, exc) from exc

    @contextlib.contextmanager
    def written_whole(self, name: str, text: bool = False) -> Iterator[IO[Any]]:
        """A new file to write ``name`` through: renamed into place when the block ends
        without an error, removed otherwise."""
        # Unpredictable: a name planted in advance (by whoever can write here) is never the
        # one opened, so O_EXCL never meets it; the rename then replaces the final name
        # itself, a planted symlink included, never what it points to.
        tmp = f"{name}.{secrets.token_hex(8)}{TMP}"
        try:
            fd = os.open(tmp, NEW_FILE, 0o644, dir_fd=self.fd)
        except OSError as exc:
            raise OutputWriteError(self.path / name, exc) from exc
        self._give(fd)
        done = False
        try:
            with (
                os.fdopen(fd, "w", encoding="utf-8", newline="")
                if text
                else os.fdopen(fd, "wb") as f
            ):
                yield f
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
            done = True
        except OSError as exc:
            raise OutputWriteError(self.path / name, exc) from exc
        finally:
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(tmp, dir_fd=self.fd)

    def read_bytes(self, name: str) -> bytes:
        """A regular file's content (no symlink, no fifo or device)."""
        with self.open_read(name) as f:
            return f.read()

    def open_read(self, name: str) -> IO[bytes]:
        fd = os.open(name, READ_FILE, dir_fd=self.fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{self.path / name} is not a regular file")
        return os.fdopen(fd, "rb")

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def remove_dir(self, name: str) -> None:
        """Remove a subdirectory fptrace made (``.parts``) with the files in it."""
        try:
            sub = self.open_dir(name)
        except OutputWriteError:
            return
        try:
            for n in os.listdir(sub.fd):
                with contextlib.suppress(OSError):
                    os.unlink(n, dir_fd=sub.fd)
        finally:
            sub.close()
        with contextlib.suppress(OSError):
            os.rmdir(name, dir_fd=self.fd)


def _primary_gid(uid: int) -> int | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_gid
    except KeyError:
        return None


def chown_tree(path: Path) -> None:
    """Hand a directory fptrace made (the lab's output) to the invoking user under sudo,
    never following a symlink."""
    owner = invoking_user()
    if owner is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                os.chown(os.path.join(root, name), *owner, follow_symlinks=False)
    with contextlib.suppress(OSError):
        os.chown(path, *owner, follow_symlinks=False)
