"""Report analysis and rendering on hand-made recordings with known answers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from fptrace.analysis import cost
from fptrace.analysis.report import build, state_class
from fptrace.errors import RecordingError
from fptrace.recording.loader import load_recording
from fptrace.reports.html import render_html, safe_json
from fptrace.reports.json_report import render_json
from fptrace.reports.terminal import render_report
from tests.unit.recordings import count, task, vso, write
from tests.unit.test_xstate import AMD

HOSTILE = "</script><b>x"


def data(tmp_path: Path, counts, tasks=(), vsos=(), model=cost.DEFAULT, **man):
    return build(load_recording(write(tmp_path / "r", counts, tasks, vsos, **man)), model)


def test_bytes_shares_and_cost_for_a_known_task(tmp_path: Path) -> None:
    d = data(
        tmp_path,
        [
            count(1, "regs_deactivated", 30, xf=0xE6, load=None),  # AVX-512 live
            count(1, "regs_deactivated", 10, xf=0x02, load=None),  # SSE only
            count(1, "regs_activated", 25, xf=0xE6, load=1),
            count(1, "regs_activated", 4, xf=0, load=0),  # 2 deliveries + 2 sigreturns
            count(1, "signal_deliver", 2, xf=10, load=None),
        ],
        [task(1, "app", switches=50, oncpu_ns=1_000_000)],
        [vso(1)],
        duration_s=4.0,
    )
    t = d.tasks.iloc[0]
    b_e6, b_02 = AMD.bytes_saved(0xE6), AMD.bytes_saved(0x02)
    assert (b_e6, b_02) == (16 + 8 + 256 + 256 + 64 + 512 + 1024, 16 + 8 + 256)
    assert t.saves == 40 and t.restores == 25 and t.restores_skipped == 15
    assert t.bytes_saved == 30 * b_e6 + 10 * b_02
    assert t.bytes_restored == 25 * b_e6
    assert t.avx512_share == 0.75 and t.amx_share == 0
    assert t.saves_per_s == 10 and t.switch_save_share == 0.8
    assert t.signal_frame_bytes == 2 * 2696  # deliveries x the VSO's user_size
    assert t.sigreturns == 2
    # Per frame: XSAVE of user_size bytes + XRSTOR of the init state; per sigreturn: XRSTOR.
    signal_ns = 2 * (35 + 2696 * 0.04 + 35) + 2 * (35 + 2696 * 0.04)
    assert t.est_signal_ns == pytest.approx(signal_ns)
    expect_ns = 40 * 35 + t.bytes_saved * 0.04 + 25 * 35 + t.bytes_restored * 0.04 + signal_ns
    assert t.est_ns == pytest.approx(expect_ns)
    assert t.est_oncpu_share == pytest.approx(expect_ns / 1_000_000)
    h = d.headline
    assert h["bytes_per_save"] == pytest.approx(t.bytes_saved / 40)
    assert h["cost_estimate"] is True


def test_untraced_saves_and_vso_replacement(tmp_path: Path) -> None:
    d = data(
        tmp_path,
        [
            count(1, "regs_deactivated", 5, load=None),
            count(1, "regs_activated", 8, load=1),  # 3 restores with no traced save before
            count(1, "xcomp_perm", 1, xf=18, load=None, arg=0x1023),
        ],
        [task(1)],
        [vso(1), vso(1, size=10688, vso="v1b", is_valloc=True, prev_vso="v1")],
    )
    t = d.tasks.iloc[0]
    assert t.untraced_saves == 3 and t.vso_replacements == 1 and t.vsos == 2
    assert t.xcomp_requests == 1
    assert d.headline["vso_replacements"] == 1
    assert set(d.vsos["footprint"]) == {2448, 10688}


def test_timeline_classes(tmp_path: Path) -> None:
    assert [state_class(x) for x in (0x60000, 0xE6, 0x6, 0x2, 0)] == [
        "AMX",
        "AVX-512",
        "AVX",
        "SSE/x87",
        "init",
    ]
    d = data(
        tmp_path,
        [
            count(1, "regs_deactivated", 3, xf=0xE6, interval=0),
            count(1, "regs_deactivated", 4, xf=0x2, interval=1),
            count(1, "regs_deactivated", 1, xf=0xE6, interval=1),
        ],
        interval_s=0.5,
    )
    tl = d.timeline.set_index(["interval", "state"])
    assert tl.loc[(0, "AVX-512"), "saves"] == 3
    assert tl.loc[(1, "SSE/x87"), "saves"] == 4
    assert tl.loc[(1, "AVX-512"), "t_s"] == 1.0


def test_calibration_table_replaces_the_estimate(tmp_path: Path) -> None:
    table = {
        "format": "fptrace-calibration",
        "save": {"base_ns": 10, "ns_per_byte": 0},
        "restore": {"base_ns": 20, "ns_per_byte": 0},
    }
    f = tmp_path / "cal.json"
    f.write_text(json.dumps(table))
    model = cost.load_calibration(f)
    d = data(
        tmp_path,
        [count(1, "regs_deactivated", 3, load=None), count(1, "regs_activated", 2, load=1)],
        model=model,
    )
    assert d.tasks.iloc[0].est_ns == 3 * 10 + 2 * 20
    assert d.headline["cost_estimate"] is False
    f.write_text("{}")
    with pytest.raises(RecordingError, match="not an fptrace calibration table"):
        cost.load_calibration(f)


def test_hostile_names_are_escaped_everywhere_in_html(tmp_path: Path) -> None:
    d = data(
        tmp_path,
        [count(1, "regs_deactivated", 3, xf=0xE6, load=None)],
        [task(1, HOSTILE, cmdline=HOSTILE + " --x", cgroup="/<img src=x>")],
        [vso(1)],
    )
    page = render_html(d)
    assert HOSTILE not in page and "<b>x" not in page and "<img src=x>" not in page
    assert "&lt;/script&gt;&lt;b&gt;x" in page  # the table cell, as text
    # Only our own script blocks: JSON data blocks, plotly.js and report.js.
    assert len(re.findall(r"<script\b", page)) == len(re.findall(r"</script>", page))


def test_safe_json_cannot_close_a_script_block() -> None:
    text = safe_json({"name": HOSTILE, "amp": "a&b", "ls": "\u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text)["name"] == HOSTILE


def test_empty_recording_reports_nothing_to_see(tmp_path: Path) -> None:
    d = data(tmp_path, [])
    assert d.empty
    assert "Nothing to see" in render_html(d)
    assert json.loads(render_json(d))["headline"]["saves"] == 0


def test_json_has_the_same_numbers(tmp_path: Path) -> None:
    d = data(tmp_path, [count(7, "regs_deactivated", 9, load=None)], [task(7)], [vso(7)])
    out = json.loads(render_json(d))
    assert out["headline"]["saves"] == 9 == out["tasks"][0]["saves"]
    assert out["vsos"][0]["size"] == 2448


def test_drops_are_shown_prominently(tmp_path: Path) -> None:
    clean = data(tmp_path / "a", [count(1, "regs_deactivated", 1, load=None)])
    assert 'id="drops"' not in render_html(clean)
    lossy = data(
        tmp_path / "b",
        [count(1, "regs_deactivated", 1, load=None)],
        drops={"counts_map_full": 2, "lost_events": 40},
    )
    page = render_html(lossy)
    assert 'id="drops"' in page and "lost_events = 40" in page
    assert lossy.headline["drops_total"] == 42
    # One warning, the same words in JSON and text (JSON's warnings were empty before).
    [warning] = json.loads(render_json(lossy))["warnings"]
    assert warning.startswith("DROPS: counts_map_full=2, lost_events=40 (")
    console = Console(record=True, width=200)
    render_report(lossy, console)
    assert warning in console.export_text()
    assert json.loads(render_json(clean))["warnings"] == []


def test_restores_estimated_by_pairing_are_said_to_be_estimates(tmp_path: Path) -> None:
    paired = data(
        tmp_path / "a",
        [
            count(1, "regs_deactivated", 10, xf=0xE6, load=None),
            count(1, "regs_activated", 14, xf=0xE6, load=None),  # 10 restores + 2 x 2 signal
            count(1, "signal_deliver", 2, xf=10, load=None),
            count(2, "regs_activated", 5, xf=0xE6, load=None),  # no signals: no doubt
        ],
    )
    t = paired.tasks.set_index("pid")
    assert t.loc[1, "restores"] == 10 and t.loc[2, "restores"] == 5
    assert t.loc[1, "bytes_restored"] == 10 * AMD.bytes_saved(0xE6)
    [warning] = json.loads(render_json(paired))["warnings"]
    assert warning.startswith("restores of 1 task that caught signals are estimated")
    console = Console(record=True, width=300)
    render_report(paired, console)
    assert warning in console.export_text()
    exact = data(
        tmp_path / "b",
        [
            count(1, "regs_activated", 10, load=1),
            count(1, "regs_activated", 2, load=0),
            count(1, "signal_deliver", 2, xf=10, load=None),
        ],
    )
    assert json.loads(render_json(exact))["warnings"] == []


def test_untrusted_strings_cannot_drive_a_terminal():
    from rich.console import Console

    from fptrace.reports.plain import printable, text

    assert printable("[b]y\x1b[2J\x07\x9b\x7f\n") == "[b]y\\x1b[2J\\x07\\x9b\\x7f\\x0a"
    assert printable("pingpong ünïcode") == "pingpong ünïcode"  # printable text is kept
    console = Console(record=True, force_terminal=True, width=80)
    console.print(text("[bold]x\x1b]0;pwned\x07"))
    out = console.export_text(styles=False)
    assert out == "[bold]x\\x1b]0;pwned\\x07\n"  # markup shown, the title escape inert


def test_the_timeline_divides_by_each_interval_s_measured_span() -> None:
    from fptrace.analysis.report import timeline

    raw = pd.DataFrame(
        {
            "interval": [0, 1, 2],
            "event": ["regs_deactivated"] * 3,
            "xfeatures": [0x2, 0x2, 0x2],
            "count": [100, 1000, 100],
        }
    )
    # The second drain came 9 s late: ten times the events over ten times the time.
    spans = pd.DataFrame(
        {
            "interval": [0, 1, 2],
            "start_ns": [0, 1_000_000_000, 11_000_000_000],
            "end_ns": [1_000_000_000, 11_000_000_000, 12_000_000_000],
        }
    )
    tl = timeline(raw, None, 1.0, spans)
    assert tl["saves_per_s"].tolist() == [100.0, 100.0, 100.0]  # no spike
    assert tl["t_s"].tolist() == [1.0, 11.0, 12.0]
    assert tl["start_s"].tolist() == [0.0, 1.0, 11.0]
    # A recording made before intervals were measured: the nominal grid, as before.
    old = timeline(raw, None, 1.0, None)
    assert old["t_s"].tolist() == [1.0, 2.0, 3.0]
    assert old["saves_per_s"].tolist() == [100.0, 1000.0, 100.0]


def test_every_view_adds_up_to_the_headline_saves(tmp_path: Path) -> None:
    """A save is regs_deactivated less the exit path's (followed by dropped), once, for every
    view: headline, task and VSO tables, timeline, live components and bytes agree, even
    where the exit path's pair straddles an interval (issue #14: 40,010 / 40,012 / 40,011)."""
    d = data(
        tmp_path,
        [
            count(1, "regs_deactivated", 30, xf=0xE6, interval=0),
            count(1, "regs_deactivated", 10, xf=0x2, interval=1),
            count(1, "regs_deactivated", 1, xf=0x2, interval=1, load=0),  # exit path…
            count(1, "dropped", 1, xf=0x2, interval=2, load=None),  # …and its drop
            count(1, "regs_activated", 25, xf=0xE6, load=1),
            count(2, "regs_deactivated", 6, xf=0x6, interval=0),
            count(2, "dropped", 1, xf=0x6, interval=0, load=None),
        ],
        [task(1, "app"), task(2, "other")],
        [vso(1), vso(2)],
        interval_s=0.5,
    )
    want = 30 + 10 + 5
    h = d.headline
    assert h["saves"] == want
    assert int(d.tasks["saves"].sum()) == want
    assert int(d.vsos["saves"].sum()) == want
    assert int(d.timeline["saves"].sum()) == want
    sse = d.components.set_index("component").loc["SSE"]  # live in every one of them
    assert int(sse["saves"]) == want and sse["share"] == 1.0
    want_bytes = 30 * AMD.bytes_saved(0xE6) + 10 * AMD.bytes_saved(0x2) + 5 * AMD.bytes_saved(0x6)
    assert h["bytes_saved"] == want_bytes
    assert int(d.timeline["bytes_saved"].sum()) == want_bytes
    assert h["avx512_save_share"] == pytest.approx(30 / want)
    assert json.loads(render_json(d))["headline"]["saves"] == want


