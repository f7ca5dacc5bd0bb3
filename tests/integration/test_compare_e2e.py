"""compare on real recordings: AVX-512 vs SSE-only, an A/A pair, groups, HTML offline.

Both sides run the same command (the mode comes from the environment), as when a library
starts using AVX-512 under an unchanged workload: the comparability rules accept that.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.integration.conftest import console_errors, fptrace, wait_for_figures

RUNS = 4  # the smallest sample for which an exact Mann-Whitney test can reach p < 0.05
ROUNDS = 1500


@pytest.fixture(scope="module")
def runs(tmp_path_factory, pingpong, level):
    """RUNS recordings a side: SSE, SSE again (A/A), and the widest level this CPU has."""
    base = tmp_path_factory.mktemp("cmp")
    script = f'exec {pingpong} --mode "$FPMODE" --rounds {ROUNDS}'
    out: dict[str, list] = {"sse": [], "sse2": [], "wide": []}
    for side, mode in (("sse", "sse"), ("sse2", "sse"), ("wide", level)):
        for i in range(RUNS):
            path = base / f"{side}-{i}"
            env = dict(os.environ, FPMODE=mode)
            proc = fptrace("record", "-q", "-o", str(path), "--", "sh", "-c", script, env=env)
            assert proc.returncode == 0, proc.stderr
            work = json.loads(proc.stdout.splitlines()[-1])
            assert work["live"] and work["xinuse_parent"] == work["xinuse_child"], work
            (path.parent / f"{path.name}.work.json").write_text(proc.stdout)
            out[side].append(path)
    return base, out


def workload_xinuse(path) -> int:
    """What the run's workload had live when it blocked (its own XGETBV(1))."""
    return json.loads(path.parent.joinpath(f"{path.name}.work.json").read_text())["xinuse_parent"]


def rows_by_metric(result: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in result["metrics"]}


