"""Read a recording back as typed tables: the one entry point for every later stage."""

from __future__ import annotations

import gzip
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.errors import OutputWriteError, RecordingError
from fptrace.recording.checks import CountsCheck, check_footer, check_table, check_tasks
from fptrace.recording.manifest import Manifest, read_manifest
from fptrace.recording.schema import (
    ADDED_COLUMNS,
    ALL_TABLES,
    EVENTS,
    KERNEL_CONFIG,
    MANIFEST,
    PARTS_DIR,
    TABLES,
    accept_dictionaries,
    with_added_columns,
)
from fptrace.recording.writer import merge_parts
from fptrace.xstate import Layout

# Repeated strings (VSO ids, event names) stay dictionary-encoded in memory.
DICTIONARY_COLUMNS = {"counts": ["vso", "event", "reason"]}
BATCH_ROWS = 1 << 20
KERNEL_CONFIG_MAX = 16 << 20


def with_task_ids(table: pa.Table) -> pa.Table:
    """Recordings made before the ``task`` column: each pid was one task (as they assumed)."""
    if "task" in table.schema.names or "pid" not in table.schema.names:
        return table
    return table.append_column("task", table.column("pid").cast(pa.int64()))


def _check_columns(path: Path, found: pa.Schema, name: str) -> None:
    missing = [f.name for f in ALL_TABLES[name] if f.name not in found.names]
    if missing:
        raise RecordingError(f"{path} lacks columns {', '.join(missing)}: not an fptrace table")


def _corrupt(path: Path, exc: Exception) -> RecordingError:
    return RecordingError(
        f"{path} is truncated or corrupt ({exc.__class__.__name__}): re-record, "
        "or delete the file to load the rest"
    )


