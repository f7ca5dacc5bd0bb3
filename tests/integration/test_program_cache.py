"""The compiled-program cache on the real kernel: a cached run loads, attaches and counts like
a compiled one, without BCC, its compiler or pandas in the process."""

from __future__ import annotations

import os
import re
from pathlib import Path

from fptrace.analysis import summary
from tests import known_answer

N = 3000


def imported(stderr: str) -> set[str]:
    """Packages PYTHONPROFILEIMPORTTIME saw imported (a refused attempt shows as the bare
    name alone: fptrace answers pyarrow's pandas probe that way), by their top-level name."""
    names = re.findall(r"^import time:\s+\d+ \|\s+\d+ \|\s+(\S+)", stderr, re.M)
    return {n.split(".")[0] for n in names if "." in n or n == "bcc"}


def test_a_cached_run_counts_the_same_without_the_compiler(record, pingpong, tmp_path: Path):
    env = dict(os.environ, FPTRACE_CACHE=str(tmp_path / "cache"), PYTHONPROFILEIMPORTTIME="1")
    env.pop("FPTRACE_CACHE_SPILL", None)
    runs = []
    # Run 1 compiles; if it calibrated the TIF bit, run 2 compiles the calibrated build; the
    # next one must then come from the cache.
    for i in range(3):
        run = record(
            "--", str(pingpong), "--mode", "avx", "--rounds", str(N), name=f"r{i}", env=env
        )
        assert run.proc.returncode == 0, run.proc.stderr[-3000:]
        runs.append(run)
        if run.rec.manifest.probes.program["cached"]:
            break
    programs = [r.rec.manifest.probes.program for r in runs]
    assert not programs[0]["cached"] and programs[-1]["cached"], programs
    assert "bcc" in imported(runs[0].proc.stderr)
    cached = runs[-1]
    assert not {"bcc", "pandas"} & imported(cached.proc.stderr)
    assert (tmp_path / "cache" / "bpf" / f"{programs[-1]['key']}.json").is_file()
    btf = list((tmp_path / "cache" / "btf").iterdir())
    assert len(btf) == 1  # one kernel build, one file of BTF facts
    for run in (runs[0], cached):
        work = run.workload_json()
        t = summary.per_task(run.rec.counts, run.rec.tasks).set_index("pid")
        for who, pid in known_answer.sides(work):
            known_answer.check(work, who, int(t.loc[pid, "saves"]), int(t.loc[pid, "restores"]))
        kinds = {p.kind for p in run.rec.manifest.probes.attached}
        assert "tp_btf" in kinds, kinds


def test_a_cached_program_the_kernel_refuses_is_compiled_afresh(record, pingpong, tmp_path):
    import base64
    import json

    env = dict(os.environ, FPTRACE_CACHE=str(tmp_path / "cache"))
    env.pop("FPTRACE_CACHE_SPILL", None)
    first = record("--", "true", name="first", env=env)
    assert first.proc.returncode == 0, first.proc.stderr[-3000:]
    key = first.rec.manifest.probes.program["key"]
    entry = tmp_path / "cache" / "bpf" / f"{key}.json"
    data = json.loads(entry.read_text())
    exit_only = base64.b64encode(bytes([0x95]) + bytes(7)).decode()  # "exit", R0 never set
    for prog in data["progs"].values():
        prog["insns"], prog["relocs"] = exit_only, []
    entry.write_text(json.dumps(data))
    run = record("--", str(pingpong), "--mode", "avx", "--rounds", str(N), name="again", env=env)
    assert run.proc.returncode == 0, run.proc.stderr[-3000:]
    assert run.rec.manifest.probes.program == {"cached": False, "key": key}
    work = run.workload_json()
    t = summary.per_task(run.rec.counts, run.rec.tasks).set_index("pid")
    child = t.loc[work["child_pid"]]
    known_answer.check(work, "child", int(child.saves), int(child.restores))
    assert json.loads(entry.read_text())["progs"] != data["progs"]  # the entry was replaced
