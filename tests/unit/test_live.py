"""`fptrace top`'s numbers (analysis/live.py): one interval's counts as rates."""

from __future__ import annotations

import pyarrow as pa
import pytest

from fptrace.analysis.cost import DEFAULT
from fptrace.analysis.live import live_rows
from fptrace.recording.schema import COUNTS_SCHEMA
from tests.unit.test_xstate import AMD


def counts(*rows: tuple[int, str, int, int, int | None]) -> pa.Table:
    """(task, event, xfeatures, count, load_fpu) rows of one interval."""
    return pa.Table.from_pylist(
        [
            {"interval": 3, "task": t, "pid": t, "tgid": t, "vso": f"v{t}", "event": e,
             "xfeatures": x, "load_fpu": load, "arg": 0, "count": n, "first_ns": 0,
             "last_ns": 0}
            for t, e, x, n, load in rows
        ],
        schema=COUNTS_SCHEMA,
    )  # fmt: skip


TASKS = [
    {"task": 1, "pid": 100, "tgid": 100, "comm": "db", "cgroup": "/a"},
    {"task": 2, "pid": 101, "tgid": 100, "comm": "db-io", "cgroup": "/a"},
    {"task": 3, "pid": 200, "tgid": 200, "comm": "web", "cgroup": "/b"},
]


def test_rates_per_task_are_the_saves_of_the_interval_over_its_length() -> None:
    c = counts(
        (1, "regs_deactivated", 0xE7, 1000, 1),  # AVX-512 live
        (1, "dropped", 0xE7, 10, None),  # an exit: not a save
        (1, "regs_activated", 0xE7, 900, 1),  # restores
        (2, "regs_deactivated", 0x7, 500, 1),  # AVX
        (3, "regs_deactivated", 0x3, 2000, 1),  # SSE
    )
    rows = {r.key: r for r in live_rows(c, TASKS, 0.5, AMD, DEFAULT)}
    assert rows["100"].saves_per_s == pytest.approx(990 / 0.5)
    assert rows["100"].widest == "AVX-512" and rows["101"].widest == "AVX"
    assert rows["200"].widest == "SSE" and rows["200"].name == "web"
    assert rows["100"].bytes_per_s == pytest.approx(990 * AMD.bytes_saved(0xE7) / 0.5)
    b = AMD.bytes_saved(0xE7)
    cpu = DEFAULT.save.total(990, 990 * b) + DEFAULT.restore.total(900, 900 * b)
    assert rows["100"].cpu_ns_per_s == pytest.approx(cpu / 0.5)
    order = [r.key for r in live_rows(c, TASKS, 0.5, AMD, DEFAULT)]
    assert order == ["200", "100", "101"]  # by saves/s
    by_cpu = [r.key for r in live_rows(c, TASKS, 0.5, AMD, DEFAULT, sort="cpu")]
    assert by_cpu[0] == "100"  # fewer saves than web's, but AVX-512 ones and restores


def test_processes_and_cgroups_sum_their_tasks() -> None:
    c = counts((1, "regs_deactivated", 0xE7, 10, 1), (2, "regs_deactivated", 0x7, 30, 1),
               (3, "regs_deactivated", 0x3, 5, 1))  # fmt: skip
    procs = {r.key: r for r in live_rows(c, TASKS, 1.0, AMD, DEFAULT, by="process")}
    assert procs["100"].saves_per_s == 40 and procs["100"].threads == 2
    assert procs["100"].name == "db" and procs["100"].widest == "AVX-512"
    groups = {r.key: r for r in live_rows(c, TASKS, 1.0, AMD, DEFAULT, by="cgroup")}
    assert groups["/a"].saves_per_s == 40 and groups["/b"].saves_per_s == 5


def test_only_the_tasks_of_the_cgroups_asked_for() -> None:
    c = counts((1, "regs_deactivated", 0xE7, 10, 1), (3, "regs_deactivated", 0x3, 5, 1))
    tasks = [{**TASKS[0], "cgroup": "/system.slice/db.service"}, {**TASKS[2], "cgroup": "/b"}]
    got = live_rows(c, tasks, 1.0, AMD, DEFAULT, cgroups=["/system.slice/"])
    assert [r.key for r in got] == ["100"]
    assert live_rows(c, tasks, 1.0, AMD, DEFAULT, cgroups=["/system"]) == []  # not a prefix
