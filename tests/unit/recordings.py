"""Hand-made recordings with known answers, written through the real writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fptrace.recording.manifest import Manifest
from fptrace.recording.schema import FORMAT_NAME, FORMAT_VERSION
from fptrace.recording.writer import RecordingWriter
from tests.unit.test_xstate import AMD


def count(pid: int, event: str, n: int, xf: int = 0xA2, load: int | None = 1, **kw: Any):
    row = {
        "interval": 0,
        "task": pid,  # one task per pid unless a test says otherwise (kw)
        "pid": pid,
        "tgid": pid,
        "vso": f"v{pid}" if event not in ("signal_deliver", "xcomp_perm") else None,
        "event": event,
        "xfeatures": xf,
        "load_fpu": load,
        "arg": 0,
        "count": n,
        "first_ns": 0,
        "last_ns": 1000,
        "reason": None,
    }
    return row | kw


def task(pid: int, comm: str = "worker", switches: int = 100, **kw: Any) -> dict[str, Any]:
    row = {
        "task": pid,  # one task per pid unless a test says otherwise (kw)
        "pid": pid,
        "tgid": pid,
        "ppid": 1,
        "comm": comm,
        "cmdline": None,
        "cgroup": None,
        "switches": switches,
        "oncpu_ns": 5_000_000,
        "first_ns": 0,
        "exit_ns": None,
        "execs": 0,
        "forked": False,
    }
    return row | kw


def vso(pid: int, size: int = 2448, **kw: Any) -> dict[str, Any]:
    row = {
        "vso": f"v{pid}",
        "task": pid,  # one task per pid unless a test says otherwise (kw)
        "pid": pid,
        "tgid": pid,
        "size": size,
        "user_size": 2696,
        "xfeatures": 0x8E7,
        "user_xfeatures": 0x2E7,
        "xfd": 0,
        "xcomp_bv": 0x80000000000008E7,
        "layout_size": size,
        "is_valloc": False,
        "is_guest": False,
        "first_ns": 0,
        "prev_vso": None,
    }
    return row | kw


def manifest(**kw: Any) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "status": "complete",
        "duration_s": 2.0,
        "drops": {},
        "host": {"xstate": {"components": AMD.to_json()}},
    } | kw


def write(path: Path, counts=(), tasks=(), vsos=(), finalize: bool = True, **man: Any) -> Path:
    """A recording of these rows; ``man`` goes into the manifest as JSON (it may be one an
    older fptrace wrote: it is read, and so migrated, as any recording's)."""
    w = RecordingWriter(path)
    w.write_manifest(Manifest.from_json(manifest(status="recording")))
    w.append("counts", list(counts))
    w.append("vso", list(vsos))
    w.replace("tasks", list(tasks))
    if finalize:
        w.finalize(Manifest.from_json(manifest(**man)))
    return path
