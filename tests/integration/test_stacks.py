"""record --stacks: known answers for where vector state is live when a task leaves the CPU
(fptrace/workloads/avxsites.c), and a stock Debian program's saves attributed to its own
library.  Shares are over stack samples (rate-limited), totals over the counts."""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pyarrow.parquet as pq
import pytest

from fptrace.workloads.build import workload_binary
from tests.conftest import skip_hardware
from tests.integration.conftest import console_errors, fptrace, wait_for_figures

AVX, AVX512, HI16_ZMM = 1 << 2, (1 << 5) | (1 << 6) | (1 << 7), 1 << 7
SIGN = {"regs_deactivated": 1, "dropped": -1}


def samples_with_frames(path) -> pd.DataFrame:
    """One row per stack sample key, with its user frames (leaf first) as a list."""
    s = pq.read_table(path / "stack_samples.parquet").to_pandas()
    st = pq.read_table(path / "stacks.parquet").to_pandas()
    frames = st[~st["kernel"]].sort_values(["stack", "depth"]).groupby("stack")["function"]
    by_id = {int(k): list(v) for k, v in frames}
    s["user"] = [by_id.get(int(u), []) if pd.notna(u) else [] for u in s["user_stack"]]
    return s


def record_avxsites(record, mode: str, *extra: str):
    run = record("--stacks=100000", "--", str(workload_binary("avxsites")), "--mode", mode,
                 *extra, name=mode)  # fmt: skip
    assert run.proc.returncode == 0, run.proc.stderr
    return run, run.workload_json()


def test_avx_dirty_when_blocking_is_attributed_to_the_blocking_function(record, cpu):
    if not cpu.has_avx:
        skip_hardware("no AVX")
    check_block(record)


def check_block(record):
    run, work = record_avxsites(record, "block", "--rounds", "20000")
    s = samples_with_frames(run.path)
    mine = s[(s["pid"] == work["parent_pid"]) & (s["reason"] == "voluntary")]
    mine = mine[mine["xfeatures"].map(lambda x: int(x) & AVX != 0)]
    with_stack = mine[mine["user"].map(len) > 0]
    assert with_stack["samples"].sum() >= 100, s  # enough to tell 99 % apart
    at_b = with_stack[with_stack["user"].map(lambda f: f[0] == "wait_in_read")]
    assert at_b["samples"].sum() >= 0.99 * with_stack["samples"].sum(), with_stack
    assert (at_b["user"].map(lambda f: f[1]) == "main").all()  # called from main
    r = fptrace("report", str(run.path), "-f", "json")
    doc = json.loads(r.stdout)
    assert any("voluntary at wait_in_read() called from main()" in h for h in doc["hints"])
    sites = [x for x in doc["stacks"]["blocking_sites"] if x["pid"] == work["parent_pid"]]
    assert sites[0]["site"] == "wait_in_read" and sites[0]["share"] >= 0.99, sites
    return run, work


def test_the_html_report_draws_the_icicle_and_the_call_sites(record, cpu, browser, tmp_path):
    if not cpu.has_avx:
        skip_hardware("no AVX")
    run, work = check_block(record)
    page = tmp_path / "r.html"
    assert fptrace("report", str(run.path), "-o", str(page)).returncode == 0
    browser.get(page.as_uri())
    figures, drawn = wait_for_figures(browser)
    assert figures == drawn and figures >= 2
    assert console_errors(browser) == []
    labels = browser.execute_script(
        "return Array.from(document.querySelectorAll('#fig-stacks text.slicetext'))"
        ".map(t => t.textContent)"
    )
    assert any(label.startswith("AVX live, blocked") for label in labels), labels
    rows = browser.execute_script(
        "return Array.from(document.querySelector('#sites').tBodies[0].rows)"
        ".map(r => Array.from(r.cells).map(c => c.textContent))"
    )
    parent = [r for r in rows if r[1] == str(work["parent_pid"])]
    assert parent[0][2:4] == ["wait_in_read", "main"], rows


def test_vzeroupper_before_blocking_leaves_no_avx_live_voluntary_save(record, cpu):
    if not cpu.has_avx:
        skip_hardware("no AVX")
    run, work = record_avxsites(record, "block-clean", "--rounds", "20000")
    c = pq.read_table(run.path / "counts.parquet").to_pandas()
    c["event"] = c["event"].astype(str)
    mine = c[(c["pid"] == work["parent_pid"]) & c["event"].isin(list(SIGN))]
    vol = mine[mine["reason"].astype(object) == "voluntary"]
    signed = vol["event"].map(SIGN) * vol["count"]
    wide = vol["xfeatures"].map(lambda x: int(x) & (AVX | AVX512) != 0)
    assert int(signed.sum()) >= 19_000  # it did block, every round
    # None in the loop (it has 20,000 voluntary saves).  Outside it, glibc's EVEX string
    # functions leave AVX-512 state live: after the loop, the first waitpid() goes through
    # the dynamic linker's lazy binding; before it, start-up does, and pin() or fork() may
    # block right after (seen on an Intel Xeon: one at 5 ms, one at the end).  At most one
    # each.
    assert int(signed[wide].sum()) <= 2, vol[wide]
    s = samples_with_frames(run.path)
    vol_s = s[(s["pid"] == work["parent_pid"]) & (s["reason"] == "voluntary")]
    assert not vol_s["user"].map(lambda f: "wait_in_read" in f).any(), vol_s


