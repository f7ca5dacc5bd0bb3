"""Stack samples into paths, call sites, hints, folded lines and a pprof profile (decoded
here with protobuf from profile.proto's field numbers, independently of the encoder)."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from fptrace import cli
from fptrace.recording.schema import STACK_SAMPLES_SCHEMA, STACKS_SCHEMA
from tests.unit import recordings as r

AVX, SSE, HI16 = 0x7, 0x3, 0x83


def stack_recording(path, samples, stacks):
    r.write(path, [r.count(1, "regs_deactivated", 10, xf=AVX)],
            [r.task(1, "app"), r.task(2, "other")])  # fmt: skip
    pq.write_table(pa.Table.from_pylist(samples, schema=STACK_SAMPLES_SCHEMA),
                   path / "stack_samples.parquet")  # fmt: skip
    pq.write_table(pa.Table.from_pylist(stacks, schema=STACKS_SCHEMA), path / "stacks.parquet")
    return path


def frames(stack, *names, kernel=False):
    return [
        {"stack": stack, "depth": d, "function": n, "module": "[kernel]" if kernel else "app",
         "offset": 4, "build_id": None, "kernel": kernel}
        for d, n in enumerate(names)
    ]  # fmt: skip


def sample(pid, xf, reason, user, kernel, n):
    return {"task": pid, "pid": pid, "tgid": pid, "xfeatures": xf, "reason": reason,
            "user_stack": user, "kernel_stack": kernel, "samples": n}  # fmt: skip


def fixture(tmp_path):
    return stack_recording(
        tmp_path / "rec",
        [
            sample(1, AVX, "voluntary", 0, 9, 92),  # blocks in read() from foo()
            sample(1, AVX, "voluntary", 1, 9, 8),
            sample(1, AVX, "involuntary", 2, None, 30),
            sample(2, HI16, "voluntary", 3, 9, 50),
        ],
        [
            *frames(0, "read", "foo", "main"),
            *frames(1, "poll", "bar", "main"),
            *frames(2, "loop", "main"),
            *frames(3, "wait", "main"),
            *frames(9, "__schedule", "schedule", "pipe_read", kernel=True),
        ],
    )


def test_folded_paths_root_first_with_the_level_and_reason(tmp_path, capsys):
    path = fixture(tmp_path)
    assert cli.main(["export", str(path), "-f", "folded"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "AVX live, blocked;app;main;foo;read;pipe_read_[k];schedule_[k];__schedule_[k] 92" in lines
    )
    assert "AVX live, preempted;app;main;loop 30" in lines
    assert (
        "AVX-512 live, blocked;other;main;wait;pipe_read_[k];schedule_[k];__schedule_[k] 50"
        in lines
    )
    assert sum(int(ln.rsplit(" ", 1)[1]) for ln in lines) == 180


def test_sites_and_hints(tmp_path, capsys):
    path = fixture(tmp_path)
    assert cli.main(["report", str(path), "-f", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    sites = [s for s in doc["stacks"]["blocking_sites"] if s["pid"] == 1]
    assert [(s["site"], s["caller"], s["samples"]) for s in sites] == [
        ("read", "foo", 92), ("poll", "bar", 8)
    ]  # fmt: skip
    assert sites[0]["share"] == 0.92
    hints = doc["hints"]
    # of the task's 130 AVX-live samples, 92 are voluntary at read() called from foo()
    assert any(
        h.startswith("71% of app (1)'s AVX-live saves are voluntary at read() called from foo()")
        and h.endswith("would save 256 B per switch")
        for h in hints
    ), hints
    assert any(h.startswith("Hi16_ZMM live in 100% of other (2)'s samples") for h in hints)


def _profile_class():
    """profile.proto's messages, built from its field numbers (github.com/google/pprof)."""
    f = descriptor_pb2.FileDescriptorProto(name="profile_test.proto", package="pt")
    T = descriptor_pb2.FieldDescriptorProto

    def msg(name, *fields):
        m = f.message_type.add(name=name)
        for fname, num, typ, rep, tname in fields:
            fd = m.field.add(name=fname, number=num, type=typ,
                             label=T.LABEL_REPEATED if rep else T.LABEL_OPTIONAL)  # fmt: skip
            if tname:
                fd.type_name = tname

    msg("ValueType", ("type", 1, T.TYPE_INT64, False, ""), ("unit", 2, T.TYPE_INT64, False, ""))
    msg("Label", ("key", 1, T.TYPE_INT64, False, ""), ("str", 2, T.TYPE_INT64, False, ""))
    msg(
        "Sample",
        ("location_id", 1, T.TYPE_UINT64, True, ""),
        ("value", 2, T.TYPE_INT64, True, ""),
        ("label", 3, T.TYPE_MESSAGE, True, ".pt.Label"),
    )
    msg("Line", ("function_id", 1, T.TYPE_UINT64, False, ""))
    msg(
        "Location",
        ("id", 1, T.TYPE_UINT64, False, ""),
        ("line", 4, T.TYPE_MESSAGE, True, ".pt.Line"),
    )
    msg(
        "Function",
        ("id", 1, T.TYPE_UINT64, False, ""),
        ("name", 2, T.TYPE_INT64, False, ""),
        ("filename", 4, T.TYPE_INT64, False, ""),
    )
    msg("Profile", ("sample_type", 1, T.TYPE_MESSAGE, True, ".pt.ValueType"),
        ("sample", 2, T.TYPE_MESSAGE, True, ".pt.Sample"),
        ("location", 4, T.TYPE_MESSAGE, True, ".pt.Location"),
        ("function", 5, T.TYPE_MESSAGE, True, ".pt.Function"),
        ("string_table", 6, T.TYPE_STRING, True, ""))  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(f)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("pt.Profile"))


def test_pprof_decodes_to_the_same_stacks(tmp_path, capsys):
    path = fixture(tmp_path)
    out = tmp_path / "p.pb.gz"
    assert cli.main(["export", str(path), "-f", "pprof", "-o", str(out)]) == 0
    prof = _profile_class()()
    prof.ParseFromString(gzip.decompress(out.read_bytes()))
    st = list(prof.string_table)
    assert st[0] == "" and st[prof.sample_type[0].type] == "samples"
    fn = {f.id: st[f.name] for f in prof.function}
    loc = {lo.id: fn[lo.line[0].function_id] for lo in prof.location}
    got = {}
    for s in prof.sample:
        names = [loc[i] for i in s.location_id]  # leaf first
        labels = {st[lb.key]: st[lb.str] for lb in s.label}
        got[";".join(reversed(names))] = (s.value[0], labels)
    key = "AVX live, preempted;app;main;loop"
    assert got[key] == (30, {"state": "AVX live", "reason": "preempted"})
    assert sum(v for v, _ in got.values()) == 180


def test_no_stacks_is_a_one_line_error(tmp_path, capsys):
    path = r.write(tmp_path / "rec", [r.count(1, "regs_deactivated", 1)], [r.task(1)])
    assert cli.main(["export", str(path), "-f", "folded"]) != 0
    err = capsys.readouterr().err
    assert "record with --stacks" in err and len(err.strip().splitlines()) == 1
