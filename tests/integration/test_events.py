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


def test_exports(record, pingpong, tmp_path):
    import csv
    import json
    import subprocess
    import sys

    from tests.integration.conftest import fptrace

    run = record("--events", "--", str(pingpong), "--rounds", "500")
    assert run.proc.returncode == 0, run.proc.stderr
    n = pq.read_table(run.path / "events.parquet").num_rows
    out = tmp_path / "e.csv"
    assert fptrace("export", str(run.path), "-f", "csv", "-o", str(out)).returncode == 0
    with open(out) as f:
        assert sum(1 for _ in csv.DictReader(f)) == n
    lines = fptrace("export", str(run.path), "-f", "jsonl").stdout.splitlines()
    assert len(lines) == n and json.loads(lines[0])["ts_ns"] >= 0
    chrome = tmp_path / "t.json"
    assert fptrace("export", str(run.path), "-f", "chrome-json", "-o", str(chrome)).returncode == 0
    trace = json.loads(chrome.read_text())["traceEvents"]
    instants = [e for e in trace if e["ph"] == "i"]
    assert len(instants) == n
    assert any(e["ph"] == "M" and e["args"]["name"] == "pingpong" for e in trace)
    assert all("xstate_bv" in e["args"] for e in instants)
    # Without --events: csv exports the counts, chrome-json says what to do.
    plain = record("--", "true", name="plain")
    assert fptrace("export", str(plain.path), "-f", "csv").stdout.startswith("interval,")
    bad = fptrace("export", str(plain.path), "-f", "chrome-json")
    assert bad.returncode == 2 and "--events" in bad.stderr
    # A closed pipe is not an error.
    head = subprocess.run(
        f"{sys.executable} -m fptrace export {run.path} -f jsonl | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert head.stdout.count("\n") == 1 and "error" not in head.stderr
