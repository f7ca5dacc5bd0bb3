"""Shared test policy: on this project's machines (CI, FPTRACE_NO_SKIP=1) a skip is a failure.

Users' machines may lack root, BCC, tracefs or perf; there a test skips with its reason.
One exception everywhere: a test of a CPU feature (AVX-512, AMX) the processor does not
have skips with a reason starting "hardware: " — no install step can provide it.  At the
end of a run one line names the hardware-dependent checks that did not run here.
"""

from __future__ import annotations

import os

import pytest

NO_SKIP = os.environ.get("FPTRACE_NO_SKIP") == "1"
HARDWARE = "hardware: "


def skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; fail where the environment promises everything."""
    if NO_SKIP:
        pytest.fail(f"would skip, but FPTRACE_NO_SKIP=1: {reason}", pytrace=False)
    pytest.skip(reason)


def skip_hardware(reason: str) -> None:
    """The CPU lacks what the test is about: a skip even where skips are failures."""
    pytest.skip(HARDWARE + reason)


def require_level(level: str) -> None:
    """Skip (hardware:) unless the tests may use vector level ``level`` on this CPU."""
    from tests import hardware

    cpu = hardware.cpu()
    if not cpu.has(level):
        capped = cpu.hardware_has(level) and f" (FPTRACE_TEST_LEVEL={hardware.cap()})"
        skip_hardware(f"CPU lacks {hardware.LEVEL_NAMES[level]}{capped or ''}")


def skip_reason(report: pytest.TestReport) -> str:
    """The reason a skipped test gave, without pytest's "Skipped: " prefix."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return text.removeprefix("Skipped: ")


def is_hardware_skip(report: pytest.TestReport) -> bool:
    return skip_reason(report).startswith(HARDWARE)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """One line naming the hardware-dependent checks that did not run on this CPU."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if is_hardware_skip(r)]
    if skipped:
        names = ", ".join(f"{r.nodeid.split('::')[-1]} ({skip_reason(r)})" for r in skipped)
        terminalreporter.write_line(f"hardware checks not run on this CPU: {names}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: any other skip (e.g. a bare pytest.skip) fails a no-skip run."""
    if not NO_SKIP:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    skipped = [r for r in skipped if not is_hardware_skip(r)]
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"FPTRACE_NO_SKIP=1: {len(skipped)} test(s) skipped -> failure")
