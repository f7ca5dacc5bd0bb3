"""What the running kernel offers the tracer: tracepoints (tracefs) and struct layouts (BTF).

Feature detection reads facts through the :class:`KernelEnv` protocol so that every probe
decision can be unit-tested against a fake kernel (5.10, 6.1, 6.12, 6.18 …) without root.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fptrace.probes.btf import BTFError, Member
from fptrace.probes.btf_facts import BTFFacts

TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class StructInfo(Protocol):
    """The subset of BTF that probe planning needs."""

    def has_func(self, name: str) -> bool: ...
    def typedef_id(self, name: str) -> int | None: ...
    def func_id(self, name: str) -> int | None: ...
    def struct_id(self, name: str) -> int | None: ...
    def struct_size(self, name: str) -> int | None: ...
    def members(self, name: str) -> dict[str, Member] | None: ...


class KernelEnv(Protocol):
    """Facts about a kernel: its tracepoints and, if it has BTF, its struct layouts."""

    release: str

    def events(self, group: str) -> Mapping[str, set[str]] | None:
        """Event name -> field names for a tracepoint group; None if tracefs is unreadable."""
        ...

    @property
    def btf(self) -> StructInfo | None: ...

    @property
    def btf_error(self) -> str | None: ...


def find_tracefs(mount: bool = False) -> Path | None:
    """The tracefs mount point; mounts it at /sys/kernel/tracing if asked and allowed."""
    for cand in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(cand, "events")):
            return Path(cand)
    if mount and os.geteuid() == 0:
        proc = subprocess.run(
            ["mount", "-t", "tracefs", "nodev", TRACEFS_CANDIDATES[0]],
            capture_output=True,
            check=False,
        )
        if proc.returncode == 0 and os.path.isdir(os.path.join(TRACEFS_CANDIDATES[0], "events")):
            return Path(TRACEFS_CANDIDATES[0])
    return None


def tracefs_mounts(mounts: str | None = None) -> list[str]:
    """Where tracefs is mounted (from /proc/self/mounts, or ``mounts``' text)."""
    if mounts is None:
        try:
            with open("/proc/self/mounts") as f:
                mounts = f.read()
        except OSError:
            return []
    return [line.split()[1] for line in mounts.splitlines() if line.split()[2:3] == ["tracefs"]]


def tracefs_problem(found: Path | None, mounts: list[str], euid: int) -> str:
    """Why tracefs cannot be used, in the user's terms ("" when it can): not mounted, or
    mounted but readable only by root (which non-root `doctor` used to call "not mounted")."""
    if found is not None:
        return ""
    if mounts:
        if euid != 0:
            return f"mounted at {mounts[0]} but readable only by root (running as uid {euid})"
        return f"mounted at {mounts[0]} but its events directory cannot be read"
    return "not mounted"


FORMAT_FIELD = re.compile(
    r"field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);\s*signed:(?P<sgn>\d)"
)


@dataclass(frozen=True)
class Field:
    """One field of a tracepoint record, as its tracefs ``format`` file describes it."""

    offset: int
    size: int
    signed: bool
    data_loc: bool  # ``__data_loc``: a u32 (length << 16 | offset) pointing into the record
    text: bool = False  # a char array (``char comm[16]``) or a ``__data_loc char[]`` string


def format_fields(text: str) -> dict[str, Field]:
    """Every field of a tracefs ``format`` (or ``header_page``) file, by name."""
    fields: dict[str, Field] = {}
    for m in FORMAT_FIELD.finditer(text):
        decl = m["decl"].strip()
        name = decl.split()[-1].split("[", 1)[0]
        data_loc = decl.startswith("__data_loc")
        is_text = re.search(r"\bchar\b", decl) is not None and "[" in decl  # char x[16], char[]
        fields[name] = Field(int(m["off"]), int(m["size"]), m["sgn"] == "1", data_loc, is_text)
    return fields


def parse_format_fields(text: str) -> set[str]:
    """Field names from a tracefs ``format`` file, without the ``common_`` ones."""
    return {name for name in format_fields(text) if not name.startswith("common_")}


class EventFormats(Mapping[str, set[str]]):
    """A tracepoint group's events; each format file is read when its fields are asked for.

    Why lazily: the planner only asks whether most events exist, and the ``syscalls`` group
    alone has ~700 format files (over a second to parse in an emulated lab guest).
    """

    def __init__(self, gdir: Path, names: list[str]) -> None:
        self._gdir = gdir
        self._names = names
        self._known = set(names)
        self._fields: dict[str, set[str]] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._known

    def __getitem__(self, name: str) -> set[str]:
        if name not in self._known:
            raise KeyError(name)
        if name not in self._fields:
            try:
                text = (self._gdir / name / "format").read_text()
            except OSError:
                text = ""  # listed but unreadable: an event without known fields
            self._fields[name] = parse_format_fields(text)
        return self._fields[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


@dataclass
class LiveKernel:
    """The running kernel, read through tracefs and /sys/kernel/btf/vmlinux."""

    tracefs: Path | None
    btf_path: Path = Path("/sys/kernel/btf/vmlinux")
    release: str = field(default_factory=lambda: os.uname().release)
    _btf: BTFFacts | None = None
    _btf_error: str | None = None
    _btf_loaded: bool = False

    def events(self, group: str) -> Mapping[str, set[str]] | None:
        if self.tracefs is None:
            return None
        gdir = self.tracefs / "events" / group
        try:
            names = sorted(p.name for p in gdir.iterdir() if p.is_dir())
        except FileNotFoundError:
            return {}
        except OSError:
            return None
        return EventFormats(gdir, names)

    def _load_btf(self) -> None:
        if self._btf_loaded:
            return
        self._btf_loaded = True
        try:
            facts = BTFFacts(self.btf_path.read_bytes())
            if not facts.cached:  # the first run on this build: a bad blob is reported here
                facts.parse()
            self._btf = facts
        except OSError as exc:
            self._btf_error = f"cannot read {self.btf_path}: {exc.strerror}"
        except BTFError as exc:
            self._btf_error = str(exc)

    @property
    def btf(self) -> BTFFacts | None:
        self._load_btf()
        return self._btf

    @property
    def btf_error(self) -> str | None:
        self._load_btf()
        return self._btf_error
