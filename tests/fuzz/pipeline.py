"""One mutant through fptrace as a user would run it, in-process: the command line's own
``main()``, so that an error is judged exactly as a user sees it.

A run is fine when it succeeds or ends with fptrace's one-line error (an exit code other
than 70, no traceback).  It fails on an internal error (exit 70: an exception fptrace did
not expect), an exception escaping ``main()``, or a hang (no answer within ``TIMEOUT_S``).
"""

from __future__ import annotations

import contextlib
import io
import signal
from dataclasses import dataclass
from pathlib import Path

from fptrace import cli

TIMEOUT_S = 20
INTERNAL = 70

# Each mutant goes through one of these (chosen at random, weighted by cost): every one
# loads the recording; the report and compare ones also analyse it.
STAGES: dict[str, list[str]] = {
    "report-json": ["report", "{rec}", "-f", "json", "-o", "{out}"],
    "report-text": ["report", "{rec}", "-f", "text", "-o", "{out}"],
    "report-html": ["report", "{rec}", "-f", "html", "-o", "{out}"],
    "export-csv": ["export", "{rec}", "-f", "csv", "-o", "{out}"],
    "export-jsonl": ["export", "{rec}", "-f", "jsonl", "-o", "{out}"],
    "export-chrome": ["export", "{rec}", "-f", "chrome-json", "-o", "{out}"],
    "export-perfetto": ["export", "{rec}", "-f", "perfetto", "-o", "{out}"],
    "compare": ["compare", "{seed}", "{rec}", "-f", "json", "-o", "{out}"],
    "compare-force": ["compare", "{rec}", "{seed}", "--force", "-f", "text", "-o", "{out}"],
}


class Hang(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang


@dataclass
class Outcome:
    stage: str
    code: int | None  # None: an exception escaped main(), or a hang
    said: str  # stderr, or the exception

    @property
    def ok(self) -> bool:
        return self.code is not None and self.code != INTERNAL and "Traceback" not in self.said


def run(stage: str, rec: Path, seed: Path, out: Path) -> Outcome:
    argv = [a.format(rec=rec, seed=seed, out=out) for a in STAGES[stage]]
    err = io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIMEOUT_S)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = cli.main(argv)
        return Outcome(stage, code, err.getvalue())
    except Hang:
        return Outcome(stage, None, f"no answer within {TIMEOUT_S} s")
    except BaseException as exc:
        return Outcome(stage, None, f"{exc.__class__.__name__}: {exc}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
