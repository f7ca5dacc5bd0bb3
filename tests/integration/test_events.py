"""record --events: one record per event, equal to the aggregated counts, nothing lost."""

from __future__ import annotations

import pyarrow.parquet as pq

from tests.hardware import LEVEL_BITS

N = 20000


def test_events_equal_the_counts_with_no_loss(record, pingpong, level):
    run = record("--events", "--", str(pingpong), "--mode", level, "--rounds", str(N))
    assert run.proc.returncode == 0, run.proc.stderr
    rec = run.rec
    events = pq.read_table(run.path / "events.parquet").to_pandas()
    m = rec.manifest["events"]
    assert m["lost"] == 0 and m["recorded"] == len(events) >= 4 * N
    counts = rec.counts.groupby(["pid", "vso", "event"], dropna=False)["count"].sum().astype(int)
    got = events.groupby(["pid", "vso", "event"], dropna=False).size()
    assert got.sort_index().to_dict() == counts.sort_index().to_dict()
    # Times are ns since attach, in the counts' clock: each key's first event is where the
    # counts say it was first counted (the same probe run, microseconds apart), its last
    # no later than the counts' bound, and all of them inside the recording.
    key = ["pid", "vso", "event"]
    spans = events.groupby(key, dropna=False)["ts_ns"].agg(["min", "max"])
    bounds = rec.counts.groupby(key, dropna=False).agg(
        first=("first_ns", "min"), last=("last_ns", "max")
    )
    both = spans.join(bounds).astype("int64")
    assert ((both["min"] - both["first"]).abs() < 1_000_000).all(), both
    assert (both["max"] <= both["last"]).all(), both
    assert events["ts_ns"].min() >= 0 and events["ts_ns"].max() <= rec.duration_s * 1e9
    # Ordered within each CPU; XSTATE_BV carries the state.
    assert all(g["ts_ns"].is_monotonic_increasing for _, g in events.groupby("cpu"))
    saves = events[events["event"] == "regs_deactivated"]
    bits = LEVEL_BITS[level]
    assert ((saves["xfeatures"].astype("int64") & bits) == bits).mean() > 0.99
    assert set(events["vso"].dropna()) <= set(rec.vso["vso"])


