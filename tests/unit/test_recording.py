"""Recording directory: round trip, crash recovery, and every kind of bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fptrace.errors import OutputExistsError, RecordingError
from fptrace.recording.loader import load_recording
from fptrace.recording.manifest import Events, Manifest
from fptrace.recording.writer import RecordingWriter
from tests.unit.recordings import count, manifest, task, vso, write


def test_round_trip_keeps_types_and_values(tmp_path: Path) -> None:
    rec = load_recording(
        write(
            tmp_path / "r",
            [count(10, "regs_deactivated", 7, xf=0x80000000000000E6, load=None)],
            [task(10)],
            [vso(10)],
        )
    )
    row = rec.counts.iloc[0]
    assert row["count"] == 7 and row["event"] == "regs_deactivated"
    assert int(row["xfeatures"]) == 0x80000000000000E6  # full uint64 survives
    assert pd.isna(row["load_fpu"])  # "not read" stays null, not 0
    assert int(rec.vso.iloc[0]["size"]) == 2448
    assert not rec.recovered and rec.layout is not None
    assert not (tmp_path / "r" / ".parts").exists()


def test_interrupted_recording_is_rebuilt_from_its_parts(tmp_path: Path) -> None:
    path = write(tmp_path / "r", [count(10, "regs_activated", 3)], [task(10)], finalize=False)
    rec = load_recording(path)
    assert rec.recovered and "did not finish cleanly" in rec.warnings[0]
    assert int(rec.counts["count"].sum()) == 3 and len(rec.tasks) == 1


def test_output_that_exists_is_refused_unless_forced(tmp_path: Path) -> None:
    path = write(tmp_path / "r", [count(1, "regs_activated", 1)])
    with pytest.raises(OutputExistsError, match="--force"):
        RecordingWriter(path)
    RecordingWriter(path, force=True)  # replaces a recording
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="not an fptrace recording"):
        RecordingWriter(other, force=True)  # never deletes a user's directory
    assert (other / "keep.txt").exists()


def test_force_removes_only_a_recordings_own_files(tmp_path: Path) -> None:
    """`record -f -o proj` used to wipe any directory holding a manifest.json (a project with
    src/ and notes was deleted): now a directory with anything else in it is refused whole."""
    proj = write(tmp_path / "proj", [count(1, "regs_activated", 1)])
    (proj / "src").mkdir()
    (proj / "src" / "main.c").write_text("int main;")
    (proj / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match=r"not an fptrace recording's \(notes.txt, src\)"):
        RecordingWriter(proj, force=True)
    assert (proj / "src" / "main.c").exists() and (proj / "manifest.json").exists()
    # A stray file among the parts of an unfinished recording: refused too.
    run = write(tmp_path / "run", [count(1, "regs_activated", 1)], finalize=False)
    (run / ".parts" / "mine.txt").write_text("x")
    with pytest.raises(OutputExistsError, match=r"mine\.txt"):
        RecordingWriter(run, force=True)
    assert (run / ".parts" / "mine.txt").exists()
    # A recording with its report: replaced, and nothing of it is left.
    done = write(tmp_path / "done", [count(1, "regs_activated", 1)])
    (done / "report.html").write_text("<html>")
    RecordingWriter(done, force=True).close()
    assert sorted(p.name for p in done.iterdir()) == [".parts"]


def test_a_planted_symlink_never_redirects_a_write(tmp_path: Path) -> None:
    """Names planted in the directory while fptrace writes (as root, another user could)
    are never followed: the file is written beside them, their targets are untouched."""
    from tests.unit.recordings import manifest

    victim = tmp_path / "victim"
    victim.write_text("precious")
    w = RecordingWriter(tmp_path / "r")
    for name in ("counts-000001.parquet.tmp", "tasks-latest.parquet.tmp"):
        (tmp_path / "r" / ".parts" / name).symlink_to(victim)
    for name in ("manifest.json.tmp", "counts.parquet.tmp", "vso.parquet", "kernel-config.gz"):
        (tmp_path / "r" / name).symlink_to(victim)
    w.write_kernel_config("CONFIG_X=y\n")
    w.append("counts", [count(1, "regs_activated", 1)])
    w.replace("tasks", [task(1)])
    w.finalize(Manifest.from_json(manifest()))
    assert victim.read_text() == "precious"
    rec = load_recording(tmp_path / "r")
    assert int(rec.counts["count"].sum()) == 1 and len(rec.tasks) == 1
    assert not (tmp_path / "r" / "vso.parquet").is_symlink()
    assert rec.kernel_config() == {"CONFIG_X": "y"}


def test_the_output_itself_may_not_be_a_symlink(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "r").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OutputExistsError, match="symlink"):
        RecordingWriter(tmp_path / "r", force=True)
    assert list((tmp_path / "elsewhere").iterdir()) == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.write_text("x"), "is not a recording"),
        (lambda p: p.mkdir(), "no manifest.json"),
        (lambda p: (p.mkdir(), (p / "manifest.json").write_text("{nope")), "not JSON"),
        (
            lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"format": "other"}')),
            "not an fptrace manifest",
        ),
    ],
)
def test_not_a_recording(tmp_path: Path, setup, message: str) -> None:
    path = tmp_path / "x"
    setup(path)
    with pytest.raises(RecordingError, match=message):
        load_recording(path)


def test_newer_format_is_refused_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path / "r", [count(1, "regs_activated", 1)])
    m = json.loads((path / "manifest.json").read_text())
    m["format_version"] = 99
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(RecordingError, match="upgrade fptrace"):
        load_recording(path)


def test_corrupt_or_missing_table_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "r", [count(1, "regs_activated", 1)], [task(1)], [vso(1)])
    data = (path / "counts.parquet").read_bytes()
    (path / "counts.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match=r"counts\.parquet is truncated or corrupt"):
        load_recording(path)
    (path / "vso.parquet").unlink()
    (path / "counts.parquet").write_bytes(data)
    with pytest.raises(RecordingError, match=r"lacks vso\.parquet"):
        load_recording(path)


def test_empty_recording_loads(tmp_path: Path) -> None:
    rec = load_recording(write(tmp_path / "r"))
    assert rec.counts.empty and rec.tasks.empty and rec.vso.empty


def test_the_final_merge_streams_the_parts_in_bounded_row_groups(tmp_path: Path, monkeypatch):
    """A long recording's end must not load every table whole (609 MB at the end of 200,000
    processes): the merge holds at most about MERGE_ROWS rows, so the counts file is written
    in several row groups, each part whole and in order, and nothing is lost."""
    import pyarrow.parquet as pq

    from fptrace.recording import writer as w
    from tests.unit.recordings import manifest

    monkeypatch.setattr(w, "MERGE_ROWS", 25, raising=False)
    rec = RecordingWriter(tmp_path / "r")
    for i in range(40):  # 40 intervals of 10 count rows each
        rec.append("counts", [count(100 + j, "regs_deactivated", i, interval=i) for j in range(10)])
    rec.append("tasks", [task(100 + j, exit_ns=5) for j in range(10)])
    rec.replace("tasks", [task(7)])
    rec.finalize(Manifest.from_json(manifest()))
    meta = pq.ParquetFile(tmp_path / "r" / "counts.parquet").metadata
    groups = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sum(groups) == 400 and len(groups) >= 400 // 35 and max(groups) <= 25 + 10
    r = load_recording(tmp_path / "r")
    assert r.counts["interval"].tolist() == [i for i in range(40) for _ in range(10)]
    assert r.tasks["pid"].tolist() == [*range(100, 110), 7]  # the final ones, then the live
    assert not (tmp_path / "r" / ".parts").exists()
    assert not list((tmp_path / "r").glob("*.tmp"))


@pytest.mark.parametrize(
    ("written", "loaded"),
    [
        (123, {"counted": 123}),  # a bare count: recordings made without --events before
        (
            {"recorded": 5, "ring_bytes": 0, "lost": 0},  # --events, before `counted`
            {"counted": None, "recorded": 5, "ring_bytes": 0, "lost": 0},
        ),
        ({"counted": 7}, {"counted": 7}),  # today's
    ],
)
def test_manifest_events_has_one_shape_whatever_wrote_it(tmp_path: Path, written, loaded):
    path = write(
        tmp_path / "r", [count(1, "regs_activated", 1)], [task(1)], [vso(1)], events=written
    )
    assert load_recording(path).manifest.events == Events(**loaded)


def test_an_unfinished_recording_keeps_its_events_and_its_duration(tmp_path: Path) -> None:
    """After a SIGKILL or a full disk every rate was 0 (no duration_s) and every export said
    "has no events" (the events were in .parts/)."""
    import pyarrow as pa

    from fptrace.recording.schema import EVENTS_SCHEMA, INTERVALS_SCHEMA

    w = RecordingWriter(tmp_path / "r")
    w.write_manifest(Manifest.from_json(manifest(status="recording", duration_s=None)))
    w.append("counts", [count(1, "regs_deactivated", 4, last_ns=2_500_000_000)])
    w.replace("tasks", [task(1)])
    event = {"ts_ns": 5, "cpu": 0, "task": 1, "pid": 1, "tgid": 1, "vso": "v1"}
    event |= {"event": "regs_deactivated", "xfeatures": 3, "load_fpu": None}
    w.append_table("events", pa.Table.from_pylist([event], schema=EVENTS_SCHEMA))
    span = {"interval": 0, "start_ns": 0, "end_ns": 3_000_000_000, "due_ns": None, "events": 4}
    span |= {"map_tasks": 1, "map_keys": 1, "map_vsos": 1, "recorder_rss_bytes": 1}
    w.append("intervals", [span])
    w.close()  # killed: no finalize
    rec = load_recording(tmp_path / "r")
    assert rec.recovered and rec.duration_s == 3.0
    assert rec.has_events and rec.events_table().num_rows == 1
    assert INTERVALS_SCHEMA.names == list(rec.intervals.columns)


def test_a_cut_short_part_is_left_out_not_the_recording(tmp_path: Path) -> None:
    path = write(tmp_path / "r", [count(1, "regs_activated", 3)], [task(1)], finalize=False)
    (path / ".parts" / "counts-000099.parquet").write_bytes(b"PAR1 cut short")
    rec = load_recording(path)
    assert int(rec.counts["count"].sum()) == 3
    assert any("counts-000099.parquet" in w for w in rec.warnings)


def _edited(path: Path, name: str, edit) -> None:
    import pyarrow.parquet as pq

    table = pq.read_table(path / name)
    pq.write_table(edit(table), path / name)


@pytest.mark.parametrize(
    ("name", "edit", "says"),
    [
        ("counts.parquet", lambda t: pa_concat(t, t), "rows repeat another row whole"),
        ("counts.parquet", lambda t: set_column(t, "count", 1 << 41), "a count of"),
        ("counts.parquet", lambda t: set_column(t, "count", -5), r"a negative count \(-5\)"),
        ("counts.parquet", lambda t: set_column(t, "vso", "v" * 100_000), "a vso of 100,000"),
        ("tasks.parquet", lambda t: pa_concat(t, t), "a task id appears in more than one row"),
        ("tasks.parquet", lambda t: set_column(t, "comm", "x" * 70_000), "a comm of 70,000"),
    ],
)
def test_a_table_edited_beyond_what_fptrace_writes_is_refused(tmp_path: Path, name, edit, says):
    """Duplicated rows doubled every number; huge counts overflowed sums silently; 100 KB
    strings made exports take gigabytes."""
    from fptrace.analysis.cost import DEFAULT
    from fptrace.analysis.report import build

    path = write(tmp_path / "r", [count(1, "regs_deactivated", 5)], [task(1)], [vso(1)])
    _edited(path, name, edit)
    with pytest.raises(RecordingError, match=says) as err:
        build(load_recording(path), DEFAULT)
    assert name in str(err.value) and "\n" not in str(err.value)


def pa_concat(a, b):
    import pyarrow as pa

    return pa.concat_tables([a, b])


def set_column(table, name: str, value):
    import pyarrow as pa

    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array([value] * table.num_rows, table.schema.field(i).type))


def test_counts_that_add_up_beyond_int64_are_refused(tmp_path: Path, monkeypatch) -> None:
    import fptrace.recording.checks as checks

    rows = [count(1, "regs_deactivated", 1 << 40, interval=i) for i in range(8)]
    path = write(tmp_path / "r", rows, [task(1)], [vso(1)])
    list(load_recording(path).iter_counts())  # 2**43 in all: fine
    monkeypatch.setattr(checks, "MAX_TOTAL", 7 << 40)  # eight rows of 2**40 are over it
    with pytest.raises(RecordingError, match="add up beyond"):
        list(load_recording(path).iter_counts())
