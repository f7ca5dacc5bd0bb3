"""The typed manifest (recording/manifest.py): what it reads, refuses, keeps and writes."""

from __future__ import annotations

import ast
import copy
import json
from pathlib import Path

import pytest

import fptrace
from fptrace.errors import RecordingError
from fptrace.recording.manifest import Manifest, Probe, read_manifest

# A manifest as `fptrace record` writes one (trimmed), written out by hand: what a reader of
# the documented format expects, not what the code under test produced.
WRITTEN = {
    "format": "fptrace-recording",
    "format_version": 1,
    "fptrace_version": "0.1.0",
    "kind": "recording",
    "status": "complete",
    "backend": "bcc",
    "clock": "CLOCK_MONOTONIC; *_ns columns are ns since attach_monotonic_ns",
    "started_at": "2026-12-05T07:56:36.994908+00:00",
    "ended_at": "2026-12-05T07:56:37.226926+00:00",
    "command_line": ["fptrace", "record", "--", "/bin/true"],
    "interval_s": 1.0,
    "duration_s": 0.205,
    "startup_s": 0.06,
    "intervals": 1,
    "attach_monotonic_ns": 48316086441980,
    "target": {
        "mode": "command",
        "command": ["/bin/true"],
        "follow_children": True,
        "exit_code": 0,
    },
    "probes": {
        "attached": [
            {
                "name": "x86_fpu:x86_fpu_regs_deactivated",
                "kind": "tp_btf",
                "required": True,
                "reason": "",
            }
        ],
        "skipped": [
            {
                "name": "x86_fpu:x86_fpu_copy_src",
                "kind": "raw_tracepoint",
                "required": False,
                "reason": "not in this kernel",
            }
        ],
        "notes": ["TIF_NEED_FPU_LOAD is bit 19"],
        "program": {"cached": True, "key": "79b7b407"},
    },
    "host": {
        "hostname": "vm",
        "kernel": {"release": "6.18.44", "version": "#1 SMP", "machine": "x86_64"},
        "boot_cmdline": "console=ttyS0 quiet",
        "kernel_config": {"source": "/proc/config.gz", "fpu_options": {"CONFIG_HZ": "250"}},
        "cpu": {"vendor": "AuthenticAMD", "fpu_flags": ["avx", "avx2"]},
        "xstate": {
            "format": "compacted",
            "components": [{"index": 2, "name": "AVX", "size": 256, "offset": 576}],
        },
        "at_minsigstksz": 3376,
        "dmesg_fpu_lines": ["x86/fpu: Supporting XSAVE feature 0x001"],
    },
    "events": {"counted": 6},
    "drops": {"counts_map_full": 0, "lost_events": 0},
    "drains": {
        "scheduled": 2,
        "late_median_s": 0.001,
        "late_max_s": 0.002,
        "later_than_interval": 0,
    },
    "load_fpu": {"tif_bit": 19, "method": "calibrated"},
}


def test_a_written_manifest_reads_typed_and_writes_back_the_same() -> None:
    m = Manifest.from_json(copy.deepcopy(WRITTEN))
    assert m.target.command == ("/bin/true",) and m.target.exit_code == 0
    assert m.probes.attached == (Probe("x86_fpu:x86_fpu_regs_deactivated", "tp_btf", True, ""),)
    assert m.probes.skipped[0].reason == "not in this kernel"
    assert m.host.kernel.release == "6.18.44" and m.host.xstate["format"] == "compacted"
    assert m.events.counted == 6 and m.events.lost is None
    assert m.drains is not None and m.drains.late_max_s == 0.002
    assert m.load_fpu is not None and m.load_fpu.tif_bit == 19
    assert m.bench is None and m.lab is None and m.record_check is None
    assert m.to_json() == WRITTEN


def test_fields_it_does_not_know_are_kept() -> None:
    """A manifest with a field of a later minor change (or a user's note) loses nothing when
    fptrace rewrites it (lab annotates recordings this way)."""
    data = copy.deepcopy(WRITTEN) | {"site": {"rack": 7}}
    data["host"]["bios"] = "1.2"
    data["lab"] = {"combination": "6.1", "kernel_spec": "debian:6.1", "append": "", "root": "x"}
    m = Manifest.from_json(data)
    assert m.extra == {"site": {"rack": 7}} and m.host.extra == {"bios": "1.2"}
    assert m.lab is not None and m.lab.extra == {"root": "x"}
    assert m.to_json() == data


