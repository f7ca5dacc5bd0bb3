"""Write a recording directory so that a crash loses at most one drain interval.

While recording, every interval becomes small Parquet files under ``.parts/`` and the
manifest says ``"status": "recording"``.  A clean finish merges the parts into the three
tables and marks the manifest ``complete``; the loader can rebuild a recording from the
parts if fptrace was killed before that.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from fptrace.errors import OutputWriteError
from fptrace.recording.manifest import Manifest, read_manifest
from fptrace.recording.outdir import OutputDir
from fptrace.recording.schema import (
    ALL_TABLES,
    CALIBRATION,
    KERNEL_CONFIG,
    MANIFEST,
    PARTS_DIR,
    TABLES,
    accept_dictionaries,
    with_added_columns,
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


def _write_json(directory: OutputDir, name: str, data: dict[str, Any]) -> None:
    with directory.written_whole(name, text=True) as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


class RecordingWriter:
    """Creates the directory, appends interval parts, and finalizes the tables.

    Every file is created through :class:`~fptrace.recording.outdir.OutputDir` (relative to
    the directory, never following a symlink, whole or not at all, owned by the invoking
    user under sudo)."""

    def __init__(self, path: Path, force: bool = False) -> None:
        skip_pandas_probe()
        self.path = path
        self.dir = OutputDir.create(path, force)
        try:
            self.parts_dir = self.dir.make_dir(PARTS_DIR)
        except BaseException:
            self.dir.close()
            raise
        self._seq = 0
        # Set by `fptrace agent`: a part that cannot be written (a full disk) is counted and
        # left out, and tracing goes on; else the error ends the recording.
        self.on_write_error: Callable[[Exception], None] | None = None
        self.parts_dropped = 0

    @property
    def parts(self) -> Path:
        return self.path / PARTS_DIR

    def write_manifest(self, manifest: Manifest) -> None:
        """Write manifest.json whole (the only place that writes one)."""
        try:
            _write_json(self.dir, MANIFEST, manifest.to_json())
        except (OSError, OutputWriteError) as exc:
            if self.on_write_error is None:
                raise
            self.on_write_error(exc)  # the agent: the parts alone still make a recording

    def write_kernel_config(self, text: str) -> None:
        """The running kernel's full config, gzipped, beside the manifest (which holds its
        hash and the FPU-relevant options)."""
        with self.dir.written_whole(KERNEL_CONFIG) as raw, gzip.open(raw, "wt") as f:
            f.write(text)

    def write_calibration(self, table: dict[str, Any]) -> None:
        """The cost table `fptrace bench` measured, as a file of its own (for --calibration)."""
        _write_json(self.dir, CALIBRATION, table)

    def finish_with(self, files: Mapping[Path, Sequence[str]], manifest: Manifest) -> None:
        """Finish with the files of finished recordings (directory → names) instead of parts:
        `bench --record` joins the benchmarks' results and the trace of them."""
        for source, names in files.items():
            with OutputDir.existing(source) as src:
                for name in names:
                    try:
                        f = src.open_read(name)
                    except FileNotFoundError:
                        continue
                    except OSError as exc:
                        raise OutputWriteError(source / name, exc) from exc
                    with f, self.dir.written_whole(name) as out:
                        shutil.copyfileobj(f, out)
        self.write_manifest(manifest)
        self._drop_parts()

    def append(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append rows to a table as one part file (no-op for no rows)."""
        if not rows:
            return
        self._seq += 1
        self._write(f"{table}-{self._seq:06d}.parquet", table, rows)

    def append_table(self, table: str, data: pa.Table) -> None:
        """Append an Arrow table as one part (bulk data such as events)."""
        if data.num_rows == 0:
            return
        self._seq += 1
        schema = accept_dictionaries(data.schema, ALL_TABLES[table])
        # lz4: fast, and the parts are rewritten when merged.
        self._write_table(f"{table}-{self._seq:06d}.parquet", data.cast(schema), "lz4")

    def replace(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        """Replace the single 'latest' part of a table (tables that are snapshots: tasks)."""
        self._write(f"{table}-latest.parquet", table, rows)

    def _write(self, name: str, table: str, rows: Sequence[dict[str, Any]]) -> None:
        self._write_table(name, pa.Table.from_pylist(list(rows), schema=ALL_TABLES[table]))

    def _write_table(self, name: str, tbl: pa.Table, compression: str = "snappy") -> None:
        try:
            with self.parts_dir.written_whole(name) as f:
                pq.write_table(tbl, f, compression=compression)
        except (OSError, OutputWriteError) as exc:
            if self.on_write_error is None:
                raise
            self.parts_dropped += 1
            self.on_write_error(exc)

    def finalize(self, manifest: Manifest) -> None:
        """Merge the parts into the final tables, then write the manifest and drop parts."""
        try:
            write_merged(self.parts_dir, self.dir)
        except OSError as exc:
            raise OutputWriteError(self.path, exc) from exc
        self.write_manifest(manifest)
        self._drop_parts()

    def hand_off(self, manifest: Manifest) -> None:
        """Leave the merge to :func:`finish_recording` in another process (`fptrace agent`:
        a rotation must not hold up the drains): the final manifest goes beside the parts,
        as PENDING_MANIFEST; until the merge, the recording reads as an unfinished one."""
        try:
            _write_json(self.parts_dir, PENDING_MANIFEST, manifest.to_json())
        finally:
            self.close()

    def _drop_parts(self) -> None:
        """Once the tables hold them, the parts go (and so does the directory's descriptor)."""
        self.parts_dir.close()
        self.dir.remove_dir(PARTS_DIR)
        self.close()

    def close(self) -> None:
        """Let go of the directory (an unfinished recording keeps its parts: the loader
        rebuilds it from them)."""
        self.parts_dir.close()
        self.dir.close()


PENDING_MANIFEST = "manifest.final.json"  # in .parts/: the manifest a hand-off finishes with


def pending(path: Path) -> bool:
    """Whether ``path`` is a recording handed off and not yet finished."""
    return (path / PARTS_DIR / PENDING_MANIFEST).is_file()


def finish_recording(path: Path) -> Manifest:
    """Finish a handed-off recording: merge its parts into the tables, then write the pending
    manifest as manifest.json and drop the parts (the same steps as ``finalize``)."""
    from fptrace.recording.manifest import read_manifest

    manifest = read_manifest(path / PARTS_DIR / PENDING_MANIFEST)
    with OutputDir.existing(path) as dest, OutputDir.existing(path / PARTS_DIR) as parts:
        try:
            write_merged(parts, dest)
        except OSError as exc:
            raise OutputWriteError(path, exc) from exc
        _write_json(dest, MANIFEST, manifest.to_json())
    with OutputDir.existing(path) as dest:
        dest.remove_dir(PARTS_DIR)
    return manifest


def amend_manifest(directory: Path, **changes: Any) -> Manifest:
    """Rewrite a finished recording's manifest with some fields replaced (``fptrace lab``
    adds where the recording was made)."""
    manifest = read_manifest(directory / MANIFEST).with_(**changes)
    with OutputDir.existing(directory) as d:
        _write_json(d, MANIFEST, manifest.to_json())
    return manifest


# Rows per row group of a merged table.  The merge streams part by part and holds at most
# about this many rows (~15 MB of counts), so the end of a long recording costs about what
# a drain does (it used to load every table whole: 609 MB at the end of 200,000 processes;
# 1<<20 rows still added ~200 MB).
MERGE_ROWS = 1 << 17


def _part_names(names: Iterable[str], table: str) -> list[str]:
    """A table's parts in order: the numbered ones, then the 'latest' snapshot (``tasks``:
    exited tasks are appended once, for good; the live ones are replaced every interval)."""
    numbered = sorted(n for n in names if re.fullmatch(rf"{table}-\d+\.parquet", n))
    latest = f"{table}-latest.parquet"
    return numbered + ([latest] if latest in names else [])


def _read_part(f: Any, name: str, schema: pa.Schema) -> pa.Table:
    # ParquetFile, not read_table (which imports pyarrow.dataset), and a cast only where
    # a part's schema differs (a cast imports pyarrow.compute): ~3 s of a lab guest's
    # record under TCG for what is a plain concatenation.
    table = with_added_columns(pq.ParquetFile(f).read(), name, schema).select(schema.names)
    return table if table.schema.equals(schema) else table.cast(schema)


def merge_parts(parts: Path) -> tuple[dict[str, pa.Table], list[str]]:
    """Each table's parts concatenated in memory (to read an unfinished recording), and the
    parts that could not be read (a crash or a full disk can leave the last one cut short:
    it is left out, never the recording).

    Core tables are always present (empty if no part); optional ones only if written.
    """
    with OutputDir.existing(parts) as d:
        names = set(d.names())
        out: dict[str, pa.Table] = {}
        skipped: list[str] = []
        for name, schema in ALL_TABLES.items():
            tables = []
            for n in _part_names(names, name):
                try:
                    with d.open_read(n) as f:
                        tables.append(_read_part(f, name, schema))
                except (OSError, pa.ArrowException, ValueError, KeyError):
                    skipped.append(n)  # KeyError: a column is missing
            if tables:
                out[name] = pa.concat_tables(tables)
            elif name in TABLES:
                out[name] = schema.empty_table()
    return out, skipped


def write_merged(parts: OutputDir, dest: OutputDir) -> None:
    """Write each table's parts into ``dest/<table>.parquet``, streaming (see MERGE_ROWS).

    Core tables are always written (empty if no part); optional ones only if recorded.
    Each file appears whole or not at all (a temporary file renamed into place).
    """
    names = set(parts.names())
    for name, schema in ALL_TABLES.items():
        files = _part_names(names, name)
        if not files and name not in TABLES:
            continue
        with dest.written_whole(f"{name}.parquet") as raw, pq.ParquetWriter(raw, schema) as out:
            held: list[pa.Table] = []
            rows = 0
            for n in files:
                with parts.open_read(n) as f:
                    held.append(_read_part(f, name, schema))
                rows += held[-1].num_rows
                if rows >= MERGE_ROWS:
                    out.write_table(pa.concat_tables(held))
                    held, rows = [], 0
                # Arrow's allocator keeps freed pages for reuse: hand them back, or the
                # process grows by what the merge went through (~180 MB at 200,000 tasks).
                pa.default_memory_pool().release_unused()
            if held:
                out.write_table(pa.concat_tables(held))
