"""Read a recording back as typed tables: the one entry point for every later stage."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.errors import RecordingError
from fptrace.recording.schema import FORMAT_NAME, FORMAT_VERSION, MANIFEST, PARTS_DIR, TABLES
from fptrace.recording.writer import merge_parts
from fptrace.xstate import Layout


@dataclass
class Recording:
    """A loaded recording: manifest plus the counts, tasks and vso tables.

    ``counts_table`` stays an Arrow table (it can hold millions of rows: one per interval
    and key); ``counts`` is the pandas view, made on first use.
    """

    path: Path
    manifest: dict[str, Any]
    counts_table: pa.Table
    tasks: pd.DataFrame
    vso: pd.DataFrame
    recovered: bool = False  # rebuilt from interval parts (fptrace did not finish cleanly)
    warnings: list[str] = field(default_factory=list)

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


def _read_table(path: Path, name: str) -> pa.Table:
    try:
        # Repeated strings (vso ids, event names) stay dictionary-encoded in memory.
        table = pq.read_table(path, read_dictionary=DICTIONARY_COLUMNS.get(name))
    except (OSError, pa.ArrowException) as exc:
        raise RecordingError(
            f"{path} is truncated or corrupt ({exc.__class__.__name__}): re-record, "
            "or delete the file to load the rest"
        ) from exc
    schema = TABLES[name]
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise RecordingError(f"{path} lacks columns {', '.join(missing)}: not an fptrace table")
    table = table.select(schema.names)
    target = pa.schema(
        [
            table.schema.field(f.name)
            if pa.types.is_dictionary(table.schema.field(f.name).type)
            and table.schema.field(f.name).type.value_type == f.type
            else f
            for f in schema
        ]
    )
    try:
        return table.cast(target)
    except (pa.ArrowException, ValueError) as exc:
        raise RecordingError(f"{path} has columns of the wrong type: {exc}") from exc


DICTIONARY_COLUMNS = {"counts": ["vso", "event"]}


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
    return manifest


def load_recording(path: str | Path) -> Recording:
    """Load and type-check a recording; rebuild it from its parts if it was never finished."""
    path = Path(path)
    manifest = load_manifest(path)
    parts = path / PARTS_DIR
    recovered = manifest.get("status") != "complete"
    warnings: list[str] = []
    tables: dict[str, pa.Table] = {}
    if recovered:
        if not parts.is_dir():
            raise RecordingError(
                f"{path} is incomplete (status {manifest.get('status')!r}) and has no parts"
            )
        try:
            tables = merge_parts(parts)
        except (OSError, pa.ArrowException) as exc:
            raise RecordingError(f"{parts} holds a corrupt part: {exc}") from exc
        warnings.append(
            "recording did not finish cleanly; rebuilt from its interval parts "
            "(at most the last interval is missing)"
        )
    else:
        for name in TABLES:
            tpath = path / f"{name}.parquet"
            if not tpath.exists():
                raise RecordingError(f"{path} lacks {name}.parquet: the recording is incomplete")
            tables[name] = _read_table(tpath, name)
    return Recording(
        path=path,
        manifest=manifest,
        counts_table=tables["counts"],
        tasks=_to_pandas(tables["tasks"]),
        vso=_to_pandas(tables["vso"]),
        recovered=recovered,
        warnings=warnings,
    )
