"""Read a recording back as typed tables: the one entry point for every later stage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.errors import RecordingError
from fptrace.recording.schema import (
    ALL_TABLES,
    FORMAT_NAME,
    FORMAT_VERSION,
    MANIFEST,
    PARTS_DIR,
    TABLES,
    accept_dictionaries,
)
from fptrace.recording.writer import merge_parts
from fptrace.xstate import Layout

# Repeated strings (VSO ids, event names) stay dictionary-encoded in memory.
DICTIONARY_COLUMNS = {"counts": ["vso", "event"]}
BATCH_ROWS = 1 << 20


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


def _read_table(path: Path, name: str) -> pa.Table:
    try:
        table = pq.read_table(path, read_dictionary=DICTIONARY_COLUMNS.get(name))
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, exc) from exc
    table = with_task_ids(table)
    _check_columns(path, table.schema, name)
    table = table.select(ALL_TABLES[name].names)
    try:
        return table.cast(accept_dictionaries(table.schema, ALL_TABLES[name]))
    except (pa.ArrowException, ValueError) as exc:
        raise RecordingError(f"{path} has columns of the wrong type: {exc}") from exc


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
    manifest: dict[str, Any]
    tasks: pd.DataFrame
    vso: pd.DataFrame
    recovered: bool = False  # rebuilt from interval parts (fptrace did not finish cleanly)
    warnings: list[str] = field(default_factory=list)
    bench: pd.DataFrame | None = None  # benchmark results, if `fptrace bench` wrote them
    intervals: pd.DataFrame | None = None  # real interval spans (None: recorded before them)
    _counts_in_memory: pa.Table | None = None  # recovered recordings: merged from parts

    @property
    def counts_file(self) -> Path:
        return self.path / "counts.parquet"

    def iter_counts(self, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The counts table in batches of at most about a million rows."""
        if self._counts_in_memory is not None:
            table = self._counts_in_memory
            yield from (table.select(columns) if columns else table).to_batches(BATCH_ROWS)
            return
        try:
            pf = pq.ParquetFile(self.counts_file, read_dictionary=DICTIONARY_COLUMNS["counts"])
            if "task" in pf.schema_arrow.names:
                yield from pf.iter_batches(batch_size=BATCH_ROWS, columns=columns)
                return
            # Written before the task column: each pid was one task.
            want = None if columns is None else [c for c in columns if c != "task"]
            if want is not None and columns and "task" in columns and "pid" not in want:
                want.append("pid")
            for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=want):
                table = with_task_ids(pa.Table.from_batches([batch]))
                yield from table.select(columns or table.schema.names).to_batches()
        except (OSError, pa.ArrowException) as exc:
            raise _corrupt(self.counts_file, exc) from exc

    @cached_property
    def counts_table(self) -> pa.Table:
        if self._counts_in_memory is not None:
            return self._counts_in_memory
        return _read_table(self.counts_file, "counts").unify_dictionaries()

    @cached_property
    def counts(self) -> pd.DataFrame:
        return _to_pandas(self.counts_table)

    @property
    def layout(self) -> Layout | None:
        comps = self.manifest.get("host", {}).get("xstate", {}).get("components")
        return Layout.from_json(comps) if comps else None

    @property
    def duration_s(self) -> float:
        return float(self.manifest.get("duration_s") or 0.0)


# The JSON type of each manifest field fptrace reads (a path: "host.xstate"; "drops.*": each
# value).  Fields not listed are kept as written.  A recording is shared between people and
# may have been edited: a field of the wrong type is named in a one-line error here rather
# than failing as an internal error wherever it is first used.
NUMBER = (int, float)
MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "status": (str,),
    "backend": (str,),
    "clock": (str,),
    "started_at": (str,),
    "ended_at": (str,),
    "fptrace_version": (str,),
    "duration_s": NUMBER,
    "interval_s": NUMBER,
    "startup_s": NUMBER,
    "intervals": (int,),
    "attach_monotonic_ns": (int,),
    "events": (int, dict),  # an object; a bare count before it became one (migrated)
    "events.counted": (int,),
    "command_line": (list,),
    "host": (dict,),
    "host.xstate": (dict,),
    "host.xstate.components": (list,),
    "probes": (dict,),
    "target": (dict,),
    "drops": (dict,),
    "drops.*": (int,),
    "drains": (dict,),
    "load_fpu": (dict,),
    "bench": (dict,),
    "lab": (dict,),
    "record_check": (dict,),
    "calibration": (dict,),
}
JSON_NAMES = {
    dict: "an object",
    list: "a list",
    str: "a string",
    int: "a whole number",
    float: "a number",
    bool: "true/false",
    type(None): "null",
}


