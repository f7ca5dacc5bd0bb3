"""What a recording's tables may hold, checked as they are read: a recording is shared and
may have been edited, and a value fptrace never writes must be refused in one line rather
than make a wrong number or an unbounded amount of work.

- counts are whole numbers from 0 to 2**40 per row (2**40 events of one key in one interval
  is ~300 million a second for an hour), and their total stays far below 2**63 (int64 sums
  would wrap silently);
- no counts row is repeated whole (every column, times included) within a batch read: a row
  duplicated by an edit doubled every number.  (Rows may share the interval and the key
  columns: kernel keys that differ only in a TIF bit other than TIF_NEED_FPU_LOAD; their
  counts and times differ.)  Batches are about a million rows, so recordings below that are
  checked whole;
- identifiers (``vso``, ``event``) are at most 64 characters and texts (``comm``,
  ``cmdline``, ``cgroup``) at most 64 KiB: 100 KB ids in an events table made one CSV
  export take 23 GB and ten minutes;
- a task id appears once in the tasks table.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fptrace.errors import RecordingError

MAX_COUNT = 1 << 40
MAX_TOTAL = 1 << 62
MAX_ID_CHARS = 64
MAX_TEXT_CHARS = 64 << 10
ID_COLUMNS = ("vso", "event", "prev_vso")
TEXT_COLUMNS = ("comm", "cmdline", "cgroup", "function", "module")
ROW = ["interval", "task", "pid", "tgid", "vso", "event", "xfeatures", "load_fpu", "arg"]
ROW += ["count", "first_ns", "last_ns", "reason"]


def _refuse(path: Path, what: str) -> RecordingError:
    return RecordingError(
        f"{path}: {what}: the recording was damaged or edited; record again, or delete the "
        "file to load the rest"
    )


def _longest(col: pa.ChunkedArray | pa.Array) -> int:
    if pa.types.is_dictionary(col.type):
        col = (
            col.dictionary
            if isinstance(col, pa.Array)
            else pa.chunked_array([c.dictionary for c in col.chunks], col.type.value_type)
        )
    if len(col) == 0:
        return 0
    longest = pc.max(pc.utf8_length(col)).as_py()
    return int(longest or 0)


# Columns that are never null in what fptrace writes (the others may be: a VSO for an aux
# event, load_fpu where not read, an exit time of a live task...).
REQUIRED = {
    "counts": ("interval", "task", "pid", "tgid", "event", "xfeatures", "arg", "count"),
    "tasks": ("task", "pid", "tgid", "comm", "switches", "oncpu_ns", "first_ns", "execs"),
    "vso": ("vso", "task", "pid", "tgid", "size", "user_size", "xfeatures", "xcomp_bv"),
    "events": ("ts_ns", "cpu", "task", "pid", "tgid", "event", "xfeatures"),
    "intervals": ("interval", "start_ns", "end_ns"),
    "bench": ("bench", "state", "metric", "ns"),
    "stack_samples": ("task", "pid", "tgid", "xfeatures", "samples"),
    "stacks": ("stack", "depth", "function", "module", "kernel"),
}


def check_table(name: str, table: pa.Table | pa.RecordBatch, path: Path) -> None:
    """A table (or a batch of one): no null where fptrace never writes one, nothing negative
    that cannot be, and identifiers and texts within their bounds."""
    for column in REQUIRED.get(name, ()):
        if column in table.schema.names and table.column(column).null_count:
            raise _refuse(path, f"{column} is missing (null) in some rows")
    for column in NOT_NEGATIVE.get(name, ()):
        if column in table.schema.names and len(table):
            low = pc.min(table.column(column)).as_py()
            if low is not None and low < 0:
                raise _refuse(path, f"a negative {column} ({low:,})")
    check_strings(table, path)


def check_strings(table: pa.Table | pa.RecordBatch, path: Path) -> None:
    """Identifiers and texts within their bounds."""
    for name, limit in [(c, MAX_ID_CHARS) for c in ID_COLUMNS] + [
        (c, MAX_TEXT_CHARS) for c in TEXT_COLUMNS
    ]:
        if name in table.schema.names:
            longest = _longest(table.column(name))
            if longest > limit:
                raise _refuse(path, f"a {name} of {longest:,} characters (at most {limit:,})")


class CountsCheck:
    """Checks the counts table batch by batch, as it streams past (see the module)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0

    def __call__(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        names = batch.schema.names
        if "count" in names and batch.num_rows:
            count = batch.column("count")
            low, high = pc.min(count).as_py(), pc.max(count).as_py()
            if (low is not None and low < 0) or (high is not None and high > MAX_COUNT):
                raise _refuse(self.path, f"a count of {low if low < 0 else high:,} (0 to 2**40)")
            self.total += int(pc.sum(count).as_py() or 0)
            if self.total > MAX_TOTAL:
                raise _refuse(self.path, "counts that add up beyond 2**62")
        check_table("counts", batch, self.path)
        if all(k in names for k in ROW) and batch.num_rows > 1:
            table = pa.Table.from_batches([batch]).select(ROW).unify_dictionaries()
            rows = table.group_by(ROW).aggregate([([], "count_all")])
            if rows.num_rows < batch.num_rows:
                raise _refuse(
                    self.path,
                    f"{batch.num_rows - rows.num_rows:,} rows repeat another row whole "
                    "(every number would count them twice)",
                )
        return batch


# Columns whose values cannot be negative (a negative interval drew bars of NaN width).
NOT_NEGATIVE = {
    "counts": ("interval", "count"),
    "intervals": ("interval", "start_ns", "end_ns"),
    "events": ("cpu",),
    "tasks": ("switches", "oncpu_ns", "execs"),
    "vso": ("size", "user_size"),
}


def check_footer(name: str, metadata: pq.FileMetaData, path: Path) -> None:
    """What the Parquet footer's statistics tell without reading a row: nulls in a column
    fptrace always fills, negative values, counts out of range.  Readers that go around
    the batch checks (DuckDB, for compare and fleet) see only files that passed this."""
    schema = metadata.schema.to_arrow_schema()
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for i in range(group.num_columns):
            col = group.column(i)
            column, stats = schema.field(i).name, col.statistics
            if stats is None:
                continue
            if column in REQUIRED.get(name, ()) and stats.null_count:
                raise _refuse(path, f"{column} is missing (null) in some rows")
            if not stats.has_min_max:
                continue
            if column in NOT_NEGATIVE.get(name, ()) and stats.min < 0:
                raise _refuse(path, f"a negative {column} ({stats.min:,})")
            if name == "counts" and column == "count":
                if stats.max > MAX_COUNT:
                    raise _refuse(path, f"a count of {stats.max:,} (0 to 2**40)")
                total += stats.max * group.num_rows
    if total > MAX_TOTAL:
        raise _refuse(path, "counts that may add up beyond 2**62")


def check_tasks(table: pa.Table, path: Path) -> None:
    """One row per task id; texts within bounds."""
    check_table("tasks", table, path)
    ids = table.column("task")
    if len(pc.unique(ids)) < len(ids):
        raise _refuse(path, "a task id appears in more than one row")
