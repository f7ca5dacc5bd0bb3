"""Shared test policy: on this project's machines (CI, FPTRACE_NO_SKIP=1) a skip is a failure.

Users' machines may lack root, BCC, AVX-512 or perf; there a test skips with its reason.
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Belt and braces: any skip at all (e.g. a bare pytest.skip) fails a no-skip run."""
    if not NO_SKIP:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter else []
    if skipped and session.exitstatus == 0:
        session.exitstatus = 1
        if reporter:
            reporter.write_line(f"FPTRACE_NO_SKIP=1: {len(skipped)} test(s) skipped -> failure")
