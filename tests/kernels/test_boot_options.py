"""One kernel, two boot lines: `noxsave` turns the xstate layout into FXSAVE's 512 bytes,
and `fptrace compare` names the boot parameter and the layout as what changed."""

from __future__ import annotations

import json
import subprocess
import sys

from fptrace.analysis import summary
from tests import known_answer
from tests.kernels.conftest import LabRun

SSE = 1 << 1


def test_both_boots_recorded_with_the_workload_command(noxsave: LabRun) -> None:
    assert noxsave.proc.returncode == 0, noxsave.proc.stdout + noxsave.proc.stderr
    for append in ("", "noxsave"):
        rec = noxsave.recording("6.1", append)
        work = noxsave.workload("6.1", append)
        # XINUSE confirms the live state by default; under noxsave XGETBV faults: unknown.
        assert work["live"] is (None if append else True), work
        tasks = summary.per_task(rec.counts, rec.tasks).set_index("pid")
        child = tasks.loc[work["child_pid"]]  # the parent also ran `fptrace workload`'s Python
        known_answer.check(work, "child", int(child.saves), int(child.restores))
    nox = noxsave.recording("6.1", "noxsave")
    assert "noxsave" in nox.manifest.host.boot_cmdline.split()
    assert nox.manifest.lab.append == "noxsave"


def test_noxsave_buffers_are_fxsave_sized(noxsave: LabRun) -> None:
    default, nox = noxsave.recording("6.1"), noxsave.recording("6.1", "noxsave")
    assert nox.manifest.host.xstate["format"] == "fxsave"
    child = noxsave.workload("6.1", "noxsave")["child_pid"]
    assert int(nox.vso[nox.vso["pid"] == child].iloc[0]["size"]) == 512
    child = noxsave.workload("6.1")["child_pid"]
    assert int(default.vso[default.vso["pid"] == child].iloc[0]["size"]) == 2696


def test_compare_names_the_boot_parameter_and_the_layout(noxsave: LabRun) -> None:
    a = noxsave.combo("6.1")["recording"]
    b = noxsave.combo("6.1", "noxsave")["recording"]
    proc = subprocess.run(
        [sys.executable, "-m", "fptrace", "compare", a, b, "-f", "json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)[0]["changes"]
    got = {(c["category"], c["key"]): (c["a"], c["b"]) for c in changes}
    assert ("boot", "noxsave") in got
    assert got[("xstate", "format")] == ("standard", "fxsave")
    assert got[("xstate", "kernel_context_size")] == (2696, 512)
    assert not any(w.startswith("fptrace.") for _, w in got)  # lab plumbing is not a change
    assert not [c for c in changes if c["category"] == "kernel"]  # same kernel both times
