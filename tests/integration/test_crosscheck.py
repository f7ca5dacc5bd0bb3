"""Cross-check against the kernel's own tracepoint counters (perf stat).

perf stat -a runs as the traced command, so its counting window lies inside fptrace's.
fptrace sees perf's own start-up and exit events on top (~30 here); perf sees fptrace's
few wake-ups, which fptrace excludes.  Tolerance per event: 50 + 0.5 % of perf's total.
"""

from __future__ import annotations

from pathlib import Path

from tests.integration.conftest import require_tool

ROUNDS = 20000


def parse_perf_csv(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2].startswith("x86_fpu:x86_fpu_"):
            out[fields[2].removeprefix("x86_fpu:x86_fpu_")] = int(fields[0])
    return out


def test_totals_per_event_agree_with_perf_stat(record, pingpong, tmp_path):
    perf = require_tool("perf")
    csv = tmp_path / "perf.csv"
    run = record(
        "-a",
        "--",
        perf,
        "stat",
        "-a",
        "-x,",
        "-o",
        str(csv),
        "-e",
        "x86_fpu:*",
        "--",
        str(pingpong),
        "--rounds",
        str(ROUNDS),
    )
    assert run.proc.returncode == 0, run.proc.stderr
    theirs = parse_perf_csv(csv)
    ours = run.rec.counts.groupby("event")["count"].sum().astype("int64").to_dict()
    assert theirs["regs_deactivated"] >= 2 * ROUNDS  # the workload really ran in the window
    for event, n in theirs.items():
        mine = int(ours.get(event, 0))
        assert abs(mine - n) <= 50 + 0.005 * n, (event, mine, n)
