"""Write a recording directory so that a crash loses at most one drain interval.

While recording, every interval becomes small Parquet files under ``.parts/`` and the
manifest says ``"status": "recording"``.  A clean finish merges the parts into the three
tables and marks the manifest ``complete``; the loader can rebuild a recording from the
parts if fptrace was killed before that.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.errors import OutputExistsError, OutputWriteError
from fptrace.recording.manifest import Manifest, read_manifest
from fptrace.recording.schema import (
    ALL_TABLES,
    CALIBRATION,
    KERNEL_CONFIG,
    MANIFEST,
    PARTS_DIR,
    TABLES,
    accept_dictionaries,
)


class _NoPandas:
    """A meta path finder that makes ``import pandas`` fail (see :func:`skip_pandas_probe`)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas":
            raise ImportError("pandas is not needed to write a recording")


def skip_pandas_probe() -> None:
    """Answer pyarrow's one-time look for pandas with "not here", without importing pandas.

    Why: pyarrow's first ``pa.array()`` (also inside ``Table.from_pylist``) imports pandas to
    check whether its argument is a pandas object: ~0.25 s here, ~7 s in an emulated lab
    guest, in the middle of a recording.  Writing a recording never hands pandas objects to
    pyarrow.  Later, anything that does ask pyarrow for pandas (``to_pandas()``) imports it
    as usual.
    """
    if "pandas" in sys.modules:
        return
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def _owner() -> tuple[int, int] | None:
    """The invoking user under sudo, so files written as root belong to them."""
    uid, gid = os.environ.get("SUDO_UID"), os.environ.get("SUDO_GID")
    if os.geteuid() == 0 and uid and gid and uid.isdigit() and gid.isdigit():
        return int(uid), int(gid)
    return None


def chown_tree(path: Path) -> None:
    owner = _owner()
    if owner is None:
        return
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            with contextlib.suppress(OSError):
                os.chown(os.path.join(root, name), *owner)
    with contextlib.suppress(OSError):
        os.chown(path, *owner)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    with _written_whole(path) as tmp, open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())


