"""counts.reason: saves split by why the task left the CPU, and format-2 recordings (no
reason column) read with it null."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from fptrace import cli
from fptrace.collectors.columns import reason_column
from fptrace.probes.plan import REASONS
from fptrace.recording.loader import load_recording
from tests.unit import recordings as r

SSE = 0x3


def report_json(path, capsys) -> dict:
    assert cli.main(["report", str(path), "-f", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_reason_codes_become_names_and_nulls():
    codes = np.array([REASONS["REASON_VOLUNTARY"], REASONS["REASON_INVOLUNTARY"],
                      REASONS["REASON_NONE"], 7])  # fmt: skip
    assert reason_column(codes).to_pylist() == ["voluntary", "involuntary", None, None]


def test_saves_and_bytes_split_by_reason(tmp_path, capsys):
    path = r.write(tmp_path / "rec", [
        r.count(1, "regs_deactivated", 60, xf=SSE, reason="voluntary"),
        r.count(1, "regs_deactivated", 40, xf=SSE, reason="involuntary"),
        r.count(1, "dropped", 1, xf=SSE, reason="involuntary"),
        r.count(2, "regs_deactivated", 9, xf=SSE, reason=None),
        r.count(1, "regs_activated", 99, xf=SSE),
    ], [r.task(1), r.task(2)])  # fmt: skip
    doc = report_json(path, capsys)
    h = doc["headline"]
    assert h["saves_by_reason"] == {"voluntary": 60, "involuntary": 39, "unknown": 9}
    per_save = h["bytes_saved_by_reason"]["voluntary"] / 60
    assert per_save > 0 and h["bytes_saved_by_reason"]["involuntary"] == 39 * per_save
    assert h["voluntary_save_share"] == 60 / 108
    t = {x["pid"]: x for x in doc["tasks"]}
    assert (t[1]["voluntary_saves"], t[1]["involuntary_saves"]) == (60, 39)
    assert (t[2]["voluntary_saves"], t[2]["involuntary_saves"]) == (0, 0)
    assert cli.main(["report", str(path), "-f", "text"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "voluntary 56% (blocked), involuntary 36% (preempted), not recorded 8%" in text


def test_a_format_2_counts_table_reads_with_no_reason(tmp_path, capsys):
    path = r.write(tmp_path / "rec", [r.count(1, "regs_deactivated", 5, reason="voluntary")],
                   [r.task(1)])  # fmt: skip
    old = pq.read_table(path / "counts.parquet").drop_columns(["reason"])
    pq.write_table(old, path / "counts.parquet")
    rec = load_recording(path)
    assert rec.counts_table.column("reason").null_count == 1
    only = [b.num_columns for b in rec.iter_counts(columns=["task", "count", "reason"])]
    assert only == [3]
    h = report_json(path, capsys)["headline"]
    assert h["saves_by_reason"] == {"voluntary": 0, "involuntary": 0, "unknown": 5}
    # and through compare's DuckDB path
    assert cli.main(["compare", str(path), str(path), "-f", "json"]) == 0


def test_the_reason_read_is_planned_from_btf_and_can_be_left_out():
    from fptrace.probes.plan import PlanOptions, plan_probes
    from tests.unit.fake_kernels import kernel_6_18

    on = plan_probes(kernel_6_18(), PlanOptions(filter_targets=False, self_tgid=1))
    off = plan_probes(kernel_6_18(), PlanOptions(filter_targets=False, self_tgid=1, reason=False))
    assert "TASK_STATE_OFF" in on.macros and "TASK_STATE_OFF" not in off.macros
    assert any("not split by reason" in n for n in off.notes)
