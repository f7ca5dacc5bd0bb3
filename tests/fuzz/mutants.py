"""Structure-aware mutations of a real recording: what a damaged, truncated, hand-edited or
hostile recording can look like, one change at a time.

Each mutator takes a random generator and a copy of a seed recording (a directory), changes
it in place and returns a one-line description (kept with a failing mutant, so that it can
be understood and replayed).  The mutators know the format: the manifest's JSON tree, the
Parquet tables and their columns, the ``.parts`` layout of an unfinished recording; and
they also do what no format knowledge prevents: cut a file short, flip bytes, replace a file
by a directory, a symlink to a device, or nothing.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

# JSON values a manifest field may be replaced with: each type, edges of each.
JSON_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**31,
    2**63 - 1,
    2**63,
    2**64,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    1e308,
    "",
    "x",
    "x" * 100_000,
    "\x00\x1b[2J</script><b>",
    "1",
    [],
    [1, 2],
    [None],
    ["a"],
    {},
    {"a": 1},
]


DEEP = "\x00deep\x00"  # stands for nesting too deep for json.dumps: written as text


def _deep(depth: int) -> Any:
    if depth > 500:
        return DEEP
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a JSON tree (keys and list indices)."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value[:5]):
            out += _nodes(v, (*path, i))
    return out


def _set(tree: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    node = tree
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return tree


def _plain(path: Path) -> bool:
    """A regular file (an earlier mutation may have made it a FIFO or a symlink)."""
    return path.is_file() and not path.is_symlink() and not path.is_fifo()


def _manifest(rec: Path) -> Any:
    if not _plain(rec / "manifest.json"):
        raise ValueError("the manifest is no longer a file")
    try:
        return json.loads((rec / "manifest.json").read_text())
    except RecursionError:
        raise ValueError("the manifest is nested too deeply to edit") from None


def _save_manifest(rec: Path, data: Any) -> None:
    text = json.dumps(data, allow_nan=True)
    text = text.replace(json.dumps(DEEP), "[" * 5000 + "0" + "]" * 5000)
    (rec / "manifest.json").write_text(text)


def manifest_retype(rng: random.Random, rec: Path) -> str:
    data = _manifest(rec)
    path = rng.choice(_nodes(data))
    value = rng.choice([*JSON_VALUES, _deep(rng.choice([3, 60, 5000]))])
    if rng.random() < 0.1:
        value = float("nan") if rng.random() < 0.5 else float("inf")
    _save_manifest(rec, _set(data, path, value))
    return f"manifest {'.'.join(map(str, path)) or '(root)'} = {str(value)[:60]!r}"


def manifest_delete(rng: random.Random, rec: Path) -> str:
    data = _manifest(rec)
    path = rng.choice([p for p in _nodes(data) if p])
    node = data
    for p in path[:-1]:
        node = node[p]
    del node[path[-1]]
    _save_manifest(rec, data)
    return f"manifest {'.'.join(map(str, path))} deleted"


def manifest_unfinished(rng: random.Random, rec: Path) -> str:
    """As if fptrace had been killed: status recording, the tables (some) as parts."""
    data = _manifest(rec)
    data["status"] = "recording"
    for key in ("duration_s", "ended_at") if rng.random() < 0.7 else ():
        data.pop(key, None)
    _save_manifest(rec, data)
    parts = rec / ".parts"
    parts.mkdir(exist_ok=True)
    moved = []
    for table in _tables(rec):
        if rng.random() < 0.8:
            name = table.stem
            dest = f"{name}-latest.parquet" if name == "tasks" else f"{name}-000001.parquet"
            table.rename(parts / dest)
            moved.append(name)
    return f"unfinished, parts: {','.join(moved) or 'none'}"


def _files(rec: Path) -> list[Path]:
    return [p for p in [*sorted(rec.iterdir()), *sorted((rec / ".parts").glob("*"))] if _plain(p)]


def _tables(rec: Path) -> list[Path]:
    return [p for p in _files(rec) if p.suffix == ".parquet"]


def _edge(rng: random.Random, typ: pa.DataType) -> Any:
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if pa.types.is_string(typ):
        return rng.choice(["", "x" * 70_000, "\x00", "é" * 65, "</script>", "v" * 64])
    if pa.types.is_boolean(typ):
        return rng.choice([True, False])
    if pa.types.is_floating(typ):
        return rng.choice([0.0, -1.0, float("nan"), float("inf"), 1e300])
    if pa.types.is_integer(typ):
        bits = typ.bit_width
        if pa.types.is_unsigned_integer(typ):
            return rng.choice([0, 1, 2**bits - 1, 2 ** (bits - 1)])
        return rng.choice([0, -1, 1, -(2 ** (bits - 1)), 2 ** (bits - 1) - 1])
    return None


def table_values(rng: random.Random, rec: Path) -> str:
    path = rng.choice(_tables(rec))
    table = pq.read_table(path)
    if not table.num_rows:
        return f"{path.name}: empty, unchanged"
    i = rng.randrange(table.num_columns)
    field = table.schema.field(i)
    value = None if rng.random() < 0.2 else _edge(rng, field.type)
    rows = table.num_rows
    picked = sorted(rng.sample(range(rows), rng.randint(1, rows)))
    col = table.column(i).to_pylist()
    for r in picked:
        col[r] = value
    typ = field.type.value_type if pa.types.is_dictionary(field.type) else field.type
    table = table.set_column(i, field.name, pa.array(col, typ))
    pq.write_table(table, path)
    return f"{path.name}: {field.name} = {str(value)[:40]!r} in {len(picked)} of {rows} rows"


def table_rows(rng: random.Random, rec: Path) -> str:
    path = rng.choice(_tables(rec))
    table = pq.read_table(path)
    how = rng.choice(["empty", "duplicate", "first", "reverse", "triple"])
    if how == "empty":
        table = table.slice(0, 0)
    elif how == "duplicate":
        table = pa.concat_tables([table, table])
    elif how == "triple":
        table = pa.concat_tables([table, table.slice(0, 1), table.slice(0, 1)])
    elif how == "first":
        table = table.slice(0, 1)
    else:
        table = table.take(pa.array(list(reversed(range(table.num_rows)))))
    pq.write_table(table, path)
    return f"{path.name}: rows {how}"


def table_columns(rng: random.Random, rec: Path) -> str:
    path = rng.choice(_tables(rec))
    table = pq.read_table(path)
    i = rng.randrange(table.num_columns)
    name = table.schema.field(i).name
    how = rng.choice(["drop", "as string", "as float", "rename"])
    if how == "drop":
        table = table.remove_column(i)
    elif how == "rename":
        table = table.rename_columns(
            [*(c for c in table.column_names[:i]), name + "_x", *table.column_names[i + 1 :]]
        )
    else:
        typ = pa.string() if how == "as string" else pa.float64()
        try:
            col = table.column(i).cast(typ)
        except (pa.ArrowException, ValueError):
            col = pa.array([str(v) for v in table.column(i).to_pylist()])
        table = table.set_column(i, pa.field(name, col.type), col)
    pq.write_table(table, path)
    return f"{path.name}: column {name} {how}"


def file_bytes(rng: random.Random, rec: Path) -> str:
    path = rng.choice(_files(rec))
    raw = bytearray(path.read_bytes())
    how = rng.choice(["truncate", "flip", "zero", "garbage", "empty"])
    if how == "truncate" and raw:
        raw = raw[: rng.randrange(len(raw))]
    elif how == "flip" and raw:
        for _ in range(rng.randint(1, 8)):
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    elif how == "zero":
        raw = bytearray(len(raw))
    elif how == "garbage":
        raw = bytearray(rng.randbytes(rng.randint(1, 4096)))
    else:
        raw = bytearray()
    path.write_bytes(bytes(raw))
    return f"{path.name}: bytes {how}"


def file_kind(rng: random.Random, rec: Path) -> str:
    path = rng.choice(_files(rec))
    how = rng.choice(["delete", "directory", "dev-zero", "dangling", "fifo"])
    path.unlink()
    if how == "directory":
        path.mkdir()
    elif how == "dev-zero":
        path.symlink_to("/dev/zero")
    elif how == "dangling":
        path.symlink_to(rec / "nowhere")
    elif how == "fifo":
        os.mkfifo(path)
    return f"{path.name}: {how}"


MUTATORS: list[Callable[[random.Random, Path], str]] = [
    manifest_retype,
    manifest_retype,
    manifest_retype,
    manifest_delete,
    manifest_unfinished,
    table_values,
    table_values,
    table_rows,
    table_columns,
    file_bytes,
    file_kind,
]


def mutate(rng: random.Random, seed: Path, dest: Path) -> str:
    """A copy of ``seed`` at ``dest`` with one to three mutations; their descriptions."""
    shutil.copytree(seed, dest, symlinks=True)
    said = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        try:
            said.append(rng.choice(MUTATORS)(rng, dest))
        except Exception as exc:
            said.append(f"(mutation not applicable: {exc.__class__.__name__})")
    return "; ".join(said)


SPECIALS = "specials.json"


def save(src: Path, dest: Path) -> None:
    """Keep a mutant: files, directories and symlinks as they are; FIFOs (which git cannot
    hold, and which a plain copy would block reading) listed in ``specials.json``."""
    dest.mkdir(parents=True)
    fifos = []
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if path.is_symlink():
            (dest / rel).symlink_to(os.readlink(path))
        elif path.is_dir():
            (dest / rel).mkdir()
        elif path.is_fifo():
            fifos.append(str(rel))
        elif path.is_file():
            shutil.copyfile(path, dest / rel)
    (dest / SPECIALS).write_text(json.dumps({"fifos": fifos}))


def restore(src: Path, dest: Path) -> None:
    """A kept mutant back as it was (see :func:`save`)."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(SPECIALS))
    specials = json.loads((src / SPECIALS).read_text()) if (src / SPECIALS).exists() else {}
    for rel in specials.get("fifos", []):
        os.mkfifo(dest / rel)