def test_preempted_in_an_avx_loop_is_involuntary_in_the_loop(record, cpu):
    if not cpu.has_avx:
        skip_hardware("no AVX")
    run, work = record_avxsites(record, "spin", "--ms", "3000", "--spinners", "2")
    s = samples_with_frames(run.path)
    spin = s[s["pid"].isin(work["spinners"]) & (s["user"].map(len) > 0)]
    inv = spin[spin["reason"] == "involuntary"]
    assert inv["samples"].sum() >= 30, s  # one switch in STACK_SKIP is a candidate
    assert inv["samples"].sum() >= 0.9 * spin["samples"].sum()
    in_loop = inv[inv["user"].map(lambda f: "avx_spin_loop" in f)]
    assert in_loop["samples"].sum() >= 0.95 * inv["samples"].sum(), inv


def test_glibc_memset_leaves_hi16_zmm_live(record, cpu):
    if not cpu.has_avx512:
        skip_hardware("no AVX-512: glibc's EVEX string functions do not run")
    run, work = record_avxsites(record, "memset", "--rounds", "3000")
    c = pq.read_table(run.path / "counts.parquet").to_pandas()
    mine = c[(c["pid"] == work["parent_pid"]) & (c["event"].astype(str) == "regs_deactivated")]
    vol = mine[mine["reason"].astype(object) == "voluntary"]
    hi16 = vol[vol["xfeatures"].map(lambda x: int(x) & HI16_ZMM != 0)]["count"].sum()
    assert hi16 >= 0.99 * vol["count"].sum() and vol["count"].sum() >= 2900, vol
    r = fptrace("report", str(run.path), "-f", "json")
    assert any(h.startswith("Hi16_ZMM live") for h in json.loads(r.stdout)["hints"])


def test_a_stock_program_s_avx_saves_are_in_its_own_library(record, tmp_path, cpu):
    """Two `openssl speed` (Debian's) on one CPU preempt each other in AES-GCM, which
    libcrypto runs with AVX (AVX-512 where the CPU has it)."""
    if not cpu.has_avx:
        skip_hardware("no AVX")
    script = tmp_path / "two.sh"
    script.write_text(
        "#!/bin/sh\n"
        "taskset -c 0 openssl speed -seconds 2 -evp aes-256-gcm >/dev/null 2>&1 &\n"
        "taskset -c 0 openssl speed -seconds 2 -evp aes-256-gcm >/dev/null 2>&1\nwait\n"
    )
    script.chmod(0o755)
    run = record("--stacks", "--", str(script), name="openssl")
    assert run.proc.returncode == 0, run.proc.stderr
    st = pq.read_table(run.path / "stacks.parquet").to_pandas()
    s = pq.read_table(run.path / "stack_samples.parquet").to_pandas()
    tasks = pq.read_table(run.path / "tasks.parquet").to_pandas()
    ossl = s[s["task"].isin(tasks.loc[tasks["comm"] == "openssl", "task"])]
    ossl = ossl[ossl["user_stack"].notna()]
    assert ossl["samples"].sum() >= 20, s
    leaf = st[(st["depth"] == 0) & ~st["kernel"]].set_index("stack")["module"]
    modules = ossl["user_stack"].astype(int).map(leaf)
    in_crypto = ossl[modules == "libcrypto.so.3"]["samples"].sum()
    assert in_crypto >= 0.5 * ossl["samples"].sum(), (modules.value_counts(), ossl)
    # the build-id of those frames is libcrypto's own (read by the test from the file)
    ids = set(st[st["module"] == "libcrypto.so.3"]["build_id"].dropna())
    out = subprocess.run(["readelf", "-n", "/usr/lib/x86_64-linux-gnu/libcrypto.so.3"],
                         capture_output=True, text=True).stdout  # fmt: skip
    assert ids and all(i in out for i in ids), (ids, out)
    r = fptrace("export", str(run.path), "-f", "folded")
    assert r.returncode == 0 and "libcrypto.so.3" in r.stdout


@pytest.fixture
def record(tmp_path):
    def run(*args: str, name: str = "rec"):
        from tests.integration.conftest import Run

        out = tmp_path / name
        return Run(fptrace("record", "-q", "-o", str(out), *args), out)

    return run
