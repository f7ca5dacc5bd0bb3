"""The agent's directory of recordings, laid out for engines that prune by partition.

``DIR/host=HOSTNAME/date=YYYY-MM-DD/YYYYMMDDTHHMMSSZ/`` — one complete recording per
rotation (docs/fleet.md).  DuckDB (``hive_partitioning``) and Spark (partition discovery
from a base path) read ``host`` and ``date`` as columns from the path, so a query for one
host or one day opens only those directories.  The segment's own directory is its start
time (UTC), which sorts in time order.

Retention removes whole segments, oldest first, and only directories that are fptrace
recordings (a manifest, or the parts of an unfinished one): a file a person put there stays.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fptrace.recording.schema import MANIFEST, PARTS_DIR

SEGMENT_FORMAT = "%Y%m%dT%H%M%SZ"
SEGMENT_RE = re.compile(r"\d{8}T\d{6}Z(-\d+)?")
# A partition value is a path component: a host name with "/" or "=" would not be one.
UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def host_label(name: str | None = None) -> str:
    """This host's name as a partition value (letters, digits, ``.``, ``_``, ``-``)."""
    return UNSAFE.sub("_", name or socket.gethostname()) or "unknown"


def segment_path(root: Path, host: str, started: datetime) -> Path:
    """Where the segment that starts at ``started`` goes (a new name if that one exists:
    two rotations within a second)."""
    started = started.astimezone(UTC)
    base = root / f"host={host}" / f"date={started:%Y-%m-%d}" / started.strftime(SEGMENT_FORMAT)
    path, n = base, 1
    while path.exists():
        path = base.with_name(f"{base.name}-{n}")
        n += 1
    return path


@dataclass(frozen=True)
class StoredSegment:
    path: Path
    started: datetime
    bytes: int


def _size(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                continue
    return total


def stored_segments(root: Path) -> list[StoredSegment]:
    """The recordings under ``root``'s partitions, oldest first."""
    out = []
    for seg in root.glob("host=*/date=*/*"):
        if not SEGMENT_RE.fullmatch(seg.name) or seg.is_symlink() or not seg.is_dir():
            continue
        if not ((seg / MANIFEST).is_file() or (seg / PARTS_DIR).is_dir()):
            continue
        started = datetime.strptime(seg.name[:16], SEGMENT_FORMAT).replace(tzinfo=UTC)
        out.append(StoredSegment(seg, started, _size(seg)))
    return sorted(out, key=lambda s: (s.started, s.path.name))


def expired(
    segments: list[StoredSegment],
    now: datetime,
    max_age_s: float | None,
    max_bytes: int | None,
    keep: Path | None = None,
) -> list[StoredSegment]:
    """What retention removes: segments older than ``max_age_s``, then the oldest until the
    rest fit in ``max_bytes``; never ``keep`` (the segment being written)."""
    doomed: list[StoredSegment] = []
    left = [s for s in segments if s.path != keep]
    if max_age_s is not None:
        old = [s for s in left if (now - s.started).total_seconds() > max_age_s]
        doomed += old
        left = [s for s in left if s not in old]
    if max_bytes is not None:
        current = sum(s.bytes for s in segments if s.path == keep)
        total = current + sum(s.bytes for s in left)
        for s in left:
            if total <= max_bytes:
                break
            doomed.append(s)
            total -= s.bytes
    return doomed


def remove_segments(doomed: list[StoredSegment]) -> int:
    """Remove ``doomed`` and the partition directories they leave empty; bytes freed."""
    freed = 0
    for s in doomed:
        shutil.rmtree(s.path, ignore_errors=True)
        freed += s.bytes
        for parent in (s.path.parent, s.path.parent.parent):
            try:
                parent.rmdir()  # only if empty
            except OSError:
                break
    return freed
