"""The report as JSON for scripts: the same numbers as the HTML and text reports."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from fptrace import __version__
from fptrace.analysis.report import ReportData


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    return [_clean(r) for r in df.astype(object).where(df.notna(), None).to_dict("records")]


def to_json(data: ReportData) -> dict[str, Any]:
    m = data.manifest.to_json()
    host = m.get("host", {})
    return {
        "fptrace_version": __version__,
        "recording": data.path,
        "format_version": m.get("format_version"),
        "headline": _clean(data.headline),
        "cost_model": data.cost.to_json(),
        "warnings": data.warnings,
        "tasks": _records(data.tasks),
        "vsos": _records(data.vsos),
        "processes": _records(data.processes),
        "cgroups": _records(data.cgroups),
        "hints": data.hints,
        "stacks": None
        if data.stacks is None
        else {
            "samples": data.stacks.samples,
            "blocking_sites": _records(data.stacks.sites),
            "paths": [{"path": list(p), "samples": n} for p, n in data.stacks.paths],
        },
        "timeline": _records(data.timeline),
        "live_components": _records(data.components),
        "vso_sizes": _records(data.vso_sizes),
        "host": {
            "kernel": host.get("kernel"),
            "cpu_model": host.get("cpu", {}).get("model_name"),
            "xstate": host.get("xstate"),
            "vso_size_notes": data.vso_size_notes,
        },
        "probes": m.get("probes"),
        "bench": None if data.bench is None else _records(data.bench),
        "bench_slopes": None if data.bench_slopes is None else _records(data.bench_slopes),
        "calibration": m.get("calibration"),
        "record_check": m.get("record_check"),
    }


def render_json(data: ReportData) -> str:
    return json.dumps(to_json(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
