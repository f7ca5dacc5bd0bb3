"""Text output read by a program or kept in a file: every number and name whole.

`fptrace report RUN -f text > file` cut the tables at 80 columns (pids as ``36…``, saves as
``20,0…``); `doctor` wrapped each row over three or four lines; `compare -f text` split
metric names.  Here every text command writes into a pipe with COLUMNS=60 (a narrow
terminal's setting, which must not cut what goes to a file), and every pid, count and name
that the JSON of the same recording holds is looked for whole in the text.
"""

from __future__ import annotations

import json
import os

from fptrace.analysis.compare import METRICS
from tests.integration.conftest import fptrace

NARROW = dict(os.environ, COLUMNS="60")


def whole(text: str, *values: object) -> list[str]:
    """The values not found whole in ``text`` (with separators, as the text prints them)."""
    missing = []
    for v in values:
        shown = f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)
        if shown not in text:
            missing.append(shown)
    return missing


def test_every_text_command_keeps_numbers_and_names_whole_in_a_pipe(tmp_path, pingpong):
    out = tmp_path / "r"
    rec = fptrace("record", "-o", str(out), "--", str(pingpong), "--rounds", "30000", env=NARROW)
    assert rec.returncode == 0, rec.stderr
    tasks = json.loads(fptrace("report", str(out), "-f", "json").stdout)["tasks"]
    top = [t for t in tasks[:10] if t["saves"]]
    assert top and max(t["saves"] for t in top) >= 30000
    values = [v for t in top for v in (str(t["pid"]), t["comm"], t["saves"], t["restores"])]
    texts = {"record": rec.stdout}
    texts["report"] = fptrace("report", str(out), "-f", "text", env=NARROW).stdout
    for name in ("record", "report"):
        assert whole(texts[name], *values) == [], (name, texts[name])
    compare = fptrace("compare", str(out), str(out), "-f", "text", env=NARROW)
    rows = json.loads(fptrace("compare", str(out), str(out), "-f", "json").stdout)[0]["metrics"]
    assert compare.returncode == 0 and rows, compare.stderr
    # In words with units (the JSON keeps the identifiers).
    assert whole(compare.stdout, *(METRICS[r["metric"]] for r in rows)) == [], compare.stdout
    doctor = fptrace("doctor", env=NARROW)
    assert whole(doctor.stdout, "x86_fpu:x86_fpu_regs_deactivated", "import bcc works") == []
    bench = fptrace("bench", "signal", "--quick", "--reps", "2", "-o", str(tmp_path / "b"),
                    env=NARROW)  # fmt: skip
    assert bench.returncode == 0, bench.stderr
    assert whole(bench.stdout, "signal", "sse", "results:") == [], bench.stdout
    for name, text in {**texts, "compare": compare.stdout, "doctor": doctor.stdout,
                       "bench": bench.stdout}.items():  # fmt: skip
        assert "…" not in text, (name, text)
