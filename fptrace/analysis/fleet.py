"""Many recordings at once: find them, group them, and aggregate their counts in place.

A folder of hundreds of runs from many hosts is queried with DuckDB straight from the
Parquet files (one query for all of them) instead of being loaded one by one; the same
layout reads in Spark (docs/compare.md).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.analysis import report
from fptrace.analysis.fleet_keys import PARTITIONS, ROW_KEYS, RUN_KEYS
from fptrace.analysis.measures import SAVE_SIGN
from fptrace.analysis.report import COLLAPSE_AGG, KEYS, collapse
from fptrace.errors import RecordingError, UsageError
from fptrace.recording.loader import Recording, checked_file, load_manifest, load_recording
from fptrace.recording.manifest import Manifest
from fptrace.recording.schema import MANIFEST
from fptrace.xstate import LEVEL_IDS, VECTOR_LEVELS


def discover(root: Path) -> list[Path]:
    """Every recording (a directory with a manifest) under ``root``, sorted."""
    if not root.is_dir():
        raise RecordingError(f"{root} is not a directory of recordings")
    found = sorted(p.parent for p in root.rglob(MANIFEST) if ".parts" not in p.parts)
    if not found:
        raise RecordingError(f"no recordings under {root}: give directories `fptrace record` wrote")
    return found


def group_by(recs: list[Recording], key: str) -> dict[str, list[Recording]]:
    """``compare DIR --group-by``: the runs by one of fleet's run-level keys (host, kernel,
    date, cpu) or any dotted manifest key, as ``fptrace fleet`` groups them."""
    if key in ROW_KEYS:
        raise UsageError(
            f"compare groups whole runs; for per-{key} figures use `fptrace fleet --group-by {key}`"
        )
    groups: dict[str, list[Recording]] = {}
    for rec in recs:
        groups.setdefault(run_key(FleetRun(rec.path, rec.manifest), key), []).append(rec)
    return groups


def _columns(path: Path) -> set[str]:
    try:
        return set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException):
        return set()  # the loader says what is wrong with it


def collapse_many(recs: list[Recording]) -> dict[Path, pd.DataFrame]:
    """Per recording, the counts summed over intervals: one DuckDB query over all files."""
    import duckdb

    out: dict[Path, pd.DataFrame] = {}
    files = {}
    for rec in recs:
        # No counts.parquet yet (its parts are already in memory), or an older format's
        # (read through the loader, which adds what it lacks): not in the one query.
        if rec.recovered or not set(KEYS) <= _columns(rec.counts_file):
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


# ---- `fptrace fleet`: the same figures per group over every recording under a directory ----


@dataclass
class FleetRun:
    """One recording of the fleet: its manifest and the files DuckDB reads (or, for one that
    never finished or predates task ids, the recording loaded whole)."""

    path: Path
    manifest: Manifest
    counts: Path | None = None
    tasks: Path | None = None
    loaded: Recording | None = None

    @property
    def duration_s(self) -> float:
        if self.loaded is not None:
            return self.loaded.duration_s
        return float(self.manifest.duration_s or 0.0)


def partition_value(path: Path, key: str) -> str | None:
    """``host`` or ``date`` from a ``key=value`` component of ``path`` (the agent's layout)."""
    for part in reversed(path.parts):
        name, sep, value = part.partition("=")
        if sep and name == key:
            return value
    return None


def run_key(run: FleetRun, key: str) -> str:
    """A recording's group for a run-level key (or any dotted manifest key)."""
    m = run.manifest
    value: Any
    if key == "host":
        value = partition_value(run.path, "host") or m.host.hostname
    elif key == "date":
        value = partition_value(run.path, "date") or (m.started_at or "")[:10] or None
    elif key == "kernel":
        value = m.host.kernel.release
    elif key == "cpu":
        value = m.host.cpu.get("model_name")
    else:
        value = m.value(key)
    return "?" if value is None or value == "" else str(value)


def parse_where(items: list[str]) -> dict[str, str]:
    """``--where K=V`` (repeatable, all must hold): a group key or a dotted manifest key;
    V may be a shell pattern (``cgroup=/kubepods.slice/*``)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"--where {item!r}: give KEY=VALUE, e.g. host=web-1 or cgroup=/a/*")
        out[key.strip()] = value
    return out


def _matches(value: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def fleet_runs(root: Path, where: dict[str, str]) -> list[FleetRun]:
    """The recordings under ``root`` that pass the run-level ``where`` conditions.  A
    ``host``/``date`` condition prunes partition directories before any manifest is read."""
    if not root.is_dir():
        raise RecordingError(f"{root} is not a directory of recordings")
    runs = []
    for path in discover(root):
        if any(
            (v := partition_value(path, k)) is not None and not _matches(v, where[k])
            for k in PARTITIONS
            if k in where
        ):
            continue
        manifest = load_manifest(path)
        if (
            manifest.kind == "bench"
            and manifest.status == "complete"
            and not (path / "counts.parquet").exists()
        ):
            continue  # a benchmark result without a trace
        run = FleetRun(path, manifest)
        if any(k not in ROW_KEYS and not _matches(run_key(run, k), v) for k, v in where.items()):
            continue
        counts = tasks = None
        if manifest.status == "complete":
            counts = checked_file(path / "counts.parquet", "counts")
            tasks = checked_file(path / "tasks.parquet", "tasks")
        if counts is None or tasks is None:
            run.loaded = load_recording(path)
        else:
            run.counts, run.tasks = counts, tasks
        runs.append(run)
    if not runs:
        raise RecordingError(f"no recordings under {root} match {where or 'anything'}")
    return runs


FLEET_EVENTS = ("regs_deactivated", "dropped", "regs_activated")


def fleet_rows(runs: list[FleetRun]) -> pd.DataFrame:
    """Per recording, task and key: the summed counts of the save and restore events, with
    the task's comm, cgroup and switches.  One DuckDB query over all the files, in place."""
    import duckdb

    frames = []
    files = [r for r in runs if r.loaded is None]
    if files:
        by_dir = {str(r.path): i for i, r in enumerate(runs) if r.loaded is None}
        events = ", ".join(f"'{e}'" for e in FLEET_EVENTS)
        query = f"""
            WITH c AS (
                SELECT parse_dirpath(filename) AS dir, task, event, xfeatures, load_fpu,
                       sum(count) AS n
                FROM read_parquet($counts, filename = true, union_by_name = true)
                WHERE event IN ({events})
                GROUP BY ALL
            ), t AS (
                SELECT parse_dirpath(filename) AS dir, task,
                       any_value(comm) AS comm, any_value(cgroup) AS cgroup,
                       max(switches) AS switches
                FROM read_parquet($tasks, filename = true, union_by_name = true)
                GROUP BY ALL
            )
            SELECT c.*, t.comm, t.cgroup, t.switches FROM c LEFT JOIN t USING (dir, task)
        """
        try:
            df = (
                duckdb.connect()
                .execute(
                    query,
                    {
                        "counts": [str(r.counts) for r in files],
                        "tasks": [str(r.tasks) for r in files],
                    },
                )
                .df()
            )
        except duckdb.Error as exc:
            raise RecordingError(f"cannot read the recordings' tables: {exc}") from exc
        df["run"] = df.pop("dir").map(by_dir)
        frames.append(df)
    for i, r in enumerate(runs):
        if r.loaded is None:
            continue
        c = r.loaded.counts_table.to_pandas()
        c = c[c["event"].astype(str).isin(FLEET_EVENTS)]
        g = c.groupby(["task", "event", "xfeatures", "load_fpu"], dropna=False, observed=True)
        df = g["count"].sum().rename("n").reset_index()
        info = r.loaded.tasks[["task", "comm", "cgroup", "switches"]]
        frames.append(df.merge(info, on="task", how="left").assign(run=i))
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    rows["event"] = rows["event"].astype(str)
    rows["xfeatures"] = rows["xfeatures"].astype("uint64")
    rows["n"] = rows["n"].astype("int64")
    return rows


def fleet_table(
    runs: list[FleetRun],
    group_by: str,
    where: dict[str, str],
    model_for: Any,
) -> pd.DataFrame:
    """One row per group: the compare figures, summed over the group's recordings.

    Rates are per traced second of the recordings the group appears in (host-seconds); a
    task counts once per recording; ``xfeatures_seen`` is the OR of the XSTATE_BV of every
    save (an unsigned 64-bit mask, as hex)."""
    rows = fleet_rows(runs)
    if rows.empty:
        return pd.DataFrame(columns=["group", *FLEET_COLUMNS])
    for key in RUN_KEYS:
        if key == group_by or key in where:
            rows[key] = rows["run"].map({i: run_key(r, key) for i, r in enumerate(runs)})
    for key in ROW_KEYS:
        rows[key] = rows[key].fillna(report.UNKNOWN_CGROUP if key == "cgroup" else "?")
        if key in where:
            rows = rows[rows[key].astype(str).map(lambda v, p=where[key]: _matches(v, p))]
    if group_by not in rows.columns:
        rows[group_by] = rows["run"].map({i: run_key(r, group_by) for i, r in enumerate(runs)})
    sign = rows["event"].map(SAVE_SIGN).fillna(0).astype("int64")
    rows["saves"] = sign * rows["n"]
    rows["restores"] = rows["n"].where(
        (rows["event"] == "regs_activated") & (rows["load_fpu"] == 1), 0
    )
    nbytes = np.zeros(len(rows), dtype="float64")
    xf = rows["xfeatures"].to_numpy()
    for i, run in enumerate(runs):
        layout = run.manifest.layout
        if layout is None:
            continue
        mine = (rows["run"] == i).to_numpy()
        sizes = {int(x): layout.bytes_saved(int(x)) for x in np.unique(xf[mine])}
        nbytes[mine] = [sizes[int(x)] for x in xf[mine]]
    rows["bytes_saved"] = rows["saves"] * nbytes
    rows["bytes_restored"] = rows["restores"] * nbytes
    for level, mask in VECTOR_LEVELS.items():
        live = (xf & np.uint64(mask)) != 0
        rows[f"{LEVEL_IDS[level]}_saves"] = rows["saves"].where(live, 0)
    rows["seen"] = np.where(sign.to_numpy() > 0, xf, np.uint64(0))
    model = model_for(runs[0].manifest)
    out = []
    for name, g in rows.groupby(group_by, sort=True):
        in_runs = sorted(set(g["run"]))
        seconds = sum(runs[i].duration_s for i in in_runs)
        tasks = g.drop_duplicates(["run", "task"])
        saves = int(g["saves"].sum())
        restores = int(g["restores"].sum())
        switches = int(tasks["switches"].fillna(0).sum())
        bytes_saved = float(g["bytes_saved"].sum())
        est = model.save.total(saves, bytes_saved) + model.restore.total(
            restores, float(g["bytes_restored"].sum())
        )
        seen = int(np.bitwise_or.reduce(g["seen"].to_numpy(dtype="uint64"), initial=0))
        row: dict[str, Any] = {
            "group": str(name),
            "recordings": len(in_runs),
            "seconds": round(seconds, 3),
            "tasks": len(tasks),
            "saves": saves,
            "restores": restores,
            "switches": switches,
            "bytes_saved": int(bytes_saved),
            "saves_per_s": saves / seconds if seconds else None,
            "restores_per_s": restores / seconds if seconds else None,
            "saves_per_switch": saves / switches if switches else None,
            "bytes_per_save": bytes_saved / saves if saves else None,
        }
        for level in VECTOR_LEVELS:
            lid = LEVEL_IDS[level]
            row[f"{lid}_save_share"] = int(g[f"{lid}_saves"].sum()) / saves if saves else None
        row["est_cpu_ns_per_s"] = float(est) / seconds if seconds else None
        row["xfeatures_seen"] = f"{seen:#x}"
        out.append(row)
    return pd.DataFrame(out).sort_values("saves", ascending=False).reset_index(drop=True)


FLEET_COLUMNS = (
    "recordings", "seconds", "tasks", "saves", "restores", "switches", "bytes_saved",
    "saves_per_s", "restores_per_s", "saves_per_switch", "bytes_per_save",
    *(f"{LEVEL_IDS[level]}_save_share" for level in VECTOR_LEVELS),
    "est_cpu_ns_per_s", "xfeatures_seen",
)  # fmt: skip
