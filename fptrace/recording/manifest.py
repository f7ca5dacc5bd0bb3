"""The recording's manifest, typed: what was traced, on what host, with which probes, and how
it went.

One definition for everyone: collectors build a :class:`Manifest`, the recording writer is
the only code that turns it into ``manifest.json`` (:meth:`Manifest.to_json`), and readers get
it back through :meth:`Manifest.from_json`, which validates every field it knows and
migrates older versions (in the spirit of memray's ``Metadata`` and pyperf's versioned
result files).  A recording is shared between people and may have been edited: a field of the
wrong type is refused with one line naming the file and the field, never an internal error
wherever it is first used.  Fields this version does not know are kept (``extra``) and
written back as they were.

Documented for users in docs/recording-format.md.
"""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from fptrace.errors import RecordingError
from fptrace.recording.schema import FORMAT_NAME, FORMAT_VERSION, MANIFEST
from fptrace.xstate import Layout, levels_of

CLOCK = "CLOCK_MONOTONIC; *_ns columns are ns since attach_monotonic_ns"

JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true/false",
}
T = TypeVar("T")


class _Fields:
    """One JSON object of a manifest, read field by field with its type checked.

    ``where`` is the object's dotted path, so that an error names the field exactly
    (``probes.attached[2].name``); ``null`` is "not known" and reads as the default.
    """

    def __init__(self, data: Any, where: str, source: str) -> None:
        self.where, self.source = where, source
        if not isinstance(data, dict):
            self.fail("", data, (dict,))
        self.data: dict[str, Any] = data

    def path(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where and name else self.where or name

    def fail(self, name: str, value: Any, types: tuple[type, ...]) -> None:
        want = " or ".join(JSON_NAMES[t] for t in types)
        got = "null" if value is None else JSON_NAMES.get(type(value), type(value).__name__)
        raise RecordingError(
            f"{self.source}: field {self.path(name)!r} is {got}, not {want}: the recording "
            "was damaged or edited; restore that field or record again"
        )

    def get(self, name: str, types: tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(name)
        if value is None:
            return default
        if not _is(value, types):
            self.fail(name, value, types)
        if not _in_range(value):
            self.out_of_range(name, value)
        return value

    def out_of_range(self, name: str, value: Any) -> None:
        raise RecordingError(
            f"{self.source}: field {self.path(name)!r} is {value!r}, out of range: the "
            "recording was damaged or edited; restore that field or record again"
        )

    def text(self, name: str, default: str | None = None) -> Any:
        return self.get(name, (str,), default)

    def whole(self, name: str, default: int | None = None) -> Any:
        return self.get(name, (int,), default)

    def number(self, name: str, default: float | None = None) -> Any:
        value = self.get(name, (int, float), default)
        return None if value is None else float(value)

    def flag(self, name: str, default: bool | None = None) -> Any:
        return self.get(name, (bool,), default)

    def obj(self, name: str) -> _Fields | None:
        value = self.data.get(name)
        return None if value is None else _Fields(value, self.path(name), self.source)

    def mapping(self, name: str) -> dict[str, Any]:
        """An object whose content fptrace passes on as it is (host facts, a calibration):
        every number in it, however deep, a 64-bit integer or a finite float."""
        value = dict(self.get(name, (dict,), {}))
        bad = _first_out_of_range(value, name)
        if bad is not None:
            self.out_of_range(*bad)
        return value

    def items(self, name: str, item: tuple[type, ...] | None = None) -> list[Any]:
        values = self.get(name, (list,), [])
        if item is not None:
            for i, value in enumerate(values):
                if not _is(value, item) or not _in_range(value):
                    self.fail(f"{name}[{i}]", value, item)
        return list(values)

    def objects(self, name: str, build: Any) -> tuple[Any, ...]:
        values = self.get(name, (list,), [])
        return tuple(
            build(_Fields(v, f"{self.path(name)}[{i}]", self.source)) for i, v in enumerate(values)
        )

    def rest(self, known: type) -> dict[str, Any]:
        """The fields a dataclass does not name, kept so that a rewrite loses nothing."""
        names = {f.name for f in fields(known)}
        return {k: v for k, v in self.data.items() if k not in names}


def _is(value: Any, types: tuple[type, ...]) -> bool:
    """JSON's types: true/false is not a number here."""
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def _in_range(value: Any) -> bool:
    """Numbers a 64-bit column can hold, and no NaN or infinity (Python's json reads both)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, int):
        return -(1 << 63) <= value < 1 << 64
    if isinstance(value, float):
        return math.isfinite(value)
    return True


def _first_out_of_range(value: Any, path: str) -> tuple[str, Any] | None:
    if isinstance(value, dict):
        for k, v in value.items():
            if (bad := _first_out_of_range(v, f"{path}.{k}")) is not None:
                return bad
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if (bad := _first_out_of_range(v, f"{path}[{i}]")) is not None:
                return bad
    elif not _in_range(value):
        return path, value
    return None


def _json(value: Any) -> Any:
    """A section (or a value in one) as JSON: dataclasses by field, ``extra`` merged in,
    tuples as lists."""
    if hasattr(value, "__dataclass_fields__"):
        out = {
            f.name: _json(getattr(value, f.name))
            for f in fields(value)
            if f.name != "extra" and getattr(value, f.name) is not None
        }
        return out | dict(getattr(value, "extra", {}))
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Target:
    """What was traced: a command fptrace started, running pids, the whole system, or the
    benchmarks of ``fptrace bench``."""

    mode: str  # command | pids | cgroup | system | bench
    command: tuple[str, ...] | None = None
    pids: tuple[int, ...] | None = None
    follow_children: bool | None = None
    exit_code: int | None = None  # the command's; None when fptrace did not start one
    cgroups: tuple[str, ...] | None = None  # --cgroup: v2 paths (and what is below them)

    @classmethod
    def read(cls, f: _Fields) -> Target:
        command, pids = f.data.get("command"), f.data.get("pids")
        return cls(
            mode=f.text("mode", "unknown"),
            command=None if command is None else tuple(f.items("command", (str,))),
            pids=None if pids is None else tuple(f.items("pids", (int,))),
            follow_children=f.flag("follow_children"),
            exit_code=f.whole("exit_code"),
            cgroups=None if f.data.get("cgroups") is None else tuple(f.items("cgroups", (str,))),
        )


@dataclass(frozen=True)
class Probe:
    """One probe of the plan: attached (``reason`` empty) or skipped (``reason`` says why)."""

    name: str
    kind: str
    required: bool = False
    reason: str = ""

    @classmethod
    def read(cls, f: _Fields) -> Probe:
        name = f.text("name")
        if name is None:
            f.fail("name", None, (str,))
        return cls(
            name=name,
            kind=f.text("kind", "unknown"),
            required=f.flag("required", False),
            reason=f.text("reason", ""),
        )


@dataclass(frozen=True)
class Probes:
    attached: tuple[Probe, ...] = ()
    skipped: tuple[Probe, ...] = ()
    notes: tuple[str, ...] = ()
    program: Mapping[str, Any] | None = None  # BCC's compiled object: {"cached", "key"}

    @classmethod
    def read(cls, f: _Fields) -> Probes:
        return cls(
            attached=f.objects("attached", Probe.read),
            skipped=f.objects("skipped", Probe.read),
            notes=tuple(f.items("notes", (str,))),
            program=f.mapping("program") or None,
        )

    def names(self) -> set[str]:
        return {p.name for p in self.attached}


@dataclass(frozen=True)
class KernelId:
    release: str | None = None
    version: str | None = None
    machine: str | None = None

    @classmethod
    def read(cls, f: _Fields) -> KernelId:
        return cls(f.text("release"), f.text("version"), f.text("machine"))


def _check_host_facts(f: _Fields) -> None:
    """The host facts fptrace computes with or compares (the rest is passed on as it is)."""
    if (cpu := f.obj("cpu")) is not None:
        for name in ("model_name", "vendor", "family", "model", "stepping", "microcode"):
            cpu.text(name)
        cpu.items("fpu_flags", (str,))
        cpu.items("flags", (str,))
        cpu.whole("logical_cpus")
    if (config := f.obj("kernel_config")) is not None:
        for name in ("source", "sha256", "copy"):
            config.text(name)
        if (options := config.obj("fpu_options")) is not None:
            for name in options.data:
                options.text(name)
    if (xstate := f.obj("xstate")) is not None:
        xstate.objects("components", _check_component)
        xstate.text("format")
        xstate.text("source")
        for name in ("xsaves", "xsavec", "xsaveopt", "xgetbv1", "xfd"):
            xstate.flag(name)
        for name in ("enabled_features", "kernel_context_size", "compacted_size_enabled"):
            xstate.whole(name)
        for name in ("standard_size_enabled", "standard_size_max"):
            xstate.whole(name)
        for name in ("supported_user_features", "supported_supervisor_features"):
            xstate.whole(name)


def _check_component(f: _Fields) -> None:
    """One xstate component of ``host.xstate.components`` (CPUID leaf 0xD, as collected):
    the layout every byte figure is computed from."""
    for name, low, high in (("index", 0, 63), ("size", 0, 1 << 20), ("offset", 0, 1 << 20)):
        value = f.whole(name, 0 if name == "offset" else None)
        if value is None:
            f.fail(name, value, (int,))
        if not low <= value <= high:
            f.out_of_range(name, value)
    f.text("name")
    for flag in ("supervisor", "align64", "xfd"):
        f.flag(flag)


@dataclass(frozen=True)
class Host:
    """The machine: kernel, boot line, kernel config, CPU and its xstate layout.

    ``cpu``, ``xstate`` and ``kernel_config`` are facts as the kernel and CPUID gave them
    (collectors/host.py names each); they are passed on whole.
    """

    hostname: str | None = None
    kernel: KernelId = field(default_factory=KernelId)
    boot_cmdline: str | None = None
    kernel_config: Mapping[str, Any] = field(default_factory=dict)
    cpu: Mapping[str, Any] = field(default_factory=dict)
    xstate: Mapping[str, Any] = field(default_factory=dict)
    at_minsigstksz: int | None = None
    dmesg_fpu_lines: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, f: _Fields) -> Host:
        kernel = f.obj("kernel")
        _check_host_facts(f)
        return cls(
            hostname=f.text("hostname"),
            kernel=KernelId.read(kernel) if kernel else KernelId(),
            boot_cmdline=f.text("boot_cmdline"),
            kernel_config=f.mapping("kernel_config"),
            cpu=f.mapping("cpu"),
            xstate=f.mapping("xstate"),
            at_minsigstksz=f.whole("at_minsigstksz"),
            dmesg_fpu_lines=tuple(f.items("dmesg_fpu_lines", (str,))),
            extra=f.rest(cls),
        )


@dataclass(frozen=True)
class Events:
    """How many events were counted, and with ``--events`` how many were kept one by one."""

    counted: int | None = None
    recorded: int | None = None  # rows in events.parquet (None: not recorded)
    ring_bytes: int | None = None  # the BPF ring's size; 0 for the ftrace backend
    lost: int | None = None  # events the ring or ftrace's buffer had no room for

    @classmethod
    def read(cls, f: _Fields) -> Events:
        return cls(f.whole("counted"), f.whole("recorded"), f.whole("ring_bytes"), f.whole("lost"))


@dataclass(frozen=True)
class Drains:
    """How late the recorder's drains came (a busy machine delays them)."""

    scheduled: int = 0
    late_median_s: float | None = None
    late_max_s: float | None = None
    later_than_interval: int = 0

    @classmethod
    def read(cls, f: _Fields) -> Drains:
        return cls(
            f.whole("scheduled", 0),
            f.number("late_median_s"),
            f.number("late_max_s"),
            f.whole("later_than_interval", 0),
        )


@dataclass(frozen=True)
class LoadFpu:
    """How the load_fpu column (TIF_NEED_FPU_LOAD) is known."""

    tif_bit: int | None = None
    method: str | None = None

    @classmethod
    def read(cls, f: _Fields) -> LoadFpu:
        return cls(f.whole("tif_bit"), f.text("method"))


@dataclass(frozen=True)
class BenchItem:
    name: str
    op: str = ""
    mode: str = ""

    @classmethod
    def read(cls, f: _Fields) -> BenchItem:
        return cls(f.text("name", "?"), f.text("op", ""), f.text("mode", ""))


@dataclass(frozen=True)
class Bench:
    """What ``fptrace bench`` ran: the benchmarks, what it skipped (and why), its settings."""

    benchmarks: tuple[BenchItem, ...] = ()
    skipped: tuple[Mapping[str, Any], ...] = ()
    duration_s: float | None = None  # the benchmarks' own time (under --record: untraced)
    extra: Mapping[str, Any] = field(default_factory=dict)  # reps, quick, states, warmup…

    @classmethod
    def read(cls, f: _Fields) -> Bench:
        return cls(
            benchmarks=f.objects("benchmarks", BenchItem.read),
            skipped=tuple(f.items("skipped", (dict,))),
            duration_s=f.number("duration_s"),
            extra=f.rest(cls),
        )


@dataclass(frozen=True)
class Lab:
    """Where ``fptrace lab`` ran this recording: the combination, kernel spec, boot options."""

    combination: str | None = None
    kernel_spec: str | None = None
    append: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # machine, root filesystem…

    @classmethod
    def read(cls, f: _Fields) -> Lab:
        return cls(f.text("combination"), f.text("kernel_spec"), f.text("append", ""), f.rest(cls))


@dataclass(frozen=True)
class Segment:
    """``fptrace agent``: one rotation of a run that goes on; the probes stayed attached
    across rotations, so consecutive segments' counts add up with nothing lost or doubled."""

    index: int = 0  # 0 for the agent's first recording
    agent_started_at: str | None = None  # the agent's start (UTC, ISO 8601)
    previous: str | None = None  # the previous segment's directory name
    parts_dropped: int = 0  # drains not written (full disk): counted, not in the tables

    @classmethod
    def read(cls, f: _Fields) -> Segment:
        return cls(
            f.whole("index", 0),
            f.text("agent_started_at"),
            f.text("previous"),
            f.whole("parts_dropped", 0),
        )


@dataclass(frozen=True)
class RecordCheck:
    """``bench --record``: each ping-pong task's traced saves against its round trips."""

    tasks_checked: int = 0
    max_abs_diff: int = 0
    tolerance: int = 0
    ok: bool = False

    @classmethod
    def read(cls, f: _Fields) -> RecordCheck:
        return cls(
            f.whole("tasks_checked", 0),
            f.whole("max_abs_diff", 0),
            f.whole("tolerance", 0),
            f.flag("ok", False),
        )


@dataclass(frozen=True)
class Manifest:
    """``manifest.json``: a recording's facts that are not tables."""

    target: Target
    host: Host
    probes: Probes = field(default_factory=Probes)
    status: str = "recording"  # recording | complete
    kind: str = "recording"  # recording | bench
    format_version: int = FORMAT_VERSION
    fptrace_version: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    command_line: tuple[str, ...] = ()
    backend: str | None = None  # bcc | ftrace
    clock: str = CLOCK
    interval_s: float = 1.0
    duration_s: float | None = None
    startup_s: float | None = None
    intervals: int | None = None
    attach_monotonic_ns: int | None = None
    events: Events = field(default_factory=Events)
    drops: Mapping[str, int] = field(default_factory=dict)
    drains: Drains | None = None
    load_fpu: LoadFpu | None = None
    bench: Bench | None = None
    lab: Lab | None = None
    calibration: Mapping[str, Any] | None = None  # the cost table `bench` measured
    record_check: RecordCheck | None = None  # `bench --record`: traced vs counted
    segment: Segment | None = None  # `fptrace agent`: which rotation this is
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, source: Path | str = MANIFEST) -> Manifest:
        """Validate and migrate a parsed manifest.json (``source`` names it in errors)."""
        src = str(source)
        if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
            raise RecordingError(
                f"{src} is not an fptrace manifest (format is not {FORMAT_NAME!r})"
            )
        version = data.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise RecordingError(f"{src} has no format_version")
        if version > FORMAT_VERSION:
            raise RecordingError(
                f"{src} is format version {version}, newer than this fptrace reads "
                f"({FORMAT_VERSION}): upgrade fptrace"
            )
        f = _Fields(migrate(dict(data)), "", src)

        def section(name: str, build: Any, default: Any = None) -> Any:
            sub = f.obj(name)
            return default if sub is None else build(sub)

        drops = f.mapping("drops")
        for name, value in drops.items():
            if value is not None and not (_is(value, (int,)) and 0 <= value < 1 << 63):
                f.fail(f"drops.{name}", value, (int,))
        return cls(
            target=section("target", Target.read, Target("unknown")),
            host=section("host", Host.read, Host()),
            probes=section("probes", Probes.read, Probes()),
            status=f.text("status", "recording"),
            kind=f.text("kind", "recording"),
            format_version=version,
            fptrace_version=f.text("fptrace_version"),
            started_at=f.text("started_at"),
            ended_at=f.text("ended_at"),
            command_line=tuple(f.items("command_line", (str,))),
            backend=f.text("backend"),
            clock=f.text("clock", CLOCK),
            interval_s=f.number("interval_s", 1.0),
            duration_s=f.number("duration_s"),
            startup_s=f.number("startup_s"),
            intervals=f.whole("intervals"),
            attach_monotonic_ns=f.whole("attach_monotonic_ns"),
            events=section("events", Events.read, Events()),
            drops={k: v for k, v in drops.items() if v is not None},
            drains=section("drains", Drains.read),
            load_fpu=section("load_fpu", LoadFpu.read),
            bench=section("bench", Bench.read),
            lab=section("lab", Lab.read),
            segment=section("segment", Segment.read),
            calibration=f.mapping("calibration") or None,
            record_check=section("record_check", RecordCheck.read),
            extra={k: v for k, v in f.rest(cls).items() if k != "format"},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as manifest.json (``null`` fields are left out: absent and
        null both mean "not known")."""
        return {"format": FORMAT_NAME} | _json(self)

    def value(self, dotted: str) -> Any:
        """A field by its dotted JSON path (``host.kernel.release``), or None: the one getter
        behind ``compare``'s and ``fleet``'s grouping by any manifest key."""
        node: Any = self.to_json()
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    def with_(self, **changes: Any) -> Manifest:
        return replace(self, **changes)

    def joined_with_trace(self, trace: Manifest, check: RecordCheck) -> Manifest:
        """A bench result's manifest joined with that of its trace (``bench --record``): the
        trace's probes, drops and time span (rates are per traced second); the benchmarks'
        own duration stays under ``bench``."""
        bench = replace(self.bench or Bench(), duration_s=self.duration_s)
        return replace(
            self,
            bench=bench,
            probes=trace.probes,
            drops=trace.drops,
            load_fpu=trace.load_fpu,
            events=trace.events,
            attach_monotonic_ns=trace.attach_monotonic_ns,
            interval_s=trace.interval_s,
            duration_s=trace.duration_s,
            intervals=trace.intervals,
            record_check=check,
        )

    @property
    def total_drops(self) -> int:
        return sum(self.drops.values())

    @property
    def layout(self) -> Layout | None:
        """The traced CPU's xstate layout (CPUID leaf 0xD, as recorded), or None."""
        comps = self.host.xstate.get("components")
        return Layout.from_json(comps) if comps else None

    @property
    def cpu_levels(self) -> list[str] | None:
        """The vector levels the traced CPU has (from the kernel's enabled xfeatures), or
        None when the recording does not say."""
        enabled = self.host.xstate.get("enabled_features")
        if isinstance(enabled, int) and not isinstance(enabled, bool):
            return levels_of(enabled)
        return None


# A manifest is a few kB (a lab recording's ~15 kB).  Bigger is not one fptrace wrote; and
# a symlink to /dev/zero used to be read until MemoryError.
MANIFEST_MAX_BYTES = 4 << 20


def read_manifest(path: Path) -> Manifest:
    """A manifest.json file, validated and migrated: a regular file of a sane size."""
    try:
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise RecordingError(f"{path} is not a regular file: not an fptrace manifest")
            raw = f.read(MANIFEST_MAX_BYTES + 1)
    except OSError as exc:
        raise RecordingError(f"{path} is unreadable: {exc.strerror or exc}") from exc
    if len(raw) > MANIFEST_MAX_BYTES:
        raise RecordingError(
            f"{path} is larger than {MANIFEST_MAX_BYTES >> 20} MiB: not an fptrace manifest"
        )
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting thousands deep
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise RecordingError(f"{path} is not JSON fptrace can read: {what}") from None
    return Manifest.from_json(data, path)


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Older manifests in today's shape, so that readers handle one: ``events`` was a bare
    count without ``--events`` and an object (without the count) with it."""
    events = data.get("events")
    if isinstance(events, int) and not isinstance(events, bool):
        data["events"] = {"counted": events}
    return data
