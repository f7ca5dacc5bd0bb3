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
def runs(tmp_path_factory, pingpong):
    base = tmp_path_factory.mktemp("cmp")
    script = f'exec {pingpong} --mode "$FPMODE" --rounds {ROUNDS}'
    out = {"sse": [], "sse2": [], "avx512": []}
    for side, mode in (("sse", "sse"), ("sse2", "sse"), ("avx512", "avx512")):
        for i in range(RUNS):
            path = base / f"{side}-{i}"
            env = dict(os.environ, FPMODE=mode)
            proc = fptrace("record", "-q", "-o", str(path), "--", "sh", "-c", script, env=env)
            assert proc.returncode == 0, proc.stderr
            out[side].append(path)
    return base, out


def rows_by_metric(result: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in result["metrics"]}


def compare_json(*args: str) -> list[dict]:
    proc = fptrace("compare", "-f", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_avx512_vs_sse_is_significant_and_a_a_is_not(runs):
    _, r = runs
    sse, sse2, avx = ([str(p) for p in r[k]] for k in ("sse", "sse2", "avx512"))
    [res] = compare_json("--baseline", *sse, "--candidate", *avx)
    m = rows_by_metric(res)
    assert m["bytes_per_save"]["significant"] is True and m["bytes_per_save"]["ratio"] > 1.3
    assert res["changes"] == []  # same machine, same kernel
    group = {(g["scope"], g["metric"]): g for g in res["groups"]}
    assert group[("pingpong", "bytes_per_save")]["significant"] is True
    [aa] = compare_json("--baseline", *sse, "--candidate", *sse2)
    m = rows_by_metric(aa)
    assert m["bytes_per_save"]["change"] == "~"
    assert m["avx512_save_share"]["change"] == "~"


def test_fail_on_increase_gates(runs):
    _, r = runs
    sse, sse2, avx = ([str(p) for p in r[k]] for k in ("sse", "sse2", "avx512"))
    gate = ["--fail-on-increase", "10", "--metric", "bytes_per_save"]
    bad = fptrace("compare", "--baseline", *sse, "--candidate", *avx, *gate)
    assert bad.returncode == 1 and "bytes_per_save rose" in bad.stderr
    ok = fptrace("compare", "--baseline", *sse, "--candidate", *sse2, *gate)
    assert ok.returncode == 0, ok.stderr


def test_directory_grouped_by_kernel_release(runs, tmp_path):
    _, r = runs
    fleet = tmp_path / "fleet"
    for side, release in (("sse", "6.18-a"), ("avx512", "6.18-b")):
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
    args = ["--baseline", *map(str, r["sse"]), "--candidate", *map(str, r["avx512"])]
    proc = fptrace("compare", "-f", "html", "-o", str(page), *args)
    assert proc.returncode == 0, proc.stderr
    browser.get(page.as_uri())
    figures, drawn = wait_for_figures(browser)
    assert figures == 1 and drawn == 1
    assert console_errors(browser) == []
    text = browser.execute_script("return document.body.innerText")
    assert "bytes per save" in text and "~" in text
