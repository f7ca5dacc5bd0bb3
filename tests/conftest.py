"""Shared test policy: on this project's machines (CI, FPTRACE_NO_SKIP=1) a skip is a failure.

Users' machines may lack root, BCC, tracefs or perf; there a test skips with its reason.
One exception everywhere: a test of a CPU feature (AVX-512, AMX) the processor does not
have skips with a reason starting "hardware:" — no install step can provide it.
"""

from __future__ import annotations

import os

import pytest

NO_SKIP = os.environ.get("FPTRACE_NO_SKIP") == "1"


def skip_or_fail(reason: str) -> None:
    """Skip on a user's machine; fail where the environment promises everything."""
    if NO_SKIP:
        pytest.fail(f"would skip, but FPTRACE_NO_SKIP=1: {reason}", pytrace=False)
    pytest.skip(reason)


HARDWARE = "hardware: "


def skip_hardware(reason: str) -> None:
    """The CPU lacks what the test is about: a skip even where skips are failures."""
    pytest.skip(HARDWARE + reason)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: any other skip (e.g. a bare pytest.skip) fails a no-skip run."""
    if not NO_SKIP:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    skipped = [r for r in skipped if HARDWARE not in str(getattr(r, "longrepr", ""))]
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"FPTRACE_NO_SKIP=1: {len(skipped)} test(s) skipped -> failure")