def test_the_headline_speaks_of_the_levels_this_cpu_has(tmp_path: Path) -> None:
    """On an AMD EPYC with AVX2 and no AVX-512 the summary said "AVX-512 live in 0% and AMX
    in 0% of saves" and nothing of AVX, the widest state that CPU has."""
    import io

    from rich.console import Console

    from fptrace.reports.terminal import render_report
    from tests.unit.recordings import AMD

    host = {"xstate": {"components": AMD.to_json(), "enabled_features": 0x7}}  # x87 SSE AVX
    counts = [
        count(1, "regs_deactivated", 30, xf=0x7),  # AVX live
        count(1, "regs_deactivated", 10, xf=0x3),  # SSE only
        count(1, "dropped", 10, xf=0x7),  # an exit: not a save
    ]
    path = write(tmp_path / "r", counts, [task(1)], [vso(1)], host=host)
    data = build(load_recording(path), cost.DEFAULT)
    shares = data.headline["level_shares"]
    assert shares == {"SSE": 1.0, "AVX": 2 / 3, "AVX-512": None, "AMX": None, "APX": None}
    out = io.StringIO()
    render_report(data, Console(file=out, width=200))
    assert "SSE 100%, AVX 67%, AVX-512 n/a, AMX n/a, APX n/a" in out.getvalue()
    # The tasks table's share is the widest level this CPU has: AVX, not AVX-512.
    header = next(line for line in out.getvalue().splitlines() if "┃ pid" in line)
    assert header.split("┃")[-3].strip() == "AVX", header
    assert data.tasks.loc[0, "avx_share"] == pytest.approx(2 / 3)