class RecordingWriter:
    """Creates the directory, appends interval parts, and finalizes the tables."""

    def __init__(self, path: Path, force: bool = False) -> None:
        skip_pandas_probe()
        self.path = path
        if path.exists():
            if not force:
                raise OutputExistsError(path)
            if not path.is_dir():
                raise OutputExistsError(path, "is a file")
            if (path / MANIFEST).exists() or (path / PARTS_DIR).exists():
                shutil.rmtree(path)
            elif any(path.iterdir()):
                raise OutputExistsError(path, "is a non-empty directory that is not a recording")
        try:
            (path / PARTS_DIR).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputWriteError(path, exc) from exc
        self._seq = 0

    @property
    def parts(self) -> Path:
        return self.path / PARTS_DIR

    def write_manifest(self, manifest: Manifest) -> None:
        """Write manifest.json whole (the only place that writes one)."""
        _write_manifest(self.path, manifest)

    def write_kernel_config(self, text: str) -> None:
        """The running kernel's full config, gzipped, beside the manifest (which holds its
        hash and the FPU-relevant options)."""
        try:
            with _written_whole(self.path / KERNEL_CONFIG) as tmp, gzip.open(tmp, "wt") as f:
                f.write(text)
        except OSError as exc:
            raise OutputWriteError(self.path / KERNEL_CONFIG, exc) from exc

    def write_calibration(self, table: dict[str, Any]) -> None:
        """The cost table `fptrace bench` measured, as a file of its own (for --calibration)."""
        try:
            write_json_atomic(self.path / CALIBRATION, table)
        except OSError as exc:
            raise OutputWriteError(self.path / CALIBRATION, exc) from exc

    def finish_with(self, files: Mapping[Path, Sequence[str]], manifest: Manifest) -> None:
        """Finish with the files of finished recordings (directory → names) instead of parts:
        `bench --record` joins the benchmarks' results and the trace of them."""
        for source, names in files.items():
            for name in names:
                if (source / name).exists():
                    try:
                        shutil.copy(source / name, self.path / name)
                    except OSError as exc:
                        raise OutputWriteError(self.path / name, exc) from exc
        self.write_manifest(manifest)
        shutil.rmtree(self.parts, ignore_errors=True)
        chown_tree(self.path)

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to a table as one part file (no-op for no rows)."""
        if not rows:
            return
        self._seq += 1
        self._write(self.parts / f"{table}-{self._seq:06d}.parquet", table, rows)

    def append_table(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table as one part (bulk data such as events)."""
        if data.num_rows == 0:
            return
        self._seq += 1
        schema = accept_dictionaries(data.schema, ALL_TABLES[table])
        # lz4: fast, and the parts are rewritten when merged.
        self._write_table(self.parts / f"{table}-{self._seq:06d}.parquet", data.cast(schema), "lz4")

    def replace(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Replace the single 'latest' part of a table (tables that are snapshots: tasks)."""
        self._write(self.parts / f"{table}-latest.parquet", table, rows)

    def _write(self, dest: Path, table: str, rows: Sequence[dict[str, Any]]) -> None:
        self._write_table(dest, pa.Table.from_pylist(list(rows), schema=ALL_TABLES[table]))

    @staticmethod
    def _write_table(dest: Path, tbl: pa.Table, compression: str = "snappy") -> None:
        try:
            with _written_whole(dest) as tmp:
                pq.write_table(tbl, tmp, compression=compression)
        except OSError as exc:
            raise OutputWriteError(dest, exc) from exc

    def finalize(self, manifest: Manifest) -> None:
        """Merge the parts into the final tables, then write the manifest and drop parts."""
        try:
            write_merged(self.parts, self.path)
        except OSError as exc:
            raise OutputWriteError(self.path, exc) from exc
        self.write_manifest(manifest)
        shutil.rmtree(self.parts, ignore_errors=True)
        chown_tree(self.path)


def _write_manifest(directory: Path, manifest: Manifest) -> None:
    try:
        write_json_atomic(directory / MANIFEST, manifest.to_json())
    except OSError as exc:
        raise OutputWriteError(directory / MANIFEST, exc) from exc


def amend_manifest(directory: Path, **changes: Any) -> Manifest:
    """Rewrite a finished recording's manifest with some fields replaced (``fptrace lab``
    adds where the recording was made)."""
    manifest = read_manifest(directory / MANIFEST).with_(**changes)
    _write_manifest(directory, manifest)
    return manifest


@contextlib.contextmanager
def _written_whole(dest: Path) -> Iterator[Path]:
    """A temporary path to write ``dest`` at: renamed into place if the block succeeds,
    removed otherwise, so that a file is there whole or not at all."""
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        yield tmp
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# Rows per row group of a merged table.  The merge streams part by part and holds at most
# about this many rows (~15 MB of counts), so the end of a long recording costs about what
# a drain does (it used to load every table whole: 609 MB at the end of 200,000 processes;
# 1<<20 rows still added ~200 MB).
MERGE_ROWS = 1 << 17


def _part_files(parts: Path, name: str) -> list[Path]:
    """A table's parts in order: the numbered ones, then the 'latest' snapshot (``tasks``:
    exited tasks are appended once, for good; the live ones are replaced every interval)."""
    latest = parts / f"{name}-latest.parquet"
    files = sorted(p for p in parts.glob(f"{name}-[0-9]*.parquet"))
    return files + ([latest] if latest.exists() else [])


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    # ParquetFile, not read_table (which imports pyarrow.dataset), and a cast only where
    # a part's schema differs (a cast imports pyarrow.compute): ~3 s of a lab guest's
    # record under TCG for what is a plain concatenation.
    table = pq.ParquetFile(path).read().select(schema.names)
    return table if table.schema.equals(schema) else table.cast(schema)


def merge_parts(parts: Path) -> dict[str, pa.Table]:
    """Each table's parts concatenated in memory (to read an unfinished recording).

    Core tables are always present (empty if no part); optional ones only if written.
    """
    out: dict[str, pa.Table] = {}
    for name, schema in ALL_TABLES.items():
        tables = [_read_part(f, schema) for f in _part_files(parts, name)]
        if tables:
            out[name] = pa.concat_tables(tables)
        elif name in TABLES:
            out[name] = schema.empty_table()
    return out


def write_merged(parts: Path, dest: Path) -> None:
    """Write each table's parts into ``dest/<table>.parquet``, streaming (see MERGE_ROWS).

    Core tables are always written (empty if no part); optional ones only if recorded.
    Each file appears whole or not at all (a temporary file renamed into place).
    """
    for name, schema in ALL_TABLES.items():
        files = _part_files(parts, name)
        if not files and name not in TABLES:
            continue
        with (
            _written_whole(dest / f"{name}.parquet") as tmp,
            pq.ParquetWriter(tmp, schema) as out,
        ):
            held: list[pa.Table] = []
            rows = 0
            for f in files:
                held.append(_read_part(f, schema))
                rows += held[-1].num_rows
                if rows >= MERGE_ROWS:
                    out.write_table(pa.concat_tables(held))
                    held, rows = [], 0
                # Arrow's allocator keeps freed pages for reuse: hand them back, or the
                # process grows by what the merge went through (~180 MB at 200,000 tasks).
                pa.default_memory_pool().release_unused()
            if held:
                out.write_table(pa.concat_tables(held))
