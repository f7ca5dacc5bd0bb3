"""Keep mutants as regression fixtures: ``python -m tests.fuzz.keep SEED I [I …]``.

The fuzz lane keeps a failing mutant by itself; this regenerates given ones (mutants are a
function of FPTRACE_FUZZ_SEED and their number) after the bug is fixed, to keep them too.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from tests.fuzz import mutants, pipeline, test_fuzz


def main(seed: int, numbers: list[int]) -> None:
    test_fuzz.SEED = seed
    work = Path(tempfile.mkdtemp(prefix="fptrace-keep-"))
    try:
        for i in numbers:
            rng, source, stage = test_fuzz.case(i)
            what = mutants.mutate(rng, source, work / f"m{i}")
            outcome = pipeline.run(stage, work / f"m{i}", source, work / "out")
            test_fuzz.keep(i, work / f"m{i}", source, stage, what, outcome.said)
            print(f"s{seed}-m{i} [{stage}] {what}: {'ok' if outcome.ok else 'FAILS'}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]), [int(a) for a in sys.argv[2:]])