def check_manifest(mpath: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose known fields have the wrong JSON type, naming the field."""
    for path, types in MANIFEST_FIELDS.items():
        *parents, last = path.split(".")
        node: Any = manifest
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue  # the parent is missing (or already reported)
        items = node.items() if last == "*" else [(last, node[last])] if last in node else []
        for name, value in items:
            if value is None:  # null: not known (e.g. an unfinished run's end)
                continue
            ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
            if not ok:
                where = ".".join([*parents, str(name)])
                want = " or ".join(JSON_NAMES[t] for t in types)
                got = JSON_NAMES.get(type(value), type(value).__name__)
                raise RecordingError(
                    f"{mpath}: field {where!r} is {got}, not {want}: the recording was "
                    "damaged or edited; restore that field or record again"
                )


def load_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecordingError(f"{path} does not exist: give the directory `fptrace record` wrote")
    if not path.is_dir():
        raise RecordingError(f"{path} is not a recording: a recording is a directory")
    mpath = path / MANIFEST
    if not mpath.exists():
        raise RecordingError(f"{path} is not an fptrace recording (no {MANIFEST})")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{mpath} is unreadable or not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise RecordingError(f"{mpath} is not an fptrace manifest (format is not {FORMAT_NAME!r})")
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise RecordingError(f"{mpath} has no format_version")
    if version > FORMAT_VERSION:
        raise RecordingError(
            f"{path} is format version {version}, newer than this fptrace reads "
            f"({FORMAT_VERSION}): upgrade fptrace"
        )
    check_manifest(mpath, manifest)
    return migrate_manifest(manifest)


def migrate_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """Older manifests in today's shape, so that readers handle one: ``events`` was a bare
    count without ``--events`` and an object (without the count) with it."""
    events = manifest.get("events")
    if isinstance(events, int):
        manifest["events"] = {"counted": events}
    elif isinstance(events, dict) and "counted" not in events:
        manifest["events"] = {"counted": None} | events
    return manifest


def _check_counts_file(path: Path) -> None:
    """Open the (possibly huge) counts file's footer and schema without reading its rows."""
    try:
        schema = pq.ParquetFile(path).schema_arrow
    except (OSError, pa.ArrowException) as exc:
        raise _corrupt(path, exc) from exc
    if "task" not in schema.names and "pid" in schema.names:
        schema = schema.append(pa.field("task", pa.int64()))  # iter_counts adds it
    _check_columns(path, schema, "counts")
    for f in TABLES["counts"]:
        got = schema.field(f.name).type
        if got != f.type and not (pa.types.is_dictionary(got) and got.value_type == f.type):
            raise RecordingError(f"{path} has column {f.name} of type {got}, expected {f.type}")


def load_recording(path: str | Path) -> Recording:
    """Load and type-check a recording; rebuild it from its parts if it was never finished."""
    path = Path(path)
    manifest = load_manifest(path)
    parts = path / PARTS_DIR
    recovered = manifest.get("status") != "complete"
    if recovered:
        if not parts.is_dir():
            raise RecordingError(
                f"{path} is incomplete (status {manifest.get('status')!r}) and has no parts"
            )
        try:
            tables = merge_parts(parts)
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"{parts} holds a corrupt part: {exc}") from exc
        return Recording(
            path=path,
            manifest=manifest,
            tasks=_to_pandas(tables["tasks"]),
            vso=_to_pandas(tables["vso"]),
            recovered=True,
            bench=_to_pandas(tables["bench"]) if "bench" in tables else None,
            intervals=_to_pandas(tables["intervals"]) if "intervals" in tables else None,
            warnings=[
                "recording did not finish cleanly; rebuilt from its interval parts "
                "(at most the last interval is missing)"
            ],
            _counts_in_memory=tables["counts"],
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
        intervals=optional("intervals"),
    )
