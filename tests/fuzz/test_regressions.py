"""Every mutant the fuzz lane ever caught breaking fptrace, replayed: each must now end in
success or a one-line error (tests/fuzz/test_fuzz.py keeps them in tests/fuzz/regressions/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fuzz import mutants, pipeline

HERE = Path(__file__).parent
CASES = sorted(p for p in (HERE / "regressions").glob("*") if (p / "case.json").exists())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_kept_mutant_no_longer_breaks_fptrace(case: Path, tmp_path: Path) -> None:
    info = json.loads((case / "case.json").read_text())
    rec = tmp_path / "recording"
    mutants.restore(case / "recording", rec)
    outcome = pipeline.run(info["stage"], rec, HERE / "seeds" / info["seed"], tmp_path / "out")
    assert outcome.ok, f"{info['mutations']}: {outcome.said}"
    assert outcome.code is not None and len(outcome.said.strip().splitlines()) <= 2
