"""The fuzz lane: thousands of mutated real recordings through load → report (HTML, JSON,
text) → export (every format) → compare, in-process, with no internal error, no traceback
and no hang allowed.

Recordings travel between people, so every recording is untrusted input.  The seeds
(tests/fuzz/seeds) are real recordings of this project's workloads; tests/fuzz/mutants.py
changes them the way damage, truncation, editing or malice can; tests/fuzz/pipeline.py runs
each mutant through one of fptrace's commands, as a user would.

FPTRACE_FUZZ_MUTANTS (default 10,000) sets how many, FPTRACE_FUZZ_SEED (default 0) which:
the default run is the same every time (CI is reproducible); another seed explores further.
A failing mutant is kept under tests/fuzz/regressions/ with what was done to it and what
happened, and tests/fuzz/test_regressions.py replays every one kept there.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import queue
import random
import resource
import shutil
import tempfile
import time
from pathlib import Path

from tests.fuzz import mutants, pipeline

HERE = Path(__file__).parent
SEEDS = sorted(p for p in (HERE / "seeds").iterdir() if p.is_dir())
REGRESSIONS = HERE / "regressions"
MUTANTS = int(os.environ.get("FPTRACE_FUZZ_MUTANTS", "10000"))
SEED = int(os.environ.get("FPTRACE_FUZZ_SEED", "0"))
WORKERS = max(1, min(2, os.cpu_count() or 1))
MEMORY_LIMIT = 6 << 30  # address space per worker
STUCK_S = 120  # a worker silent this long is stuck (its alarm did not fire): a hang
WEIGHTS = {
    "report-json": 3,
    "report-text": 2,
    "report-html": 1,
    "export-csv": 2,
    "export-jsonl": 2,
    "export-chrome": 2,
    "export-perfetto": 2,
    "compare": 1,
    "compare-force": 1,
}


def case(i: int) -> tuple[random.Random, Path, str]:
    """Mutant ``i`` of this run: its generator, its seed recording and its stage."""
    rng = random.Random(SEED * 1_000_003 + i)
    seed = rng.choice(SEEDS)
    stage = rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
    return rng, seed, stage


def keep(i: int, mutant: Path, seed: Path, stage: str, what: str, said: str) -> None:
    dest = REGRESSIONS / f"s{SEED}-m{i}"
    shutil.rmtree(dest, ignore_errors=True)
    mutants.save(mutant, dest / "recording")
    info = {"seed": seed.name, "stage": stage, "mutations": what, "said": said[-2000:]}
    (dest / "case.json").write_text(json.dumps(info, indent=2) + "\n")


def worker(cases: list[int], results: mp.Queue) -> None:
    # A mutant that makes fptrace allocate without bound fails as a MemoryError here
    # rather than take the machine down.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    work = Path(tempfile.mkdtemp(prefix="fptrace-fuzz-"))
    try:
        for i in cases:
            rng, seed, stage = case(i)
            mutant = work / f"m{i}"
            try:
                what = mutants.mutate(rng, seed, mutant)
            except Exception as exc:  # the harness's own bug: reported as such
                results.put(("done", i, False, stage, "(mutation failed)", repr(exc)))
                continue
            results.put(("start", i, what))
            outcome = pipeline.run(stage, mutant, seed, work / "out")
            if not outcome.ok:
                keep(i, mutant, seed, stage, what, outcome.said)
            results.put(("done", i, outcome.ok, stage, what, outcome.said))
            shutil.rmtree(mutant, ignore_errors=True)
            for leftover in work.glob("out*"):
                leftover.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_no_mutant_breaks_a_reader() -> None:
    assert len(SEEDS) >= 2, SEEDS
    ctx = mp.get_context("fork")
    results: mp.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=worker, args=(list(range(w, MUTANTS, WORKERS)), results))
        for w in range(WORKERS)
    ]
    t0 = time.monotonic()
    for p in procs:
        p.start()
    done, failures, stages = 0, [], dict.fromkeys(WEIGHTS, 0)
    in_flight: dict[int, str] = {}
    try:
        while done < MUTANTS:
            try:
                msg = results.get(timeout=STUCK_S)
            except queue.Empty:
                gone = [p.exitcode for p in procs if not p.is_alive()]
                assert len(gone) < len(procs), f"the workers died ({gone}) after {done}"
                stuck = ", ".join(f"m{i}: {w}" for i, w in in_flight.items())
                raise AssertionError(f"no answer for {STUCK_S} s (a hang): {stuck}") from None
            if msg[0] == "start":
                in_flight[msg[1]] = msg[2]
                continue
            _, i, ok, stage, what, said = msg
            in_flight.pop(i, None)
            done += 1
            stages[stage] += 1
            if not ok:
                failures.append(f"m{i} [{stage}] {what}: {said.strip()[-300:]}")
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
    took = time.monotonic() - t0
    print(f"\n{done:,} mutants in {took:.0f} s ({done / took:.0f}/s), {stages}")
    assert not failures, f"{len(failures)} of {done} mutants broke fptrace:\n" + "\n".join(
        failures[:20]
    )
