"""CLI behaviour that needs no kernel: one-line errors with exit codes, no tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from fptrace import cli
from fptrace.collectors import options
from fptrace.collectors import record as record_module
from fptrace.commands import COMMANDS
from tests.unit.recordings import count, task, vso, write


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_record_as_non_root_says_sudo(capsys, monkeypatch) -> None:
    monkeypatch.setattr(options.os, "geteuid", lambda: 1000)
    code, _, err = run(capsys, "record", "--", "true")
    assert code == 77 and "sudo" in one_line_error(err)


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["record"], 66, "nothing to trace"),
        (["record", "-p", "999999999"], 66, "no process with PID 999999999"),
        (["record", "--", "no-such-command-xyz"], 66, "command not found: no-such-command-xyz"),
        (["record", "-p", "1", "--", "true"], 66, "only one of a command, -p"),
        (["record", "--cgroup", "/a", "-a"], 66, "got --cgroup and -a"),
        (["record", "-p", "x1"], 2, "not a PID list"),
        (["record", "-d", "-3", "--", "true"], 2, "must be positive"),
        (["record", "--events", "--ring-mb", "0", "--", "true"], 2, "--ring-mb: 0 is out of range"),
        (["record", "--ring-mb", "-1", "--", "true"], 2, "use 1 to 2048 MiB"),
        (["record", "--ring-mb", "100000", "--", "true"], 2, "--ring-mb: 100000 is out of range"),
        (["record", "--interval", "0.001", "--", "true"], 2, "use 0.01 to 3600 seconds"),
        (["record", "--interval", "7200", "--", "true"], 2, "--interval 7200 is out of range"),
        (["record", "-d", "nan", "--", "true"], 2, "must be positive"),
        (["lab", "record", "--kernel", "debian:6.1", "--smp", "0", "--", "true"], 2, "use 1 to 64"),
        (["lab", "record", "--kernel", "x", "--memory", "lots", "--", "true"], 2, "memory size"),
        (["lab", "record", "--kernel", "x", "--timeout", "-1", "--", "true"], 2, "positive"),
        (["bench", "--reps", "5000"], 2, "use 2 to 1000"),
        (["compare", "a", "b", "--fail-on-increase", "-5"], 2, "must be zero or more"),
        (["frobnicate"], 2, "invalid choice"),
    ],
)
def test_bad_input_gets_one_line_and_an_exit_code(capsys, monkeypatch, argv, code, text):
    monkeypatch.setattr(options.os, "geteuid", lambda: 0)
    got, _, err = run(capsys, *argv)
    assert got == code
    assert text in one_line_error(err)


def test_debug_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setattr(options.os, "geteuid", lambda: 1000)
    with pytest.raises(Exception, match="sudo"):
        cli.main(["--debug", "record", "--", "true"])


def test_summary_of_a_recording_and_of_garbage(capsys, tmp_path: Path) -> None:
    path = write(
        tmp_path / "r",
        [count(5, "regs_deactivated", 10, load=None), count(5, "regs_activated", 10)],
        [task(5, comm="[b]x[/b]")],
        [vso(5)],
    )
    code, out, _ = run(capsys, "report", "-f", "text", str(path))
    assert code == 0
    assert "[b]x[/b]" in out  # shown literally, not as rich markup
    assert "2,448 B" in out
    code, _, err = run(capsys, "report", str(tmp_path))
    assert code == 65 and "not an fptrace recording" in one_line_error(err)


def test_help_teaches(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["record", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "sudo fptrace record -- " in out


def test_missing_bcc_names_the_package(monkeypatch, tmp_path) -> None:
    """Without BCC a kernel whose compiled probes are not cached cannot be traced: say why."""
    import builtins

    from fptrace.collectors import bpf_session
    from fptrace.errors import EnvironmentProblem
    from fptrace.probes.plan import ProbePlan

    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))  # an empty cache: nothing compiled
    monkeypatch.delenv("FPTRACE_CACHE_SPILL", raising=False)
    real_import = builtins.__import__

    def no_bcc(name, *args, **kwargs):
        if name == "bcc" or name.startswith("bcc."):
            raise ImportError("No module named 'bcc'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_bcc)
    with pytest.raises(EnvironmentProblem, match="python3-bpfcc"):
        bpf_session.BpfSession(ProbePlan(), None)


def test_unmountable_tracefs_is_one_line_and_writes_nothing(capsys, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(options.os, "geteuid", lambda: 0)
    monkeypatch.setattr(record_module, "find_tracefs", lambda mount=False: None)
    out = tmp_path / "rec"
    code, _, err = run(capsys, "record", "-o", str(out), "--", "true")
    assert code == 69 and "mount -t tracefs" in one_line_error(err)
    assert not out.exists()


@pytest.mark.parametrize(
    ("argv", "code", "text"),
    [
        (["lab"], 2, "name an action: record, list or clean"),
        (["lab", "record", "-o", "x", "--", "true"], 2, "--kernel"),
        (["lab", "record", "-k", "debian:woody", "--", "true"], 2, "unknown kernel spec"),
        (["lab", "record", "-k", "debian:6.1"], 2, "no command"),
        (["lab", "record", "-k", "debian:6.1", "--no-default-boot", "--", "true"], 2, "--append"),
        (["lab", "record", "-k", "debian:6.1", "--record", "'x", "--", "true"], 2, "--record"),
        (["workload", "nope"], 2, "invalid choice"),
    ],
)
def test_lab_bad_input(capsys, tmp_path, monkeypatch, argv, code, text) -> None:
    monkeypatch.chdir(tmp_path)
    got, _, err = run(capsys, *argv)
    assert got == code and text in one_line_error(err)
    assert not any(tmp_path.iterdir())  # nothing created for a refused command


def test_workload_path_prints_the_built_binary(capsys, tmp_path, monkeypatch) -> None:
    import shutil

    from tests.conftest import skip_or_fail

    if shutil.which("gcc") is None:
        skip_or_fail("gcc is not installed (the workloads are built with it)")
    monkeypatch.setenv("FPTRACE_CACHE", str(tmp_path))
    code, out, _ = run(capsys, "workload", "--path", "pingpong")
    assert code == 0 and Path(out.strip()).name == "pingpong" and Path(out.strip()).exists()


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("host", 5, "'host' is a whole number, not an object"),
        ("drops", {"lost_events": "many"}, "'drops.lost_events' is a string"),
        ("duration_s", "long", "'duration_s' is a string, not a whole number or a number"),
        ("host", {"xstate": []}, "'host.xstate' is a list, not an object"),
        ("intervals", True, "'intervals' is true/false"),
        ("events", [1], "'events' is a list"),
    ],
)
def test_a_manifest_field_of_the_wrong_type_is_named_in_one_line(
    capsys, tmp_path: Path, field: str, value: object, named: str
) -> None:
    """A recording is shared and can be edited: a wrong-typed manifest field used to fail as
    "internal error: AttributeError" (issue #14); every command that reads one says which."""
    import json

    path = write(tmp_path / "r", [count(5, "regs_deactivated", 10)], [task(5)], [vso(5)])
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[field] = value
    (path / "manifest.json").write_text(json.dumps(manifest))
    for argv in (["report", "-f", "text"], ["report", "-f", "json"], ["export", "-f", "csv"]):
        code, _, err = run(capsys, *argv, str(path))
        line = one_line_error(err)
        assert code == 65 and "manifest.json" in line and named in line, line


@pytest.mark.parametrize("command", COMMANDS)
def test_help_prints_percent_signs_as_written(capsys, command: str) -> None:
    """argparse %-formats argument help but not descriptions and epilogs: a "95%%" there
    printed as such."""
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert "%%" not in out and "usage: fptrace " + command in out


@pytest.mark.parametrize("command", ["export", "report"])
def test_an_output_that_fails_midway_is_not_left_truncated(capsys, monkeypatch, tmp_path, command):
    """A report or export onto a full disk used to leave a truncated file behind."""
    import errno

    from fptrace.reports import export, terminal

    path = write(tmp_path / "r", [count(5, "regs_deactivated", 10)], [task(5)], [vso(5)])
    (tmp_path / "out").write_text("the previous output")

    def full(rec, out, *args):
        getattr(out, "file", out).write("half a line")  # a file, or a Console on one
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setitem(export.WRITERS, "csv", full)
    monkeypatch.setattr(terminal, "render_report", full)
    argv = ["export", "-f", "csv"] if command == "export" else ["report", "-f", "text"]
    code, _, err = run(capsys, *argv, str(path), "-o", str(tmp_path / "out"))
    assert code == 74 and "disk is full" in one_line_error(err)
    assert (tmp_path / "out").read_text() == "the previous output"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r"]


def test_output_where_nothing_can_be_written_is_exit_74(capsys) -> None:
    """`-o` into an unwritable place was an internal PermissionError (exit 70)."""
    code, _, err = run(capsys, "bench", "signal", "-o", "/proc/fptrace-nope/r")
    assert code == 74 and "cannot write /proc/fptrace-nope" in one_line_error(err)
