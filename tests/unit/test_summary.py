"""Save/restore classification on hand-made counts with known answers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from fptrace.analysis import summary
from fptrace.recording.loader import load_recording
from tests.unit.recordings import count, task, write


def rec(tmp_path: Path, counts, tasks=()):
    return load_recording(write(tmp_path / "r", counts, tasks))


def test_saves_exclude_the_exit_path_and_restores_need_load_fpu(tmp_path: Path) -> None:
    r = rec(
        tmp_path,
        [
            count(1, "regs_deactivated", 100, load=None),
            count(1, "regs_deactivated", 1, load=None),  # exit path ...
            count(1, "dropped", 1, load=0),  # ... paired with dropped
            count(1, "regs_activated", 60, load=1),  # return-to-user restores
            count(1, "regs_activated", 5, load=0),  # signal delivery/sigreturn: not restores
            count(1, "copy_dst", 2, load=0),
            count(1, "signal_deliver", 3, xf=10),
        ],
        [task(1, "app", switches=120)],
    )
    t = summary.per_task(r.counts, r.tasks).iloc[0]
    assert (t.saves, t.restores, t.restores_skipped) == (100, 60, 40)
    assert (t.fork_copies, t.signal_frames, t.comm, t.switches) == (2, 3, "app", 120)


def test_restores_fall_back_to_all_when_load_fpu_is_unknown(tmp_path: Path) -> None:
    r = rec(tmp_path, [count(1, "regs_activated", 9, load=None)])
    assert summary.per_task(r.counts, r.tasks).iloc[0].restores == 9


def test_live_component_shares_and_bytes(tmp_path: Path) -> None:
    r = rec(
        tmp_path,
        [
            count(1, "regs_deactivated", 3, xf=0xE6),  # SSE AVX opmask ZMM_Hi256 Hi16_ZMM
            count(1, "regs_deactivated", 1, xf=0xA2),  # SSE opmask Hi16_ZMM
        ],
    )
    comps = summary.live_components(r.counts).set_index("component")
    assert comps.loc["SSE", "share"] == 1.0
    assert comps.loc["AVX512_ZMM_Hi256", "share"] == 0.75
    assert "x87" not in comps.index


def test_an_empty_recording(tmp_path: Path) -> None:
    r = rec(tmp_path, [])
    assert summary.live_components(r.counts).empty
    assert isinstance(summary.vso_sizes(r.vso), pd.DataFrame)


def test_without_load_fpu_each_caught_signal_removes_two_restores(tmp_path: Path) -> None:
    r = rec(
        tmp_path,
        [
            count(1, "regs_deactivated", 100, load=None),
            count(1, "regs_activated", 110, load=None),  # 100 restores + 5 x (delivery, sigreturn)
            count(1, "signal_deliver", 5, xf=14, load=None),
        ],
    )
    assert summary.per_task(r.counts, r.tasks).iloc[0].restores == 100


def test_a_handler_that_longjmps_leaves_the_restores_alone(tmp_path: Path) -> None:
    # load_fpu read at every regs_activated: 10 deliveries, no sigreturn (siglongjmp).
    r = rec(
        tmp_path,
        [
            count(1, "regs_deactivated", 60, load=None),
            count(1, "regs_activated", 50, load=1),
            count(1, "regs_activated", 10, load=0),
            count(1, "signal_deliver", 10, xf=10, load=None),
            count(2, "regs_deactivated", 60, load=None),
            count(2, "regs_activated", 50, load=1),
            count(2, "regs_activated", 20, load=0),  # handlers that return: + 10 sigreturns
            count(2, "signal_deliver", 10, xf=10, load=None),
        ],
    )
    t = summary.per_task(r.counts, r.tasks).set_index("pid")
    assert t.loc[1, ["restores", "sigreturns", "restores_estimated"]].tolist() == [50, 0, False]
    assert t.loc[2, ["restores", "sigreturns", "restores_estimated"]].tolist() == [50, 10, False]


def test_restores_paired_with_signals_are_marked_estimated(tmp_path: Path) -> None:
    r = rec(
        tmp_path,
        [
            count(1, "regs_activated", 30, load=None),
            count(1, "signal_deliver", 10, xf=10, load=None),
            count(2, "regs_activated", 30, load=None),  # no signals: pairing is exact
        ],
    )
    t = summary.per_task(r.counts, r.tasks).set_index("pid")
    assert t.loc[1, ["restores", "sigreturns", "restores_estimated"]].tolist() == [10, 10, True]
    assert t.loc[2, ["restores", "sigreturns", "restores_estimated"]].tolist() == [30, 0, False]


def test_two_tasks_that_had_the_same_pid_are_two_rows(tmp_path: Path) -> None:
    # pid 7 was one process, then (after pid reuse) another: the recording's task ids differ.
    r = rec(
        tmp_path,
        [
            count(7, "regs_deactivated", 10, load=None, task=1),
            count(7, "regs_deactivated", 3, load=None, task=2),
        ],
        [task(7, "first", task=1), task(7, "second", task=2)],
    )
    t = summary.per_task(r.counts, r.tasks).set_index("task")
    assert t.loc[1, ["pid", "saves", "comm"]].tolist() == [7, 10, "first"]
    assert t.loc[2, ["pid", "saves", "comm"]].tolist() == [7, 3, "second"]


def test_a_recording_from_before_task_ids_loads_with_one_task_per_pid(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = write(tmp_path / "r", [count(5, "regs_deactivated", 4, load=None)], [task(5)])
    for name in ("counts", "tasks", "vso"):
        table = pq.read_table(path / f"{name}.parquet")
        pq.write_table(table.drop_columns(["task"]), path / f"{name}.parquet")
    r = load_recording(path)
    assert r.tasks["task"].tolist() == [5] and r.counts["task"].tolist() == [5]
    assert [b.column("task").to_pylist() for b in r.iter_counts(["task", "count"])] == [[5]]
    assert summary.per_task(r.counts, r.tasks).iloc[0].saves == 4
