"""`python -m fptrace.recording.finish DIR…`: finish recordings `fptrace agent` handed off.

The agent runs this, niced, for each segment it rotates away from, so that merging an
hour of parts never holds up its drains (and the merge's memory is never the agent's).  A
finisher that dies leaves the parts and the pending manifest: the recording still reads
(rebuilt from its parts), and the agent finishes it at its next start.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fptrace.errors import FptraceError
from fptrace.recording.writer import finish_recording


def main(argv: list[str]) -> int:
    failed = 0
    for arg in argv:
        try:
            finish_recording(Path(arg))
        except FptraceError as exc:
            print(f"fptrace: cannot finish {arg}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
