"""Benchmark statistics and calibration on synthetic samples with known answers."""

from __future__ import annotations

import random

import pandas as pd
import pytest

from fptrace.analysis import bench as ab
from fptrace.analysis.stats import mann_whitney_p, median_ci, rsd, slope_ci
from fptrace.collectors import bench as runner
from fptrace.errors import EnvironmentProblem, UsageError
from fptrace.recording.manifest import RecordCheck
from tests.unit.test_xstate import AMD

SSE, AVX512 = 0xA2, 0xE6  # XINUSE as the workloads see it


def test_median_interval_contains_the_median_and_shrinks_with_agreement() -> None:
    med, lo, hi = median_ci([10, 11, 12, 13, 14])
    assert med == 12 and lo <= med <= hi
    assert median_ci([5.0] * 7) == (5.0, 5.0, 5.0)
    assert rsd([100, 100, 100]) == 0 and rsd([50, 150]) > 0.5


def test_mann_whitney_exact_p_values() -> None:
    assert mann_whitney_p([1, 2, 3, 4, 5], [6, 7, 8, 9, 10]) == pytest.approx(2 / 252)
    assert mann_whitney_p([1, 2, 3], [1, 2, 3]) == 1.0
    rng = random.Random(3)
    big_a = [rng.gauss(0, 1) for _ in range(40)]
    big_b = [x + 3 for x in big_a]
    assert mann_whitney_p(big_a, big_b) < 1e-6  # normal approximation branch


def test_slope_recovers_a_known_line() -> None:
    x = [0, 1, 2, 3, 4] * 4
    y = [5 + 2 * v for v in x]
    s, lo, hi = slope_ci(x, y)
    assert s == pytest.approx(2) and lo == pytest.approx(2) and hi == pytest.approx(2)
    assert slope_ci([1, 1, 1], [1, 2, 3]) is None


def rows(bench: str, metric: str, values: dict[int, list[float]]) -> list[dict]:
    out = []
    for xinuse, ns_list in values.items():
        state = {SSE: "sse", AVX512: "avx512", 0x2: "init"}[xinuse]
        for rep, ns in enumerate(ns_list, 1):
            out.append(
                {
                    "bench": bench,
                    "state": state,
                    "metric": metric,
                    "rep": rep,
                    "ns": ns,
                    "ops": 1000,
                    "xinuse": xinuse,
                    "pid_a": 0,
                    "pid_b": 0,
                }
            )
    return out


def test_summary_marks_insignificant_changes_and_unstable_levels() -> None:
    df = pd.DataFrame(
        rows("ctx", "op", {SSE: [100, 101, 99, 100, 102], AVX512: [100, 99, 101, 102, 100]})
        + rows("sig", "op", {SSE: [100, 101, 99, 100, 102], AVX512: [130, 131, 129, 180, 90]})
    )
    s = ab.summarize(df, AMD).set_index(["bench", "state"])
    assert s.loc[("ctx", "avx512"), "significant"] == False  # noqa: E712 -> shown as "~"
    assert s.loc[("sig", "avx512"), "unstable"] == True  # noqa: E712
    assert s.loc[("ctx", "sse"), "ratio"] == 1.0


def test_calibration_fit_recovers_base_and_per_byte() -> None:
    b_sse, b_512 = AMD.bytes_saved(SSE), AMD.bytes_saved(AVX512)
    save = {x: [30 + 0.01 * AMD.bytes_saved(x)] * 5 for x in (SSE, AVX512, 0x2)}
    restore = {x: [40 + 0.02 * AMD.bytes_saved(x)] * 5 for x in (SSE, AVX512, 0x2)}
    df = pd.DataFrame(rows("calibrate", "xsavec", save) + rows("calibrate", "xrstor", restore))
    cal = ab.calibration(df, AMD)
    assert cal["format"] == "fptrace-calibration"
    assert cal["save"]["base_ns"] == pytest.approx(30) and cal["save"][
        "ns_per_byte"
    ] == pytest.approx(0.01)
    assert cal["restore"]["base_ns"] == pytest.approx(40)
    assert b_512 > b_sse
    slopes = ab.slopes(df, AMD).set_index("metric")
    assert slopes.loc["xsavec", "ns_per_kib"] == pytest.approx(10.24)


def test_record_check_compares_traced_saves_with_round_trips() -> None:
    bench_df = pd.DataFrame(
        [{"bench": "ctx-pipe", "metric": "op", "ops": 1000, "pid_a": 1, "pid_b": 2}]
    )
    counts = pd.DataFrame(
        [
            {"pid": 1, "event": "regs_deactivated", "count": 1003},
            {"pid": 1, "event": "dropped", "count": 1},
            {"pid": 2, "event": "regs_deactivated", "count": 1001},
        ]
    )
    check = ab.record_check(bench_df, counts)
    assert check == RecordCheck(tasks_checked=2, max_abs_diff=2, tolerance=10, ok=True)
    counts.loc[2, "count"] = 900
    assert not ab.record_check(bench_df, counts).ok


def test_resolve_refuses_unknown_names_and_states_the_cpu_lacks(monkeypatch) -> None:
    with pytest.raises(UsageError, match="unknown benchmark nope"):
        runner.resolve(["nope"], None)
    with pytest.raises(UsageError, match="unknown state"):
        runner.resolve(["signal"], ["mmx"])
    monkeypatch.setattr(runner, "cpu_flags", lambda: {"avx", "sse2"})
    with pytest.raises(EnvironmentProblem, match="lacks avx512"):
        runner.resolve(["signal"], ["sse", "avx512"])
    benches, states = runner.resolve([], None)  # default set, levels this CPU has
    assert states == ["init", "sse", "avx"] and [b.name for b in benches] == list(
        runner.DEFAULT_SET
    )
