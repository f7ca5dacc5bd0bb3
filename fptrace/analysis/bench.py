"""Benchmark statistics: per level medians with intervals, comparisons, slopes, calibration.

Pure functions over the bench table (one row per measurement process).  Every comparison
is against the SSE level of the same benchmark and metric (what every process has live
anyway) and is shown as "~" when a Mann-Whitney test does not call it significant, as Go's
benchstat does.  The cost per extra KiB of live state is the least-squares slope of ns on
the live bytes of each measurement (from its XINUSE and the xstate layout).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fptrace.analysis import measures
from fptrace.analysis.cost import CALIBRATION_FORMAT
from fptrace.analysis.stats import (
    ALPHA,
    UNSTABLE_RSD,
    intercept,
    mann_whitney_p,
    median_ci,
    rsd,
    slope_ci,
)
from fptrace.recording.manifest import RecordCheck
from fptrace.xstate import Layout

BASELINE = "sse"
STATE_ORDER = {"init": 0, "sse": 1, "avx": 2, "avx512": 3, "amx": 4}


def frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Bench rows as the runner returns them -> the bench table's columns."""
    return pd.DataFrame(rows, columns=["bench", "state", "metric", "rep", "ns", "ops", "xinuse"])


def live_bytes(df: pd.DataFrame, layout: Layout | None) -> pd.Series:
    if layout is None:
        return pd.Series(float("nan"), index=df.index)
    return df["xinuse"].map(lambda x: float(layout.bytes_saved(int(x))))


def summarize(df: pd.DataFrame, layout: Layout | None) -> pd.DataFrame:
    """One row per (bench, metric, state): median, 95 % CI, spread, and vs the SSE level."""
    cols = [
        "bench",
        "metric",
        "state",
        "n",
        "median_ns",
        "ci_low",
        "ci_high",
        "rsd",
        "unstable",
        "live_bytes",
        "ratio",
        "p_value",
        "significant",
    ]
    if df is None or df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(live=live_bytes(df, layout))
    rows: list[dict[str, Any]] = []
    for (bench, metric), group in df.groupby(["bench", "metric"], sort=False):
        base = group[group["state"] == BASELINE]["ns"].tolist()
        base_med = median_ci(base)[0] if base else None
        for state, g in sorted(group.groupby("state"), key=lambda kv: STATE_ORDER.get(kv[0], 9)):
            xs = g["ns"].astype(float).tolist()
            med, lo, hi = median_ci(xs)
            p = mann_whitney_p(xs, base) if base and state != BASELINE else None
            rows.append(
                {
                    "bench": bench,
                    "metric": metric,
                    "state": state,
                    "n": len(xs),
                    "median_ns": med,
                    "ci_low": lo,
                    "ci_high": hi,
                    "rsd": rsd(xs),
                    "unstable": rsd(xs) > UNSTABLE_RSD,
                    "live_bytes": float(g["live"].median()),
                    "ratio": med / base_med if base_med else None,
                    "p_value": p,
                    "significant": None if p is None else p < ALPHA,
                }
            )
    return pd.DataFrame(rows, columns=cols)


def slopes(df: pd.DataFrame, layout: Layout | None) -> pd.DataFrame:
    """ns per extra KiB of live state, with a 95 % interval, per (bench, metric)."""
    cols = ["bench", "metric", "ns_per_kib", "ci_low", "ci_high", "significant"]
    if df is None or df.empty or layout is None:
        return pd.DataFrame(columns=cols)
    df = df.assign(kib=live_bytes(df, layout) / 1024)
    rows = []
    for (bench, metric), g in df.groupby(["bench", "metric"], sort=False):
        fit = slope_ci(g["kib"].tolist(), g["ns"].astype(float).tolist())
        if fit is None:
            continue
        s, lo, hi = fit
        rows.append(
            {
                "bench": bench,
                "metric": metric,
                "ns_per_kib": s,
                "ci_low": lo,
                "ci_high": hi,
                "significant": lo > 0 or hi < 0,
            }
        )
    return pd.DataFrame(rows, columns=cols)


def calibration(df: pd.DataFrame, layout: Layout | None) -> dict[str, Any] | None:
    """The cost table for reports: ns = base + ns_per_byte x bytes, for save and restore.

    Save: user-space XSAVEC (compacted, init optimisation: the closest user-space relative
    of the kernel's XSAVES); restore: XRSTOR of that buffer.  Fitted over every measurement.
    """
    if df is None or df.empty or layout is None:
        return None
    cal = df[df["bench"] == "calibrate"]
    out: dict[str, Any] = {"format": CALIBRATION_FORMAT, "source": "fptrace bench calibrate"}
    for kind, metrics in (("save", ("xsavec", "xsave")), ("restore", ("xrstor",))):
        for metric in metrics:
            g = cal[cal["metric"] == metric]
            if g.empty:
                continue
            x = live_bytes(g, layout).tolist()
            y = g["ns"].astype(float).tolist()
            fit = slope_ci(x, y)
            if fit is None:
                continue
            slope, lo, hi = fit
            out[kind] = {
                "base_ns": max(intercept(x, y, slope), 0.0),
                "ns_per_byte": max(slope, 0.0),
                "ns_per_byte_ci": [lo, hi],
                "instruction": metric,
                "samples": len(y),
            }
            break
    return out if "save" in out and "restore" in out else None


PING_PONG = ("ctx-pipe", "ctx-pipe-threads", "ctx-futex", "ctx-futex-threads")


def record_check(bench_df: pd.DataFrame, counts: pd.DataFrame, tolerance: int = 10) -> RecordCheck:
    """Traced saves of each ping-pong task vs the benchmark's own count of round trips.

    Each side blocks once per round trip, so each task is switched out (saves) once per
    operation; the tolerance covers start-up and exit (the final switch of a dead task).
    """
    runs = bench_df[bench_df["bench"].isin(PING_PONG) & (bench_df["metric"] == "op")]
    saves = counts.assign(saves=measures.saves(counts)).groupby("pid")["saves"].sum()
    diffs = []
    for row in runs.itertuples():
        for pid in (row.pid_a, row.pid_b):
            if pid:
                diffs.append(int(saves.get(pid, 0)) - int(row.ops))
    worst = max((abs(d) for d in diffs), default=0)
    return RecordCheck(
        tasks_checked=len(diffs),
        max_abs_diff=worst,
        tolerance=tolerance,
        ok=bool(diffs) and worst <= tolerance,
    )
