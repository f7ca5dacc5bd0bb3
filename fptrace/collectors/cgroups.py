"""cgroup v2 ids and paths: the kernel gives a task's cgroup as an id, people name it by path.

The id ``bpf_get_current_cgroup_id()`` returns is the cgroup directory's kernfs node id,
which is also its inode number in the cgroup2 file system; so a path's id is one
``stat``, and an id's path is found by walking the hierarchy.  Paths are relative to the
cgroup2 root and start with "/" (as in /proc/PID/cgroup's "0::" line), on a pure v2 host
(/sys/fs/cgroup) and on a hybrid one (v2 at /sys/fs/cgroup/unified) alike.

A cgroup that is removed keeps the path it was resolved to: :class:`CgroupPaths` never
forgets an id, and resolves a new one as soon as a drain sees it (a container that lives
less than an interval is named from /proc while its tasks live, else left as its id).
"""

from __future__ import annotations

import os
from pathlib import Path

from fptrace.errors import TargetError

# A walk of the hierarchy per unknown id costs a stat per cgroup (~1,000 on a busy host);
# ids that stay unknown are looked for again at most this often, in drains.
RETRY_DRAINS = 10


def cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (the first cgroup2 mount), or None."""
    try:
        text = Path(mountinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            fields = left.split()
            if len(fields) >= 5:
                return Path(fields[4].replace("\\040", " "))
    return None


def normalize(path: str) -> str:
    """ "/a/b" for "a/b/", "/a//b" or "/a/b/."; "/" for the root."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise TargetError(f"cgroup path {path!r} has '..': give it from the cgroup root")
    return "/" + "/".join(parts)


def cgroup_id(root: Path, path: str) -> int:
    """The id of cgroup ``path`` (relative to the v2 root); TargetError if there is none."""
    where = root / normalize(path).lstrip("/")
    try:
        st = os.stat(where)
    except OSError:
        raise TargetError(
            f"no cgroup {normalize(path)} under {root} (cgroup v2): list them with "
            f"`ls {root}` or `systemd-cgls`"
        ) from None
    if not os.path.isfile(where / "cgroup.procs"):
        raise TargetError(f"{where} is not a cgroup v2 directory (no cgroup.procs)")
    return st.st_ino


def cgroup_ids(paths: list[str]) -> list[int]:
    """The ids of the cgroups ``paths`` (record --cgroup), on this host's v2 hierarchy."""
    root = cgroup2_root()
    if root is None:
        raise TargetError("--cgroup needs cgroup v2, and no cgroup2 file system is mounted")
    return [cgroup_id(root, p) for p in paths]


def id_of(root: Path | None, path: str | None) -> int | None:
    """The id of an existing cgroup ``path``, or None (no v2 root, gone, or no path)."""
    if root is None or not path or not path.startswith("/"):
        return None
    try:
        return os.stat(root / path.lstrip("/")).st_ino
    except OSError:
        return None


class CgroupPaths:
    """id -> path for the recording's lifetime; walks the hierarchy for ids it has not seen."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else cgroup2_root()
        self.paths: dict[int, str] = {}
        self.unknown: dict[int, int] = {}  # id -> drains until the next walk for it
        self.walks = 0

    def resolve(self, ids: set[int]) -> None:
        """Find the paths of ``ids`` not known yet (one walk for all of them)."""
        wanted = {i for i in ids if i and i not in self.paths}
        due = {i for i in wanted if self.unknown.get(i, 0) <= 0}
        for i in wanted - due:
            self.unknown[i] -= 1
        if not due or self.root is None:
            return
        self._walk()
        for i in due:
            if i in self.paths:
                self.unknown.pop(i, None)
            else:
                self.unknown[i] = RETRY_DRAINS

    def path(self, cgid: int | None, fallback: str | None = None) -> str | None:
        """The path of ``cgid``; ``fallback`` (from /proc) when it was never found."""
        if cgid and cgid in self.paths:
            return self.paths[cgid]
        return fallback

    def note(self, cgid: int, path: str) -> None:
        """A path learnt elsewhere (/proc/PID/cgroup while the task lived)."""
        if cgid:
            self.paths.setdefault(cgid, path)

    def _walk(self) -> None:
        assert self.root is not None
        self.walks += 1
        stack = [(self.root, "/")]
        while stack:
            where, rel = stack.pop()
            try:
                st = os.stat(where)
                entries = list(os.scandir(where))
            except OSError:
                continue  # removed while walking
            self.paths.setdefault(st.st_ino, rel)
            for e in entries:
                try:
                    if e.is_dir(follow_symlinks=False):
                        stack.append((Path(e.path), rel.rstrip("/") + "/" + e.name))
                except OSError:
                    continue
