"""Many recordings at once: find them, group them, and aggregate their counts in place.

A folder of hundreds of runs from many hosts is queried with DuckDB straight from the
Parquet files (one query for all of them) instead of being loaded one by one; the same
layout reads in Spark (docs/compare.md).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fptrace.analysis.report import COLLAPSE_AGG, KEYS, collapse
from fptrace.errors import RecordingError
from fptrace.recording.loader import Recording, load_recording
from fptrace.recording.manifest import Manifest
from fptrace.recording.schema import MANIFEST


def discover(root: Path) -> list[Path]:
    """Every recording (a directory with a manifest) under ``root``, sorted."""
    if not root.is_dir():
        raise RecordingError(f"{root} is not a directory of recordings")
    found = sorted(p.parent for p in root.rglob(MANIFEST) if ".parts" not in p.parts)
    if not found:
        raise RecordingError(f"no recordings under {root}: give directories `fptrace record` wrote")
    return found


def manifest_value(manifest: Manifest, key: str) -> str:
    """A dotted manifest key, e.g. host.kernel.release or host.kernel_config.sha256."""
    value = manifest.value(key)
    return "?" if value is None else str(value)


def group_by(recs: list[Recording], key: str) -> dict[str, list[Recording]]:
    groups: dict[str, list[Recording]] = {}
    for rec in recs:
        groups.setdefault(manifest_value(rec.manifest, key), []).append(rec)
    return groups


def collapse_many(recs: list[Recording]) -> dict[Path, pd.DataFrame]:
    """Per recording, the counts summed over intervals: one DuckDB query over all files."""
    import duckdb

    out: dict[Path, pd.DataFrame] = {}
    files = {}
    for rec in recs:
        if rec.recovered:  # no counts.parquet yet: its parts are already in memory
            out[rec.path] = collapse(rec.counts_table)
        else:
            files[str(rec.counts_file)] = rec.path
    if files:
        aggs = ", ".join(f"{fn}({col}) AS {col}" for col, fn in COLLAPSE_AGG)
        cols = ", ".join(KEYS)
        query = (
            f"SELECT filename, {cols}, {aggs} "
            "FROM read_parquet($files, filename = true, union_by_name = true) "
            f"GROUP BY filename, {cols}"
        )
        try:
            df = duckdb.connect().execute(query, {"files": list(files)}).df()
        except duckdb.Error as exc:
            raise RecordingError(f"cannot read the counts tables: {exc}") from exc
        for name, part in df.groupby("filename"):
            frame = part.drop(columns="filename").reset_index(drop=True)
            frame["load_fpu"] = frame["load_fpu"].astype("Int64")
            frame["xfeatures"] = frame["xfeatures"].astype("uint64")
            frame["count"] = frame["count"].astype("int64")
            out[files[str(name)]] = frame
        for path in files.values():
            out.setdefault(path, collapse(load_recording(path).counts_table.slice(0, 0)))
    return out
