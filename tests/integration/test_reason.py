"""Why each save happened: a task that blocks is saved voluntarily, a preempted one
involuntarily — checked against the kernel's own count of each kind of context switch
(getrusage: ru_nvcsw, ru_nivcsw, which pingpong reads for both of its tasks)."""

from __future__ import annotations

import pyarrow.parquet as pq

from tests import known_answer

SIGN = {"regs_deactivated": 1, "dropped": -1}


def test_saves_split_by_reason_match_the_kernels_switch_counts(record, pingpong, level):
    rounds = 20_000
    run = record("--", str(pingpong), "--mode", level, "--rounds", str(rounds))
    assert run.proc.returncode == 0, run.proc.stderr
    work = run.workload_json()
    counts = pq.read_table(run.path / "counts.parquet").to_pandas()
    counts["event"] = counts["event"].astype(str)
    counts["reason"] = counts["reason"].astype(object)
    saves = counts[counts["event"].isin(list(SIGN))]
    for who, pid in known_answer.sides(work):
        mine = saves[saves["pid"] == pid]
        signed = mine["event"].map(SIGN) * mine["count"]
        by = {r: int(signed[mine["reason"] == r].sum()) for r in ("voluntary", "involuntary")}
        assert int(signed[mine["reason"].isna()].sum()) == 0, mine  # every save has a reason
        # The kernel counts a switch as voluntary when the task blocked (its state was not
        # running), as fptrace does; its count ends a few switches before the task's last
        # (known_answer.AFTER_RUSAGE), and a task preempted while it was about to block is
        # involuntary to the kernel and voluntary here (its state is already set): rare.
        for reason, counted in (("voluntary", "nvcsw"), ("involuntary", "nivcsw")):
            want = int(work[f"{counted}_{who}"])
            slack = known_answer.AFTER_RUSAGE + rounds // 1000
            assert abs(by[reason] - want) <= slack, (who, reason, by, work)
        assert by["voluntary"] > rounds // 4 and by["involuntary"] >= 0
