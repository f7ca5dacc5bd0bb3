"""`fptrace export`: a recording's data in the formats other tools read.

- ``csv`` / ``jsonl``: the events (``record --events``) if the recording has them, else the
  per-interval counts; one row per line, names as text.
- ``chrome-json``: the Trace Event Format (chrome://tracing, Perfetto's legacy importer):
  one instant event per save/restore on the task's thread track, carrying XSTATE_BV, the live
  components and the estimated bytes, plus a saves-per-interval counter per process.  Needs
  ``--events``.

Strings from traced processes are data in these formats (escaped by the CSV/JSON writers),
never markup.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

import pyarrow as pa

from fptrace.analysis.measures import SAVE_SIGN
from fptrace.errors import UsageError
from fptrace.recording.loader import Recording
from fptrace.xstate import Layout, decode

EVENT_BATCH_ROWS = 1 << 18


def _rows(rec: Recording) -> tuple[str, Iterator[pa.RecordBatch]]:
    """The rows to export, each with its task's ``cgroup`` (v2 path) as the last column, so a
    spreadsheet or a script can group by container without joining the tasks table."""
    if rec.has_events:
        kind, batches = "events", rec.iter_events(EVENT_BATCH_ROWS)
    else:
        kind, batches = "counts", rec.iter_counts()
    return kind, _with_cgroups(rec, batches)


def _with_cgroups(rec: Recording, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    import pyarrow.compute as pc

    ids = pa.array(rec.tasks["task"].astype("int64"), type=pa.int64())
    paths = pa.array(rec.tasks["cgroup"].astype(object).where(rec.tasks["cgroup"].notna(), None))
    for batch in batches:
        where = pc.index_in(batch.column("task").cast(pa.int64()), value_set=ids)
        yield batch.append_column("cgroup", pc.take(paths.cast(pa.string()), where))


def _plain(value: Any) -> Any:
    return "" if value is None else value


def write_csv(rec: Recording, out: IO[str]) -> str:
    kind, batches = _rows(rec)
    writer = None
    for batch in batches:
        rows = batch.to_pylist()
        if writer is None and rows:
            writer = csv.DictWriter(out, fieldnames=list(rows[0]))
            writer.writeheader()
        if writer is not None:
            writer.writerows({k: _plain(v) for k, v in r.items()} for r in rows)
    return kind


def write_jsonl(rec: Recording, out: IO[str]) -> str:
    kind, batches = _rows(rec)
    for batch in batches:
        for r in batch.to_pylist():
            out.write(json.dumps(r, separators=(",", ":")) + "\n")
    return kind


def write_chrome_json(rec: Recording, out: IO[str]) -> str:
    """Trace Event Format, streamed: {"traceEvents": [...], "displayTimeUnit": "ns"}."""
    if not rec.has_events:
        raise UsageError(
            f"{rec.path} has no events: record with `fptrace record --events` to export a "
            "timeline (csv/jsonl export the counts)"
        )
    layout: Layout | None = rec.layout
    names = dict(zip(rec.tasks["pid"].astype(int), rec.tasks["comm"].astype(str), strict=False))
    out.write('{"displayTimeUnit":"ns","traceEvents":[\n')
    first = True

    def emit(obj: dict[str, Any]) -> None:
        nonlocal first
        out.write(("" if first else ",\n") + json.dumps(obj, separators=(",", ":")))
        first = False

    for pid, comm in names.items():
        tgid = int(rec.tasks.loc[rec.tasks["pid"] == pid, "tgid"].iloc[0])
        emit(
            {"ph": "M", "name": "thread_name", "pid": tgid, "tid": int(pid), "args": {"name": comm}}
        )
    per_interval: dict[tuple[int, int], int] = {}
    interval_ns = int(rec.manifest.interval_s * 1e9)
    bytes_cache: dict[int, int] = {}
    for batch in rec.iter_events(EVENT_BATCH_ROWS):
        for r in batch.to_pylist():
            bv = int(r["xfeatures"])
            args: dict[str, Any] = {"xstate_bv": hex(bv)}
            if r["vso"] is not None:
                args["vso"] = r["vso"]
                args["live"] = ", ".join(decode(bv))
                if layout is not None:
                    if bv not in bytes_cache:
                        bytes_cache[bv] = layout.bytes_saved(bv)
                    args["bytes"] = bytes_cache[bv]
            if r["load_fpu"] is not None:
                args["load_fpu"] = r["load_fpu"]
            ts_us = r["ts_ns"] / 1000
            emit(
                {
                    "ph": "i",
                    "s": "t",
                    "name": r["event"],
                    "cat": "x86_fpu",
                    "ts": ts_us,
                    "pid": r["tgid"],
                    "tid": r["pid"],
                    "args": args,
                }
            )
            sign = SAVE_SIGN.get(r["event"], 0)  # a save: analysis/measures.py
            if sign:
                key = (r["tgid"], r["ts_ns"] // interval_ns)
                per_interval[key] = per_interval.get(key, 0) + sign
    for (tgid, slot), n in sorted(per_interval.items()):
        emit(
            {
                "ph": "C",
                "name": "saves per interval",
                "ts": slot * interval_ns / 1000,
                "pid": tgid,
                "args": {"saves": n},
            }
        )
    out.write("\n]}\n")
    return "events"


def stack_samples(rec: Recording) -> Any:
    """The recording's stack view, or a one-line error: it was recorded without --stacks."""
    from fptrace.analysis import stacks as stack_view

    view = stack_view.build(rec.stack_samples, rec.stacks, rec.tasks, rec.layout)
    if view is None:
        raise UsageError(
            f"{rec.path} has no stack samples: record with --stacks (fptrace record --stacks …)"
        )
    return view


def write_folded(rec: Recording, out: IO[str]) -> str:
    """record --stacks samples in the folded format (flamegraph.pl, speedscope, inferno)."""
    from fptrace.analysis import stacks as stack_view

    for line in stack_view.folded_lines(stack_samples(rec)):
        out.write(line + "\n")
    return "stacks"


def write_pprof_file(rec: Recording, out: IO[bytes]) -> str:
    """record --stacks samples as a gzipped pprof profile (reports/pprof.py)."""
    from fptrace.reports.pprof import write_pprof

    write_pprof(stack_samples(rec), out)
    return "stacks"


WRITERS = {
    "csv": write_csv,
    "jsonl": write_jsonl,
    "chrome-json": write_chrome_json,
    "folded": write_folded,
}