def _as_text(value) -> str:
    """A Parquet value as the CSV writer's reader sees it (null -> "")."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def test_exports(record, pingpong, tmp_path, level, cpu):
    import csv
    import json
    import subprocess
    import sys

    from tests.integration.conftest import fptrace

    run = record("--events", "--", str(pingpong), "--mode", level, "--rounds", "500")
    assert run.proc.returncode == 0, run.proc.stderr
    want = pq.read_table(run.path / "events.parquet").to_pylist()
    n = len(want)
    assert n >= 4 * 500
    # CSV and JSON lines: every row, every column, the same values in the same order.
    out = tmp_path / "e.csv"
    assert fptrace("export", str(run.path), "-f", "csv", "-o", str(out)).returncode == 0
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [list(r) for r in rows[:1]] == [list(want[0])]
    assert rows == [{k: _as_text(v) for k, v in w.items()} for w in want]
    lines = fptrace("export", str(run.path), "-f", "jsonl").stdout.splitlines()
    assert [json.loads(ln) for ln in lines] == [
        {k: (None if v != v else v) if isinstance(v, float) else v for k, v in w.items()}
        for w in want
    ]
    # Chrome JSON: one instant per event with its time (µs), task, event and XSTATE_BV, and
    # the bytes the CPU's component sizes give for that XSTATE_BV.
    chrome = tmp_path / "t.json"
    assert fptrace("export", str(run.path), "-f", "chrome-json", "-o", str(chrome)).returncode == 0
    trace = json.loads(chrome.read_text())["traceEvents"]
    instants = [e for e in trace if e["ph"] == "i"]
    assert [
        (e["ts"], e["pid"], e["tid"], e["name"], int(e["args"]["xstate_bv"], 16)) for e in instants
    ] == [(w["ts_ns"] / 1000, w["tgid"], w["pid"], w["event"], w["xfeatures"]) for w in want]
    for e, w in zip(instants, want, strict=True):
        if w["vso"] is not None:
            assert e["args"]["bytes"] == cpu.bytes_written(w["xfeatures"]), (e, w)
    assert any(e["ph"] == "M" and e["args"]["name"] == "pingpong" for e in trace)
    saves = sum(1 for w in want if w["event"] == "regs_deactivated")
    assert sum(e["args"]["saves"] for e in trace if e["ph"] == "C") == saves
    # Without --events: csv exports the counts, chrome-json says what to do.
    plain = record("--", "true", name="plain")
    assert fptrace("export", str(plain.path), "-f", "csv").stdout.startswith("interval,")
    bad = fptrace("export", str(plain.path), "-f", "chrome-json")
    assert bad.returncode == 2 and "--events" in bad.stderr
    # A closed pipe is not an error.
    head = subprocess.run(
        f"{sys.executable} -m fptrace export {run.path} -f jsonl | head -1",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    assert head.stdout.count("\n") == 1 and "error" not in head.stderr


def perfetto_trace_class():
    """Trace message class from the published field numbers, for the protobuf runtime."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    f = descriptor_pb2.FieldDescriptorProto
    fd = descriptor_pb2.FileDescriptorProto(
        name="fptrace_test_perfetto.proto", package="perfetto.protos", syntax="proto2"
    )

    def msg(name, fields):
        m = fd.message_type.add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            field = m.field.add(name=fname, number=number, type=ftype)
            field.label = f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL
            if type_name:
                field.type_name = f".perfetto.protos.{type_name}"

    u64, u32, i32, i64, s, d, m = (
        f.TYPE_UINT64,
        f.TYPE_UINT32,
        f.TYPE_INT32,
        f.TYPE_INT64,
        f.TYPE_STRING,
        f.TYPE_DOUBLE,
        f.TYPE_MESSAGE,
    )
    msg(
        "DebugAnnotation",
        [
            ("name", 10, s, 0, None),
            ("uint_value", 3, u64, 0, None),
            ("string_value", 6, s, 0, None),
        ],
    )
    msg(
        "TrackEvent",
        [
            ("debug_annotations", 4, m, 1, "DebugAnnotation"),
            ("type", 9, i32, 0, None),
            ("track_uuid", 11, u64, 0, None),
            ("categories", 22, s, 1, None),
            ("name", 23, s, 0, None),
            ("double_counter_value", 44, d, 0, None),
        ],
    )
    msg("ProcessDescriptor", [("pid", 1, i32, 0, None), ("process_name", 6, s, 0, None)])
    msg(
        "ThreadDescriptor",
        [("pid", 1, i32, 0, None), ("tid", 2, i64, 0, None), ("thread_name", 5, s, 0, None)],
    )
    msg("CounterDescriptor", [])
    msg(
        "TrackDescriptor",
        [
            ("uuid", 1, u64, 0, None),
            ("name", 2, s, 0, None),
            ("process", 3, m, 0, "ProcessDescriptor"),
            ("thread", 4, m, 0, "ThreadDescriptor"),
            ("parent_uuid", 5, u64, 0, None),
            ("counter", 8, m, 0, "CounterDescriptor"),
        ],
    )
    msg(
        "TracePacket",
        [
            ("timestamp", 8, u64, 0, None),
            ("trusted_packet_sequence_id", 10, u32, 0, None),
            ("track_event", 11, m, 0, "TrackEvent"),
            ("sequence_flags", 13, u32, 0, None),
            ("track_descriptor", 60, m, 0, "TrackDescriptor"),
        ],
    )
    msg("Trace", [("packet", 1, m, 1, "TracePacket")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("perfetto.protos.Trace"))


def test_perfetto_export_parses_back(record, pingpong, tmp_path, level):
    from google.protobuf.unknown_fields import UnknownFieldSet

    from tests.integration.conftest import fptrace

    n = 300
    run = record("--events", "--", str(pingpong), "--mode", level, "--rounds", str(n))
    assert run.proc.returncode == 0, run.proc.stderr
    events = pq.read_table(run.path / "events.parquet").to_pandas()
    out = tmp_path / "t.pftrace"
    assert fptrace("export", str(run.path), "-f", "perfetto", "-o", str(out)).returncode == 0
    trace = perfetto_trace_class()()
    trace.ParseFromString(out.read_bytes())
    assert len(UnknownFieldSet(trace)) == 0
    tracks = {
        p.track_descriptor.uuid: p.track_descriptor
        for p in trace.packet
        if p.HasField("track_descriptor")
    }
    instants = [p for p in trace.packet if p.HasField("track_event") and p.track_event.type == 3]
    counters = [p for p in trace.packet if p.HasField("track_event") and p.track_event.type == 4]
    assert len(instants) == 2 * len(events)  # on the task's track and on its CPU's track
    assert all(len(UnknownFieldSet(p)) == 0 for p in trace.packet[:50])
    names = {t.thread.thread_name for t in tracks.values() if t.HasField("thread")}
    assert "pingpong" in names
    assert any(t.name.startswith("CPU ") for t in tracks.values())
    saves = [p.track_event for p in instants if p.track_event.name == "regs_deactivated"]
    bvs = [next(a.uint_value for a in e.debug_annotations if a.name == "xstate_bv") for e in saves]
    bits = LEVEL_BITS[level]
    assert sum(1 for bv in bvs if bv & bits == bits) > 0.9 * len(bvs)
    assert counters and all(p.track_event.track_uuid in tracks for p in counters)
    assert [p.timestamp for p in instants] == sorted(p.timestamp for p in instants)