def compare_json(*args: str) -> list[dict]:
    proc = fptrace("compare", "-f", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_widest_level_vs_sse_is_significant_and_a_a_is_not(runs, cpu):
    _, r = runs
    sse, sse2, avx = ([str(p) for p in r[k]] for k in ("sse", "sse2", "wide"))
    [res] = compare_json("--baseline", *sse, "--candidate", *avx)
    m = rows_by_metric(res)
    # The ratio the CPU's component sizes give for what each side's workload had live.
    want = cpu.bytes_written(workload_xinuse(r["wide"][0])) / cpu.bytes_written(
        workload_xinuse(r["sse"][0])
    )
    assert want > 1.1, want
    assert m["bytes_per_save"]["significant"] is True
    assert abs(m["bytes_per_save"]["ratio"] / want - 1) < 0.05, (m["bytes_per_save"], want)
    assert res["changes"] == []  # same machine, same kernel
    group = {(g["scope"], g["metric"]): g for g in res["groups"]}
    assert group[("pingpong", "bytes_per_save")]["significant"] is True
    [aa] = compare_json("--baseline", *sse, "--candidate", *sse2)
    m = rows_by_metric(aa)
    assert m["bytes_per_save"]["change"] == "~"
    # Not significant: "~", or no change at all where both sides are 0 (no AVX-512 here).
    assert m["avx512_save_share"]["significant"] is not True, m["avx512_save_share"]


def test_fail_on_increase_gates(runs):
    _, r = runs
    sse, sse2, avx = ([str(p) for p in r[k]] for k in ("sse", "sse2", "wide"))
    gate = ["--fail-on-increase", "10", "--metric", "bytes_per_save"]
    bad = fptrace("compare", "--baseline", *sse, "--candidate", *avx, *gate)
    assert bad.returncode == 1 and "bytes_per_save rose" in bad.stderr
    ok = fptrace("compare", "--baseline", *sse, "--candidate", *sse2, *gate)
    assert ok.returncode == 0, ok.stderr


def test_directory_grouped_by_kernel_release(runs, tmp_path):
    _, r = runs
    fleet = tmp_path / "fleet"
    for side, release in (("sse", "6.18-a"), ("wide", "6.18-b")):
        for p in r[side]:
            dest = fleet / release / p.name
            shutil.copytree(p, dest)
            m = json.loads((dest / "manifest.json").read_text())
            m["host"]["kernel"]["release"] = release
            (dest / "manifest.json").write_text(json.dumps(m))
    [res] = compare_json(str(fleet), "--group-by", "host.kernel.release")
    assert (res["baseline"], res["candidate"]) == ("6.18-a", "6.18-b")
    assert len(res["runs"]["baseline"]) == RUNS == len(res["runs"]["candidate"])
    assert {(c["category"], c["key"]) for c in res["changes"]} == {("kernel", "release")}
    assert rows_by_metric(res)["bytes_per_save"]["significant"] is True


def test_refusals_and_bad_input(runs, tmp_path):
    _, r = runs
    other = tmp_path / "other"
    proc = fptrace("record", "-q", "-o", str(other), "--", "true")
    assert proc.returncode == 0
    refused = fptrace("compare", str(r["sse"][0]), str(other))
    assert refused.returncode == 65 and "different workloads" in refused.stderr
    assert refused.stderr.count("\n") == 1
    forced = fptrace("compare", str(r["sse"][0]), str(other), "--force")
    assert forced.returncode == 0 and "compared anyway" in forced.stdout
    foreign = fptrace("compare", str(r["sse"][0]), str(tmp_path))
    assert foreign.returncode == 65 and "not an fptrace recording" in foreign.stderr
    single = fptrace("compare", str(r["sse"][0]))
    assert single.returncode == 2


def test_compare_html_offline(runs, tmp_path, browser):
    _, r = runs
    page = tmp_path / "cmp.html"
    args = ["--baseline", *map(str, r["sse"]), "--candidate", *map(str, r["wide"])]
    proc = fptrace("compare", "-f", "html", "-o", str(page), *args)
    assert proc.returncode == 0, proc.stderr
    browser.get(page.as_uri())
    figures, drawn = wait_for_figures(browser)
    assert figures == 1 and drawn == 1
    assert console_errors(browser) == []
    # The totals table: metric label -> change cell (column 5), as drawn in the page.
    change = dict(
        browser.execute_script(
            "return Array.from(document.querySelectorAll('table.data')[0].tBodies[0].rows)"
            ".map(r => [r.cells[1].textContent, r.cells[4].textContent])"
        )
    )
    grew = change["bytes per save (estimate)"]
    assert grew.startswith("+") and grew.endswith("%"), change
    assert change["median VSO size (bytes)"] == "~", change  # the same buffers on both sides


def test_fail_on_increase_default_metric_one_run_a_side_and_from_zero(pingpong, tmp_path):
    """The gate with its default metric (estimated CPU), single runs, and a zero baseline.

    One command line for every run (so compare accepts them); the environment decides what
    it does: nothing, the known pingpong, or signals to itself (signal frames, from zero).
    """
    script = (
        f'if [ -n "$WORK" ]; then exec {pingpong} --rounds 3000; fi; '
        'i=0; while [ "$i" -lt "${SIGNALS:-0}" ]; do kill -USR1 $$; i=$((i+1)); done'
    )
    prelude = "trap : USR1; "

    def run(name: str, **env: str):
        path = tmp_path / name
        proc = fptrace(
            "record",
            "-q",
            "-o",
            str(path),
            "--",
            "sh",
            "-c",
            prelude + script,
            env=dict(os.environ, **env),
        )
        assert proc.returncode == 0, proc.stderr
        return str(path)

    idle, busy = run("idle"), run("busy", WORK="1")
    quiet, noisy = run("quiet"), run("noisy", SIGNALS="200")
    rose = fptrace("compare", idle, busy, "--fail-on-increase", "50")  # default metric
    assert rose.returncode == 1 and "est_cpu_ns_per_s rose" in rose.stderr, rose.stderr
    assert fptrace("compare", busy, idle, "--fail-on-increase", "50").returncode == 0
    gate = ["--fail-on-increase", "1000", "--metric", "signal_frame_bytes_per_s"]
    from_zero = fptrace("compare", quiet, noisy, *gate)
    assert from_zero.returncode == 1 and "rose from 0 to" in from_zero.stderr, from_zero.stderr
    assert fptrace("compare", noisy, quiet, *gate).returncode == 0
