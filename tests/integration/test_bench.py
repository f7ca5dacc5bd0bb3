"""fptrace bench on the real machine: live state per level, calibration, tracer cross-check."""

from __future__ import annotations

import json

from fptrace.analysis import bench as ab
from fptrace.collectors.bench import CPU_FLAG, cpu_flags
from fptrace.recording.loader import load_recording
from tests.conftest import skip_hardware
from tests.integration.conftest import fptrace

EXPECT_BITS = {
    "sse": 1 << 1,
    "avx": (1 << 1) | (1 << 2),
    "avx512": (1 << 1) | (1 << 2) | (1 << 5) | (1 << 6) | (1 << 7),
    "amx": (1 << 17) | (1 << 18),
}
BEYOND_SSE = ~0b11 & ~((1 << 17) | (1 << 18))


def test_each_level_makes_exactly_its_components_live(tmp_path):
    out = tmp_path / "b"
    proc = fptrace("bench", "ctx-pipe", "signal", "--quick", "--reps", "2", "-q", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    rec = load_recording(out)
    df = rec.bench
    flags = cpu_flags()
    have = {
        s
        for s in ("init", "sse", "avx", "avx512", "amx")
        if s not in CPU_FLAG or CPU_FLAG[s] in flags
    }
    skipped = {(s["bench"], s["state"]) for s in rec.manifest["bench"]["skipped"]}
    for bench in ("ctx-pipe", "signal"):
        got = set(df[df["bench"] == bench]["state"])
        assert got | {s for b, s in skipped if b == bench} >= have
        for state, g in df[df["bench"] == bench].groupby("state"):
            for x in g["xinuse"].astype("int64"):
                if state == "init":
                    assert x & BEYOND_SSE == 0, hex(x)  # nothing beyond x87/SSE
                else:
                    assert x & EXPECT_BITS[state] == EXPECT_BITS[state], (state, hex(x))


def test_calibration_separates_sse_from_avx512(tmp_path):
    if "avx512f" not in cpu_flags():
        skip_hardware("CPU lacks avx512f")
    out = tmp_path / "cal"
    proc = fptrace(
        "bench", "calibrate", "--reps", "9", "--states", "sse,avx512", "-q", "-o", str(out)
    )
    assert proc.returncode == 0, proc.stderr
    rec = load_recording(out)
    s = ab.summarize(rec.bench, rec.layout).set_index(["metric", "state"])
    sse, avx512 = s.loc[("xsavec", "sse")], s.loc[("xsavec", "avx512")]
    # The difference is a few ns on this AMD machine (50 vs 57 ns seen): the intervals of 5
    # repetitions overlapped once in CI, so the test asks what fptrace itself reports, a
    # significant (Mann-Whitney) and larger cost for the bigger state, over 9 repetitions.
    assert avx512.median_ns > sse.median_ns, (sse, avx512)
    assert avx512.significant, (sse, avx512)
    cal = json.loads((out / "calibration.json").read_text())
    assert cal["save"]["ns_per_byte"] > 0 and cal["save"]["base_ns"] > 0
    assert rec.manifest["calibration"] == cal
    # A report given this table says it is calibrated, not an estimate.
    rep = fptrace("report", str(out), "-f", "json")
    assert json.loads(rep.stdout)["headline"]["cost_estimate"] is False


def test_record_cross_check_agrees(tmp_path):
    out = tmp_path / "r"
    proc = fptrace("bench", "ctx-pipe", "--quick", "--reps", "2", "--record", "-q", "-o", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rec = load_recording(out)
    check = rec.manifest["record_check"]
    assert check["ok"] and check["tasks_checked"] >= 2 * 2 * 2  # reps x levels x 2 tasks
    assert check["max_abs_diff"] <= check["tolerance"]
    assert int(rec.counts["count"].sum()) > 0 and rec.bench is not None
    assert not list(tmp_path.glob(".r.*"))  # no temporary directories left


def test_bench_bad_input(tmp_path):
    unknown = fptrace("bench", "nope")
    assert unknown.returncode == 2 and "unknown benchmark nope" in unknown.stderr
    assert unknown.stderr.count("\n") == 1
    reps = fptrace("bench", "signal", "--reps", "1")
    assert reps.returncode == 2 and "--reps" in reps.stderr
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine").write_text("keep")
    exists = fptrace("bench", "signal", "--quick", "-o", str(tmp_path / "x"))
    assert exists.returncode == 73 and (tmp_path / "x" / "mine").exists()
