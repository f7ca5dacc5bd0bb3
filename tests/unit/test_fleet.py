"""Fleet: cgroup attribution in the tables, the agent's partitions and retention, its
metrics, and `fptrace fleet` over hand-made recordings with known answers."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fptrace import cli
from fptrace.analysis.metrics import OTHER, MetricTotals, widest_state
from fptrace.collectors.cgroups import CgroupPaths, cgroup_id, normalize
from fptrace.commands.agent import listen_address, retain_spec
from fptrace.errors import TargetError
from fptrace.recording.loader import load_recording
from fptrace.recording.partitions import (
    expired,
    host_label,
    remove_segments,
    segment_path,
    stored_segments,
)
from fptrace.recording.schema import TASKS_SCHEMA
from tests.unit import recordings as r

AVX512 = 0xE7  # x87, SSE, AVX, opmask, ZMM_Hi256, Hi16_ZMM
SSE = 0x3


def run(*argv: str, capsys) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def seg(root: Path, host: str, when: datetime, rows, tasks, duration: float = 2.0) -> Path:
    path = segment_path(root, host, when)
    return r.write(path, rows, tasks, duration_s=duration)


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    """Two hosts, three recordings; cgroup /web saves 100 + 40 + 7, /db 30 − 5 (dropped)."""
    root = tmp_path / "fleet"
    t = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    web, db = r.task(1, "nginx", cgroup="/web", switches=120), r.task(2, "pg", cgroup="/db")
    seg(root, "a", t, [
        r.count(1, "regs_deactivated", 100, xf=AVX512),
        r.count(2, "regs_deactivated", 30, xf=SSE),
        r.count(2, "dropped", 5, xf=SSE),
        r.count(1, "regs_activated", 90, xf=AVX512, load=1),
        r.count(1, "regs_activated", 9, xf=AVX512, load=0),  # not a restore of the task's
    ], [web, db])  # fmt: skip
    seg(root, "a", t + timedelta(hours=1), [r.count(1, "regs_deactivated", 40, xf=SSE)],
        [r.task(1, "nginx", cgroup="/web", switches=50)], duration=3.0)  # fmt: skip
    seg(root, "b", t + timedelta(days=1), [r.count(7, "regs_deactivated", 7, xf=AVX512)],
        [r.task(7, "nginx", cgroup="/web", switches=7)], duration=5.0)  # fmt: skip
    return root


def groups(capsys, root: Path, *args: str) -> dict[str, dict]:
    code, out, err = run("fleet", str(root), *args, "-f", "json", capsys=capsys)
    assert code == 0, err
    return {g["group"]: g for g in json.loads(out)["groups"]}


def test_fleet_by_cgroup_sums_each_containers_saves(fleet_dir, capsys):
    g = groups(capsys, fleet_dir, "--group-by", "cgroup")
    assert g["/web"]["saves"] == 147 and g["/db"]["saves"] == 25
    assert g["/web"]["recordings"] == 3 and g["/db"]["recordings"] == 1
    assert g["/web"]["restores"] == 90  # load_fpu=0 activations are not restores
    assert g["/web"]["tasks"] == 3  # task 1 in two recordings counts twice, once each
    assert g["/web"]["seconds"] == 10.0  # 2 + 3 + 5 host-seconds
    assert g["/web"]["saves_per_s"] == pytest.approx(14.7)
    assert g["/web"]["switches"] == 177
    assert g["/web"]["avx512_save_share"] == pytest.approx(107 / 147)
    assert g["/web"]["xfeatures_seen"] == hex(AVX512 | SSE)
    assert g["/db"]["xfeatures_seen"] == hex(SSE)


def test_fleet_by_host_and_date_read_the_partitions(fleet_dir, capsys):
    by_host = groups(capsys, fleet_dir, "--group-by", "host")
    assert {k: v["saves"] for k, v in by_host.items()} == {"a": 165, "b": 7}
    by_date = groups(capsys, fleet_dir, "--group-by", "date")
    assert {k: v["saves"] for k, v in by_date.items()} == {"2026-12-01": 165, "2026-12-02": 7}


def test_fleet_where_filters_rows_and_prunes_partitions(fleet_dir, capsys):
    g = groups(capsys, fleet_dir, "--group-by", "comm", "--where", "cgroup=/w*")
    assert set(g) == {"nginx"} and g["nginx"]["saves"] == 147
    # host=a never opens host=b: a broken manifest there is not read
    bad = next(fleet_dir.glob("host=b/date=*/*")) / "manifest.json"
    bad.write_text("{not json")
    g = groups(capsys, fleet_dir, "--group-by", "host", "--where", "host=a")
    assert set(g) == {"a"}
    code, _, err = run("fleet", str(fleet_dir), "--where", "host=b", capsys=capsys)
    assert code != 0 and "manifest.json" in err and "Traceback" not in err


def test_fleet_reads_an_unfinished_recording_from_its_parts(tmp_path, capsys):
    root = tmp_path / "f"
    path = segment_path(root, "a", datetime(2026, 12, 1, tzinfo=UTC))
    r.write(path, [r.count(3, "regs_deactivated", 11)], [r.task(3, cgroup="/x")], finalize=False)
    assert groups(capsys, root, "--group-by", "cgroup")["/x"]["saves"] == 11


def test_fleet_bad_input_is_one_line(tmp_path, fleet_dir, capsys):
    for argv in (
        ["fleet", str(tmp_path / "none")],
        ["fleet", str(fleet_dir), "--where", "nokey"],
        ["fleet", str(fleet_dir), "--where", "host=zz"],
    ):
        code, _, err = run(*argv, capsys=capsys)
        assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_fleet_html_escapes_group_names(tmp_path, capsys):
    root = tmp_path / "f"
    seg(root, "a", datetime(2026, 12, 1, tzinfo=UTC), [r.count(1, "regs_deactivated", 1)],
        [r.task(1, cgroup="/<script>alert(1)</script>")])  # fmt: skip
    out = tmp_path / "f.html"
    code, _, err = run("fleet", str(root), "--group-by", "cgroup", "-f", "html", "-o", str(out),
                       capsys=capsys)  # fmt: skip
    assert code == 0, err
    html = out.read_text()
    assert "<script>" not in html and "&lt;script&gt;" in html


# ---- the agent's partitions and retention ----


def test_segment_paths_are_hive_partitions_in_time_order(tmp_path):
    t = datetime(2026, 12, 5, 23, 59, 59, tzinfo=UTC)
    p = segment_path(tmp_path, host_label("web/1=x"), t)
    assert p.relative_to(tmp_path).parts == ("host=web_1_x", "date=2026-12-05", "20261205T235959Z")
    p.mkdir(parents=True)
    assert segment_path(tmp_path, "web_1_x", t).name == "20261205T235959Z-1"


def _stored(root: Path, host: str, when: datetime, nbytes: int) -> Path:
    p = segment_path(root, host, when)
    p.mkdir(parents=True)
    (p / "manifest.json").write_text("{}")
    (p / "counts.parquet").write_bytes(b"x" * nbytes)
    return p


def test_retention_by_age_then_size_oldest_first_never_the_current(tmp_path):
    now = datetime(2026, 12, 10, tzinfo=UTC)
    old = _stored(tmp_path, "h", now - timedelta(days=8), 100)
    mid = _stored(tmp_path, "h", now - timedelta(days=2), 1000)
    new = _stored(tmp_path, "h", now - timedelta(hours=1), 1000)
    cur = _stored(tmp_path, "h", now, 1000)
    notes = tmp_path / "host=h" / "README"
    notes.write_text("a person's file")
    segs = stored_segments(tmp_path)
    assert [s.path for s in segs] == [old, mid, new, cur]
    assert [s.path for s in expired(segs, now, 7 * 86400, None, cur)] == [old]
    # 3 KB at most: the oldest go until the rest (the current one included) fit
    doomed = expired(segs, now, None, 3000, cur)
    assert [s.path for s in doomed] == [old, mid]
    assert expired(segs, now, None, 10, cur)[-1].path == new  # never cur itself
    remove_segments(expired(segs, now, 7 * 86400, 3000, cur))
    assert not old.exists() and not mid.exists() and new.exists() and cur.exists()
    assert notes.exists()
    assert not old.parent.exists()  # its date partition, empty now, went too


def test_retention_leaves_directories_that_are_not_recordings(tmp_path):
    stray = tmp_path / "host=h" / "date=2026-01-01" / "20260101T000000Z"
    stray.mkdir(parents=True)
    (stray / "data.csv").write_text("mine")
    assert stored_segments(tmp_path) == []


def test_agent_options():
    assert retain_spec("7d") == ("age", 7 * 86400)
    assert retain_spec("90m") == ("age", 5400)
    assert retain_spec("20G") == ("bytes", 20 * 2**30)
    assert retain_spec("1.5TiB") == ("bytes", 1.5 * 2**40)
    for bad in ("7", "x", "-1d", "7q"):
        with pytest.raises(Exception, match="neither an age"):
            retain_spec(bad)
    assert listen_address("127.0.0.1:9477") == ("127.0.0.1", 9477)
    assert listen_address(":9477") == ("0.0.0.0", 9477)
    assert listen_address("9477") == ("127.0.0.1", 9477)
    assert listen_address("[::1]:80") == ("::1", 80)
    for bad in ("host:", "host:99999", "a:b"):
        with pytest.raises(Exception, match="HOST:PORT"):
            listen_address(bad)


def test_agent_refuses_bad_options_in_one_line(tmp_path, capsys):
    for argv, text in (
        (["agent", "-o", str(tmp_path), "--rotate", "0.5"], "out of range"),
        (["agent", "-o", str(tmp_path), "--retain", "7x"], "neither an age"),
        (["agent", "-o", str(tmp_path), "--metrics", "x:y"], "HOST:PORT"),
    ):
        code, _, err = run(*argv, capsys=capsys)
        assert code != 0 and text in err and "Traceback" not in err


# ---- metrics ----


def counts_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def test_widest_state():
    assert widest_state(0x1) == "none"
    assert widest_state(SSE) == "sse"
    assert widest_state(0x7) == "avx"
    assert widest_state(AVX512) == "avx512"
    assert widest_state((1 << 17) | (1 << 18) | SSE) == "amx"


def test_metric_totals_per_cgroup_and_state_bounded_and_monotonic():
    t = MetricTotals(max_cgroups=2)
    tasks = [{"task": i, "cgroup": c} for i, c in ((1, "/a"), (2, "/b"), (3, "/c"), (4, None))]
    t.add(counts_table([
        r.count(1, "regs_deactivated", 10, xf=AVX512),
        r.count(1, "regs_deactivated", 5, xf=SSE),
        r.count(1, "regs_activated", 4, xf=SSE, load=1),
        r.count(1, "regs_activated", 3, xf=SSE, load=0),
        r.count(2, "regs_deactivated", 7, xf=SSE),
        r.count(3, "regs_deactivated", 2, xf=SSE),
        r.count(4, "regs_deactivated", 1, xf=SSE),
    ]), tasks, None)  # fmt: skip
    saves = dict(t.series(t.saves))
    assert saves == {("/a", "avx512"): 10, ("/a", "sse"): 5, ("/b", "sse"): 7, (OTHER, "sse"): 3}
    assert dict(t.series(t.restores)) == {("/a", "sse"): 4}
    # a dropped counted after its save does not take the series down
    t.add(counts_table([r.count(2, "dropped", 3, xf=SSE)]), tasks, None)
    assert dict(t.series(t.saves))[("/b", "sse")] == 7
    t.add(counts_table([r.count(2, "regs_deactivated", 5, xf=SSE)]), tasks, None)
    assert dict(t.series(t.saves))[("/b", "sse")] == 9  # 7 − 3 + 5: the debt is repaid
    # a cgroup folded into "other" stays there (its series never moves)
    assert t.folded == {"/c", "unknown"} and t.labelled == {"/a", "/b"}


def test_the_exposition_has_the_documented_metrics():
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    from fptrace.reports.prometheus import AgentCollector, AgentState

    state = AgentState(MetricTotals())
    state.totals.add(counts_table([r.count(1, "regs_deactivated", 10, xf=AVX512)]),
                     [{"task": 1, "cgroup": '/a"b'}], None)  # fmt: skip
    state.drops = {"counts_map_full": 2}
    state.probes = {"tp_btf": 7}
    reg = CollectorRegistry(auto_describe=False)
    reg.register(AgentCollector(state))  # type: ignore[arg-type]
    text = generate_latest(reg).decode()
    assert 'fptrace_saves_total{cgroup="/a\\"b",state="avx512"} 10.0' in text
    assert 'fptrace_drops_total{kind="counts_map_full"} 2.0' in text
    assert 'fptrace_probes{kind="tp_btf"} 7.0' in text
    for name in ("fptrace_restores_total", "fptrace_bytes_saved_total",
                 "fptrace_tracer_cpu_seconds_total", "fptrace_parts_dropped_total"):  # fmt: skip
        assert f"# TYPE {name.removesuffix('_total')}" in text or f"# TYPE {name}" in text
    om = openmetrics(reg).decode()
    assert om.rstrip().endswith("# EOF") and "# TYPE fptrace_saves counter" in om


# ---- cgroup attribution ----


def test_cgroup_paths_by_inode_kept_after_removal(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    ids = {p: os.stat(tmp_path / p).st_ino for p in ("a", "a/b")}
    paths = CgroupPaths(tmp_path)
    paths.resolve({ids["a/b"], ids["a"]})
    assert paths.path(ids["a/b"]) == "/a/b" and paths.path(ids["a"]) == "/a"
    (tmp_path / "a" / "b").rmdir()
    paths.resolve({ids["a/b"]})
    assert paths.path(ids["a/b"]) == "/a/b"  # gone, still named
    assert paths.path(12345678, "/from/proc") == "/from/proc"
    walks = paths.walks
    paths.resolve({99999999})  # unknown: one walk, then not again for a while
    paths.resolve({99999999})
    assert paths.walks == walks + 1


def test_cgroup_id_is_the_directory_inode_and_bad_paths_are_refused(tmp_path):
    cg = tmp_path / "svc"
    cg.mkdir()
    (cg / "cgroup.procs").write_text("")
    assert cgroup_id(tmp_path, "svc/") == os.stat(cg).st_ino
    assert normalize("a//b/./") == "/a/b"
    with pytest.raises(TargetError, match="no cgroup /nope"):
        cgroup_id(tmp_path, "/nope")
    with pytest.raises(TargetError, match=r"'\.\.'"):
        cgroup_id(tmp_path, "/svc/../..")


def test_a_format_1_tasks_table_reads_with_a_null_cgroup_id(tmp_path):
    path = r.write(tmp_path / "rec", [r.count(1, "regs_deactivated", 3)], [r.task(1, cgroup="/x")])
    old = pq.read_table(path / "tasks.parquet").drop_columns(["cgroup_id"])
    assert old.schema.names == [n for n in TASKS_SCHEMA.names if n != "cgroup_id"]
    pq.write_table(old, path / "tasks.parquet")
    rec = load_recording(path)
    assert rec.tasks["cgroup_id"].isna().all() and rec.tasks["cgroup"].tolist() == ["/x"]


def test_report_has_a_cgroup_table(tmp_path, capsys):
    tasks = [r.task(1, cgroup="/a"), r.task(2, cgroup="/a", tgid=1), r.task(3, cgroup="/b")]
    path = r.write(tmp_path / "rec", [
        r.count(1, "regs_deactivated", 10, xf=AVX512),
        r.count(2, "regs_deactivated", 5, xf=SSE, tgid=1),
        r.count(3, "regs_deactivated", 1),
    ], tasks)  # fmt: skip
    code, out, err = run("report", str(path), "-f", "json", capsys=capsys)
    assert code == 0, err
    cg = {c["cgroup"]: c for c in json.loads(out)["cgroups"]}
    assert cg["/a"]["saves"] == 15 and cg["/a"]["tasks"] == 2 and cg["/a"]["processes"] == 1
    assert cg["/a"]["avx512_saves"] == 10 and cg["/b"]["saves"] == 1


def test_export_rows_carry_their_cgroup(tmp_path, capsys):
    path = r.write(tmp_path / "rec", [r.count(1, "regs_deactivated", 2)], [r.task(1, cgroup="/k")])
    code, out, _ = run("export", str(path), "-f", "jsonl", capsys=capsys)
    assert code == 0 and json.loads(out.splitlines()[0])["cgroup"] == "/k"


def test_compare_group_by_uses_the_fleet_keys(fleet_dir, capsys):
    code, out, err = run("compare", str(fleet_dir), "--group-by", "host", "-f", "json",
                         capsys=capsys)  # fmt: skip
    assert code == 0, err
    doc = json.loads(out)
    comps = doc["comparisons"] if isinstance(doc, dict) else doc
    assert [(c["baseline"], c["candidate"]) for c in comps] == [("a", "b")]
    code, _, err = run("compare", str(fleet_dir), "--group-by", "cgroup", capsys=capsys)
    assert code != 0 and "fptrace fleet --group-by cgroup" in err


def test_compare_has_cgroup_groups(tmp_path, capsys):
    def rec(name: str, n: int) -> Path:
        return r.write(tmp_path / name, [r.count(1, "regs_deactivated", n, xf=SSE),
                                         r.count(2, "regs_deactivated", 10, xf=SSE)],
                       [r.task(1, "a", cgroup="/web"), r.task(2, "b", cgroup="/db")])  # fmt: skip

    code, out, err = run("compare", str(rec("x", 100)), str(rec("y", 300)), "-f", "json",
                         capsys=capsys)  # fmt: skip
    assert code == 0, err
    rows = {(g["scope"], g["metric"]): g for g in json.loads(out)[0]["groups"]}
    web = rows[("cgroup /web", "saves_per_s")]
    assert (web["a_median"], web["b_median"]) == (50.0, 150.0)  # 2 s recordings
    assert rows[("cgroup /db", "saves_per_s")]["b_median"] == 5.0


def test_html_report_escapes_cgroup_paths(tmp_path, capsys):
    path = r.write(tmp_path / "rec", [r.count(1, "regs_deactivated", 2)],
                   [r.task(1, cgroup="/<img src=x onerror=alert(1)>")])  # fmt: skip
    code, _, err = run("report", str(path), "-f", "html", "-o", str(tmp_path / "r.html"),
                       capsys=capsys)  # fmt: skip
    assert code == 0, err
    html = (tmp_path / "r.html").read_text()
    assert 'id="cgroups"' in html and "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_a_handed_off_segment_reads_before_and_after_its_finisher(tmp_path):
    from fptrace.recording import finish
    from fptrace.recording.manifest import Manifest
    from fptrace.recording.writer import RecordingWriter, pending

    path = tmp_path / "seg"
    w = RecordingWriter(path)
    w.write_manifest(Manifest.from_json(r.manifest(status="recording")))
    w.append("counts", [r.count(1, "regs_deactivated", 7)])
    w.replace("tasks", [r.task(1, cgroup="/s")])
    w.hand_off(Manifest.from_json(r.manifest()))
    assert pending(path)
    before = load_recording(path)  # an unfinished recording, rebuilt from its parts
    assert before.recovered and before.counts_table.column("count").to_pylist() == [7]
    assert finish.main([str(path), str(tmp_path / "none")]) == 1  # one could not be
    after = load_recording(path)
    assert not pending(path) and not (path / ".parts").exists()
    assert after.manifest.status == "complete" and not after.recovered
    assert after.counts_table.column("count").to_pylist() == [7]
