"""`make demo`: record the built-in ping-pong workload with AVX-512 (or AVX) live, summarize,
and write the HTML report.

Two processes pinned to one CPU exchange 20,000 messages; each should show about 20,000
saves and 20,000 restores with the dirtied components live in every save.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fptrace.cli import main as fptrace_main
from fptrace.collectors.host import cpu_flags
from fptrace.workloads.build import workload_binary

ROUNDS = 20_000


def best_mode() -> str:
    flags = cpu_flags()
    if "avx512f" in flags:
        return "avx512"
    return "avx" if "avx" in flags else "sse"


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0] if argv else "recordings/demo")
    out.parent.mkdir(parents=True, exist_ok=True)
    binary = workload_binary("pingpong")
    mode = best_mode()
    print(f"demo: {binary.name} --mode {mode} --rounds {ROUNDS}, under fptrace record -o {out}")
    code = fptrace_main(
        ["record", "-f", "-o", str(out), "--", str(binary), "--mode", mode, "--rounds", str(ROUNDS)]
    )
    if code != 0:
        return code
    report = out / "report.html"
    code = fptrace_main(["report", str(out), "-o", str(report)])
    if code == 0:
        print(f"demo: recording in {out.resolve()}")
        print(f"demo: HTML report: {report.resolve()} (open it in a browser; works offline)")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