def _open_regular(path: Path) -> BinaryIO:
    """A table file opened for reading, if it is a regular file: a FIFO blocked every reader
    and a symlink to /dev/zero was read until memory ran out."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _corrupt(path, exc) from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise RecordingError(
            f"{path} is not a regular file: replace it with the recording's own, or delete it"
        )
    return os.fdopen(fd, "rb")


def _read_table(path: Path, name: str) -> pa.Table:
    try:
        with _open_regular(path) as f:
            table = pq.read_table(f, read_dictionary=DICTIONARY_COLUMNS.get(name))
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, exc) from exc
    table = with_added_columns(with_task_ids(table), name, ALL_TABLES[name])
    _check_columns(path, table.schema, name)
    table = table.select(ALL_TABLES[name].names)
    try:
        table = table.cast(accept_dictionaries(table.schema, ALL_TABLES[name]))
    except (pa.ArrowException, ValueError) as exc:
        raise RecordingError(f"{path} has columns of the wrong type: {exc}") from exc
    return _checked(name, table, path)


def _first_of_each(table: pa.Table, key: str) -> pa.Table:
    ids = table.column(key).to_pylist()
    seen: set[object] = set()
    keep = [not (i in seen or seen.add(i)) for i in ids]  # type: ignore[func-returns-value]
    return table if all(keep) else table.filter(pa.array(keep))


def _checked(name: str, table: pa.Table, path: Path) -> pa.Table:
    """A small table (not counts or events, which are checked as they stream), checked."""
    if name == "tasks":
        check_tasks(table, path)
    else:
        check_table(name, table, path)
    return table


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    # Nullable integer columns stay integers (no float NaN): types_mapper keeps them exact.
    # Dictionary-encoded strings become plain strings here: the pandas view is for small data.
    plain = table.cast(
        pa.schema(
            [
                pa.field(f.name, f.type.value_type) if pa.types.is_dictionary(f.type) else f
                for f in table.schema
            ]
        )
    )
    return plain.to_pandas(types_mapper=pd.ArrowDtype)


@dataclass
class Recording:
    """A loaded recording: manifest, the tasks and vso tables, and access to the counts.

    The counts table can hold millions of rows (one per interval and key): analyses stream
    it with :meth:`iter_counts`; ``counts_table`` (Arrow) and ``counts`` (pandas) read it
    whole, for small recordings and tests.
    """

    path: Path
    manifest: Manifest
    tasks: pd.DataFrame
    vso: pd.DataFrame
    recovered: bool = False  # rebuilt from interval parts (fptrace did not finish cleanly)
    warnings: list[str] = field(default_factory=list)
    bench: pd.DataFrame | None = None  # benchmark results, if `fptrace bench` wrote them
    stack_samples: pd.DataFrame | None = None  # record --stacks
    stacks: pd.DataFrame | None = None
    intervals: pd.DataFrame | None = None  # real interval spans (None: recorded before them)
    _counts_in_memory: pa.Table | None = None  # recovered recordings: merged from parts
    _events_in_memory: pa.Table | None = None
    _duration_s: float | None = None  # recovered recordings: the span their parts cover

    @property
    def counts_file(self) -> Path:
        return self.path / "counts.parquet"

    def iter_counts(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The counts table in batches of at most about a million rows, each checked
        (recording/checks.py) as it passes."""
        check = CountsCheck(self.counts_file)
        yield from map(check, self._counts_batches(columns))

    def _counts_batches(self, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
        if self._counts_in_memory is not None:
            table = self._counts_in_memory
            yield from (table.select(columns) if columns else table).to_batches(BATCH_ROWS)
            return
        with _open_regular(self.counts_file) as f:
            yield from self._counts_file_batches(f, columns)

    def _counts_file_batches(
        self, f: BinaryIO, columns: list[str] | None
    ) -> Iterator[pa.RecordBatch]:
        try:
            meta = pq.read_metadata(f)
            present = set(meta.schema.names)
            dictionary = [c for c in DICTIONARY_COLUMNS["counts"] if c in present]
            pf = pq.ParquetFile(f, metadata=meta, read_dictionary=dictionary)
            added = [c for c in ADDED_COLUMNS["counts"] if c not in present]
            if "task" in present and not added:
                yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
                return
            # An older file: before the task column each pid was one task; columns added
            # since are null.
            want = None if columns is None else [c for c in columns if c in present]
            if want is not None and "task" not in present and "task" in (columns or []):
                want.append("pid")
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=want):
                table = with_task_ids(pa.Table.from_batches([batch]))
                table = with_added_columns(table, "counts", ALL_TABLES["counts"])
                yield from table.select(columns or table.schema.names).to_batches()
        except (OSError, pa.ArrowException) as exc:
            raise _corrupt(self.counts_file, exc) from exc

    @cached_property
    def counts_table(self) -> pa.Table:
        table = self._counts_in_memory
        if table is None:
            table = _read_table(self.counts_file, "counts").unify_dictionaries()
        check = CountsCheck(self.counts_file)
        for batch in table.to_batches(BATCH_ROWS):
            check(batch)
        return table

    @cached_property
    def counts(self) -> pd.DataFrame:
        return _to_pandas(self.counts_table)

    @property
    def has_events(self) -> bool:
        """Whether it was recorded with ``--events`` (one row per event)."""
        return self._events_in_memory is not None or (self.path / EVENTS).exists()

    def iter_events(self, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
        """The events table in batches (``--events`` recordings; see :attr:`has_events`)."""
        path = self.path / EVENTS
        if self._events_in_memory is not None:
            for batch in self._events_in_memory.to_batches(batch_rows):
                check_table("events", batch, path)
                yield batch
            return
        names = ALL_TABLES["events"].names
        with _open_regular(path) as f:
            try:
                footer = pq.ParquetFile(f).metadata
                _check_types(path, footer.schema.to_arrow_schema(), "events")
                check_footer("events", footer, path)
                pf = pq.ParquetFile(f, metadata=footer, read_dictionary=["vso", "event"])
                for batch in pf.iter_batches(batch_size=batch_rows, columns=names):
                    check_table("events", batch, path)  # before a row is turned into text
                    yield batch
            except (OSError, pa.ArrowException) as exc:
                raise _corrupt(path, exc) from exc

    def events_table(self) -> pa.Table:
        """The whole events table (for views that need it sorted; others stream it)."""
        batches = list(self.iter_events())
        schema = ALL_TABLES["events"]
        if not batches:
            return schema.empty_table()
        return pa.Table.from_batches(batches).unify_dictionaries().cast(schema)

    def kernel_config(self) -> dict[str, str] | None:
        """The traced kernel's full config (``CONFIG_X`` → value), if the recording kept it."""
        from fptrace.collectors.host import parse_config

        try:
            with _open_regular(self.path / KERNEL_CONFIG) as raw, gzip.GzipFile(fileobj=raw) as f:
                text = f.read(KERNEL_CONFIG_MAX + 1)
        except (RecordingError, OSError, EOFError):
            return None
        if len(text) > KERNEL_CONFIG_MAX:  # a config is ~300 kB; this is not one
            return None
        return parse_config(text.decode("utf-8", "replace"))

    @property
    def layout(self) -> Layout | None:
        return self.manifest.layout

    @property
    def duration_s(self) -> float:
        """Traced seconds: the manifest's, or for a recording that never finished, up to the
        last drain it wrote (rates would otherwise all be 0)."""
        return self.manifest.duration_s or self._duration_s or 0.0


def load_manifest(path: Path) -> Manifest:
    """A recording directory's manifest, validated and migrated (see recording/manifest.py)."""
    if not path.exists():
        raise RecordingError(f"{path} does not exist: give the directory `fptrace record` wrote")
    if not path.is_dir():
        raise RecordingError(f"{path} is not a recording: a recording is a directory")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise RecordingError(f"{path} is not an fptrace recording (no {MANIFEST})")
    return read_manifest(mpath)


def _span_s(tables: dict[str, pa.Table]) -> float | None:
    """How long an unfinished recording ran, from what its parts hold: the last drain's end
    (intervals), else the last time a count was seen."""
    for name, column in (("intervals", "end_ns"), ("counts", "last_ns")):
        table = tables.get(name)
        if table is not None and table.num_rows:
            last = max((v for v in table.column(column).to_pylist() if v is not None), default=0)
            if last > 0:
                return round(last / 1e9, 3)
    return None


def _check_counts_file(path: Path) -> None:
    """Open the (possibly huge) counts file's footer and schema without reading its rows."""
    _check_file_footer(path, "counts", pid_is_task=True)


def checked_file(path: Path, name: str) -> Path | None:
    """``path`` (a finished recording's ``name`` table), once its footer passed the checks
    (types, nulls, ranges): what a reader that goes around the batch checks may open (DuckDB,
    for compare and fleet).  None for a table written before task ids (read it through
    :func:`load_recording`)."""
    return path if _check_file_footer(path, name, pid_is_task=False) else None


def _check_file_footer(path: Path, name: str, pid_is_task: bool) -> bool:
    """A table file's footer and schema checked without reading its rows; False if it has no
    task column (and ``pid_is_task`` does not allow that: iter_counts adds it).  Columns a
    newer format added may be missing: the readers add them, null."""
    try:
        with _open_regular(path) as f:
            footer = pq.ParquetFile(f).metadata
            schema = footer.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, exc) from exc
    if "task" not in schema.names:
        if not pid_is_task:
            return False
        if "pid" in schema.names:  # else _check_types refuses it: not an fptrace table
            schema = schema.append(pa.field("task", pa.int64()))
    for col in ADDED_COLUMNS.get(name, ()):
        if col not in schema.names:
            schema = schema.append(ALL_TABLES[name].field(col))
    _check_types(path, schema, name)
    check_footer(name, footer, path)
    return True