@pytest.mark.parametrize(
    ("path", "value", "named"),
    [
        (("target", "command"), "ls -l", "'target.command' is a string, not a list"),
        (("target", "command"), ["ls", 5], "'target.command[1]' is a whole number, not a string"),
        (("target", "exit_code"), "0", "'target.exit_code' is a string"),
        (("probes", "attached"), {"a": 1}, "'probes.attached' is an object, not a list"),
        (("probes", "attached"), [5], "'probes.attached[0]' is a whole number, not an object"),
        (("probes", "attached"), [{"kind": "x"}], "'probes.attached[0].name' is null"),
        (("host", "kernel", "release"), 6, "'host.kernel.release' is a whole number"),
        (("host", "xstate", "components"), [1], "'host.xstate.components[0]' is a whole"),
        (("events", "counted"), 1.5, "'events.counted' is a number, not a whole number"),
        (("drains", "late_max_s"), "slow", "'drains.late_max_s' is a string"),
        (("load_fpu",), [], "'load_fpu' is a list, not an object"),
        (("status",), 1, "'status' is a whole number, not a string"),
    ],
)
def test_a_field_of_the_wrong_shape_is_named(path: tuple[str, ...], value, named: str) -> None:
    data = copy.deepcopy(WRITTEN)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(RecordingError) as err:
        Manifest.from_json(data, "r/manifest.json")
    assert named in str(err.value) and str(err.value).startswith("r/manifest.json: field")
    assert "\n" not in str(err.value)


def test_a_probe_without_required_or_reason_reads_with_the_defaults() -> None:
    data = copy.deepcopy(WRITTEN)
    data["probes"]["attached"] = [{"name": "x86_fpu:x86_fpu_dropped"}]
    (probe,) = Manifest.from_json(data).probes.attached
    assert probe == Probe("x86_fpu:x86_fpu_dropped", "unknown", False, "")


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"format": "other"}, "not an fptrace manifest"),
        ([1, 2], "not an fptrace manifest"),
        ({"format": "fptrace-recording"}, "has no format_version"),
        ({"format": "fptrace-recording", "format_version": True}, "has no format_version"),
        ({"format": "fptrace-recording", "format_version": 99}, "upgrade fptrace"),
    ],
)
def test_what_is_not_a_manifest_of_this_version(data, says: str) -> None:
    with pytest.raises(RecordingError, match=says):
        Manifest.from_json(data)


def test_read_manifest_names_a_file_that_is_not_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{nope")
    with pytest.raises(RecordingError, match="not JSON"):
        read_manifest(tmp_path / "manifest.json")
    (tmp_path / "manifest.json").write_text(json.dumps(WRITTEN))
    assert read_manifest(tmp_path / "manifest.json").status == "complete"


def test_value_reads_a_dotted_key() -> None:
    m = Manifest.from_json(copy.deepcopy(WRITTEN))
    assert m.value("host.kernel.release") == "6.18.44"
    assert m.value("host.kernel_config.fpu_options.CONFIG_HZ") == "250"
    assert m.value("host.nothing.here") is None and m.value("status") == "complete"


def test_only_the_recording_writer_writes_a_manifest() -> None:
    """Every manifest.json goes through RecordingWriter (or amend_manifest beside it), and
    every file of a recording through recording/outdir.py: no other module writes JSON into
    a recording or opens its directory for writing."""
    root = Path(fptrace.__file__).parent
    writers: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = None
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            elif isinstance(node, ast.Name):
                name = node.id
            if name in ("_write_json", "OutputDir", "written_whole"):
                writers.setdefault(name, set()).add(str(path.relative_to(root)))
    assert writers["_write_json"] == {"recording/writer.py"}
    assert writers["OutputDir"] | writers["written_whole"] <= {
        "recording/writer.py",
        "recording/outdir.py",
        "commands/common.py",  # report and export files (the same whole-or-nothing writer)
    }


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"format": "fptrace-recording", "format_version": 1, "duration_s": NaN}', "out of range"),
        (
            '{"format": "fptrace-recording", "format_version": 1, "intervals": 1' + "0" * 30 + "}",
            "out of range",
        ),
        (" " * (5 << 20), "larger than 4 MiB"),
    ],
)
def test_a_manifest_that_would_break_a_reader_is_refused(tmp_path: Path, content, says) -> None:
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(RecordingError, match=says):
        read_manifest(tmp_path / "manifest.json")


def test_a_manifest_that_is_a_device_is_not_read(tmp_path: Path) -> None:
    """A manifest symlinked to /dev/zero was read until MemoryError."""
    (tmp_path / "manifest.json").symlink_to("/dev/zero")
    with pytest.raises(RecordingError, match="not a regular file"):
        read_manifest(tmp_path / "manifest.json")