def test_a_vso_smaller_than_cpuids_compacted_size_is_explained(tmp_path: Path) -> None:
    """A VSO of 2,448 B against a layout of 2,472 B: the kernel (6.17+) leaves the
    guest-only CET_S component out of task buffers, which the report now says."""
    from tests.unit.recordings import AMD

    xstate = {"components": AMD.to_json(), "enabled_features": 0x18E7}
    xstate |= {"compacted_size_enabled": 2472}
    path = write(
        tmp_path / "r",
        [count(1, "regs_deactivated", 3)],
        [task(1)],
        [vso(1, size=2448, xcomp_bv=0x80000000000008E7)],
        host={"xstate": xstate},
    )
    (note,) = build(load_recording(path), cost.DEFAULT).vso_size_notes
    assert note.startswith("VSO 2,448 B vs 2,472 B") and "leaves CET_S (supervisor" in note


def test_processes_sum_their_threads(tmp_path: Path) -> None:
    """Per-process rollup beside the per-task table: threads summed, named by the main one."""
    counts = [
        count(10, "regs_deactivated", 5),
        count(11, "regs_deactivated", 7, tgid=10),
        count(20, "regs_deactivated", 3),
    ]
    tasks = [task(10, "server"), task(11, "server-io", tgid=10, switches=50), task(20, "tool")]
    path = write(tmp_path / "r", counts, tasks, [vso(10), vso(11, tgid=10), vso(20)])
    data = build(load_recording(path), cost.DEFAULT)
    got = data.processes.set_index("tgid")
    assert got.loc[10, ["comm", "threads", "saves", "switches"]].tolist() == ["server", 2, 12, 150]
    assert got.loc[20, ["comm", "threads", "saves"]].tolist() == ["tool", 1, 3]
    assert int(data.processes["saves"].sum()) == data.headline["saves"] == 15
    import io

    from fptrace.reports.json_report import render_json
    from fptrace.reports.terminal import render_report

    assert {p["tgid"]: p["threads"] for p in json.loads(render_json(data))["processes"]} == {
        10: 2,
        20: 1,
    }
    out = io.StringIO()
    render_report(data, Console(file=out, width=200))
    assert "Top processes (threads summed)" in out.getvalue()