def _check_types(path: Path, schema: pa.Schema, name: str) -> None:
    """Every column there, of its type (a large table is streamed: not cast whole)."""
    _check_columns(path, schema, name)
    for f in ALL_TABLES[name]:
        got = schema.field(f.name).type
        if got != f.type and not (pa.types.is_dictionary(got) and got.value_type == f.type):
            raise RecordingError(f"{path} has column {f.name} of type {got}, expected {f.type}")


def load_recording(path: str | Path) -> Recording:
    """Load and type-check a recording; rebuild it from its parts if it was never finished."""
    path = Path(path)
    manifest = load_manifest(path)
    parts = path / PARTS_DIR
    recovered = manifest.status != "complete"
    if recovered:
        if not parts.is_dir():
            raise RecordingError(
                f"{path} is incomplete (status {manifest.status!r}) and has no parts"
            )
        try:
            tables, skipped = merge_parts(parts)
        except (OSError, pa.ArrowException, OutputWriteError) as exc:
            raise RecordingError(f"{parts} cannot be read: {exc}") from exc
        # Killed between a drain's parts, a task can be in an exited-tasks part and still in
        # the 'latest' snapshot: the exited row (first) is the final one.
        tables["tasks"] = _first_of_each(tables["tasks"], "task")
        for name in ("tasks", "vso"):
            _checked(name, tables[name], parts / name)
        return Recording(
            path=path,
            manifest=manifest,
            tasks=_to_pandas(tables["tasks"]),
            vso=_to_pandas(tables["vso"]),
            recovered=True,
            bench=_to_pandas(tables["bench"]) if "bench" in tables else None,
            stack_samples=_to_pandas(tables["stack_samples"])
            if "stack_samples" in tables
            else None,
            stacks=_to_pandas(tables["stacks"]) if "stacks" in tables else None,
            intervals=_to_pandas(tables["intervals"]) if "intervals" in tables else None,
            warnings=[
                "recording did not finish cleanly; rebuilt from its interval parts "
                "(at most the last interval is missing)"
            ]
            + (
                [f"left out {len(skipped)} unreadable part(s) ({', '.join(skipped[:3])})"]
                if skipped
                else []
            ),
            _duration_s=_span_s(tables),
            _counts_in_memory=tables["counts"],
            _events_in_memory=tables.get("events"),
        )
    small = {}
    for name in TABLES:
        tpath = path / f"{name}.parquet"
        if not tpath.exists():
            raise RecordingError(f"{path} lacks {name}.parquet: the recording is incomplete")
        if name == "counts":
            _check_counts_file(tpath)
        else:
            small[name] = _read_table(tpath, name)

    def optional(name: str) -> pd.DataFrame | None:
        tpath = path / f"{name}.parquet"
        return _to_pandas(_read_table(tpath, name)) if tpath.exists() else None

    return Recording(
        path=path,
        manifest=manifest,
        tasks=_to_pandas(small["tasks"]),
        vso=_to_pandas(small["vso"]),
        bench=optional("bench"),
        stack_samples=optional("stack_samples"),
        stacks=optional("stacks"),
        intervals=optional("intervals"),
    )
