"""record --events: one record per event, equal to the aggregated counts, nothing lost."""

from __future__ import annotations

import pyarrow.parquet as pq

N = 20000


def test_events_equal_the_counts_with_no_loss(record, pingpong):
    run = record("--events", "--", str(pingpong), "--mode", "avx512", "--rounds", str(N))
    assert run.proc.returncode == 0, run.proc.stderr
    rec = run.rec
    events = pq.read_table(run.path / "events.parquet").to_pandas()
    m = rec.manifest["events"]
    assert m["lost"] == 0 and m["recorded"] == len(events) >= 4 * N
    counts = rec.counts.groupby(["pid", "vso", "event"], dropna=False)["count"].sum().astype(int)
    got = events.groupby(["pid", "vso", "event"], dropna=False).size()
    assert got.sort_index().to_dict() == counts.sort_index().to_dict()
    # Times are ns since attach, ordered within each CPU; XSTATE_BV carries the state.
    assert (events["ts_ns"] >= 0).all()
    assert all(g["ts_ns"].is_monotonic_increasing for _, g in events.groupby("cpu"))
    saves = events[events["event"] == "regs_deactivated"]
    assert ((saves["xfeatures"].astype("int64") & 0xE6) == 0xE6).mean() > 0.99
    assert set(events["vso"].dropna()) <= set(rec.vso["vso"])
