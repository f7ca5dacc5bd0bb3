"""Snapshot and delta logic under every interleaving of a kernel eviction and a user read.

A model of fptrace.bpf.c's miss path (one CPU's cache slot, the shared counts map, the seq
number) runs against a model of BpfSession.snapshot's reads, in all 210 orders of their
steps; collectors/counting.combine must never report more than has happened, and Deltas
must add up to the final exact count.  The same checker, given the old orders (slot merged
before it is zeroed, cache read before the map), finds the double count the hackbench runs
showed — so it can fail.  (The model writes a key in one step: the ordering alone keeps
it exact.  Leaving out the cache of a CPU that evicted meanwhile guards the real slot copy,
which can catch a key half rewritten; test_combine_… checks that part directly.)
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from fptrace.collectors import counting
from fptrace.collectors.counting import RETIRED_MAX_AGE, RETIRED_SHORT_AGE, Deltas, Gone


def combine(counts: dict, cached: list, unstable: set) -> tuple[dict, int]:
    """counting.combine on tables, in and out as {key: (count, first, last)}."""
    got, deferred = counting.combine(counting.table_of(counts), cached, unstable)
    return counting.as_dict(got), deferred


def take(d: Deltas, counts: dict, removed: dict | None = None) -> list[tuple]:
    """Deltas.take on tables, out as [(key, delta, (count, first, last))]."""
    out, deltas = d.take(counting.table_of(counts), Gone.of(removed) if removed else None)
    rows = counting.as_dict(out)
    assert len(rows) == len(out)  # one row per key
    return [(k, int(n), v) for (k, v), n in zip(rows.items(), deltas, strict=True)]


def base(d: Deltas, key: tuple) -> int | None:
    return d.base.get(counting.ids_of([key])[0])


def retired(d: Deltas, key: tuple) -> bool:
    return counting.ids_of([key])[0] in d.retired


A = (1, 1, 0xA, 0xE6, 0, 0, 0, 0)  # the key in the slot before the miss
B = (2, 2, 0xB, 0xA2, 0, 0, 0, 0)  # the key that evicts it
C = (3, 3, 0xC, 0xA2, 0, 0, 0, 0)
CPU = 0


@dataclass
class Kernel:
    """One CPU: a cache slot holding A (5 counts), the counts map, the eviction sequence."""

    key: tuple = A
    count: int = 5
    counts: dict = field(default_factory=lambda: {A: (7, 1, 1)})  # A was evicted once before
    seq: int = 0
    happened: dict = field(default_factory=lambda: {A: 12, B: 0})
    saved: int = 0  # the eviction's copy of the slot's count

    def steps(self, old_order: bool) -> list:
        """The miss path for B, then one hit on B, as separate memory operations."""

        def bump_seq() -> None:
            self.seq += 1
            self.happened[B] += 1  # B's first event is what causes the miss

        def copy_and_zero() -> None:
            self.saved, self.count = self.count, 0

        def merge() -> None:
            c, f, last = self.counts.get(A, (0, 1, 1))
            self.counts[A] = (c + self.saved, f, last)

        def merge_from_slot() -> None:  # the old code: merge the live slot, zero nothing
            c, f, last = self.counts.get(A, (0, 1, 1))
            self.counts[A] = (c + self.count, f, last)

        def write_key() -> None:
            self.key = B
            if old_order:  # the old code wrote the count with the key
                self.count = 1

        def write_count() -> None:
            self.count = 1

        def hit() -> None:
            self.happened[B] += 1
            self.count += 1

        if old_order:
            return [bump_seq, merge_from_slot, write_key, hit]
        return [bump_seq, copy_and_zero, merge, write_key, write_count, hit]


def reader_steps(k: Kernel, view: dict, old_order: bool) -> list:
    def seq_before() -> None:
        view["before"] = k.seq

    def read_counts() -> None:
        view["counts"] = dict(k.counts)

    def read_cache() -> None:
        view["cached"] = [(CPU, k.key, (k.count, 1, 1))] if k.count else []

    def seq_after() -> None:
        view["after"] = k.seq

    if old_order:
        return [seq_before, read_cache, read_counts, seq_after]
    return [seq_before, read_counts, read_cache, seq_after]


def interleavings(n_writer: int, n_reader: int):
    """Every order of two step sequences, as the positions the reader's steps take."""
    return itertools.combinations(range(n_writer + n_reader), n_reader)


def run(positions, old_order: bool) -> tuple[dict, dict, Kernel]:
    k = Kernel()
    view: dict = {}
    writer, reader = k.steps(old_order), reader_steps(k, view, old_order)
    w = r = 0
    for i in range(len(writer) + len(reader)):
        if i in positions:
            reader[r]()
            r += 1
        else:
            writer[w]()
            w += 1
    unstable = {CPU} if view["before"] != view["after"] else set()
    if old_order:
        unstable = set()  # the old code retried; after its last retry it used what it read
    got, _ = combine(view["counts"], view["cached"], unstable)
    return got, dict(k.happened), k


def over_counts(old_order: bool) -> list:
    n_writer = len(Kernel().steps(old_order))
    bad = []
    for positions in interleavings(n_writer, 4):
        got, happened, _ = run(positions, old_order)
        for key, (count, _, _) in got.items():
            if count > happened.get(key, 0):
                bad.append((positions, key, count, happened.get(key, 0)))
    return bad


def test_no_interleaving_reports_more_than_happened():
    assert len(list(interleavings(6, 4))) == 210
    assert over_counts(old_order=False) == []


def test_the_checker_finds_the_old_double_count():
    bad = over_counts(old_order=True)
    assert bad and all(key == A for _, key, _, _ in bad)  # A both in its slot and in counts


def test_nothing_is_lost_once_the_writer_is_done():
    """Whatever a snapshot missed, the next one (no eviction running) sees all of it."""
    for positions in interleavings(6, 4):
        _, happened, k = run(positions, old_order=False)
        final, deferred = combine(dict(k.counts), [(CPU, k.key, (k.count, 1, 1))], set())
        assert deferred == 0
        assert {key: v[0] for key, v in final.items()} == happened


def test_deltas_make_up_for_an_under_read_and_never_count_twice():
    d = Deltas()
    snapshots = [
        {A: (5, 1, 1)},
        {A: (3, 1, 1), B: (2, 1, 1)},  # A under-read: 2 of its counts were moving
        {A: (9, 1, 1), B: (2, 1, 1)},
        {A: (9, 1, 1), B: (4, 1, 1)},
    ]
    totals: dict = {}
    per_interval = []
    for snap in snapshots:
        rows = take(d, snap)
        per_interval.append({key: delta for key, delta, _ in rows})
        for key, delta, _ in rows:
            assert delta > 0
            totals[key] = totals.get(key, 0) + delta
    assert totals == {A: 9, B: 4}  # the last (exact) snapshot, nothing twice
    assert per_interval == [{A: 5}, {B: 2}, {A: 4}, {B: 2}]


def test_combine_leaves_out_only_the_cpus_that_evicted():
    counts = {A: (7, 10, 20)}
    cached = [(0, A, (5, 5, 30)), (1, A, (2, 8, 9)), (1, B, (1, 3, 3))]
    got, deferred = combine(counts, cached, unstable={1})
    assert got == {A: (12, 5, 30)} and deferred == 3
    got, deferred = combine(counts, cached, unstable=set())
    assert got == {A: (14, 5, 30), B: (1, 3, 3)} and deferred == 0


def gone_step(kernel: dict, got: dict, name: str) -> None:
    """One memory operation of an eviction (zero, merge) or of take_counts (pop, read)."""
    if name == "zero":
        kernel["saved"], kernel["slot"] = kernel["slot"], 0
    elif name == "merge":
        kernel["map"] = kernel.get("map", 0) + kernel["saved"]
    elif name == "pop":
        got["popped"] = kernel.pop("map", 0)
    elif name == "read":
        got["left"] = kernel["slot"]


def test_a_gone_task_s_key_is_taken_exactly_whatever_its_slot_does_meanwhile():
    """Removing an exited task's key (BpfSession.take_counts: pop the map element, then read
    the cache) while its cache slot is evicted (zero, then merge into the map) by another
    key: in every order, the deltas add up to exactly what happened, later snapshots and
    removals included.  Reading the cache before popping would lose or double the slot."""
    for pop_first in (True, False):
        outcomes = set()
        for order in set(itertools.permutations(["zero", "merge", "pop", "read"])):
            if order.index("zero") > order.index("merge"):
                continue
            first, second = ("pop", "read") if pop_first else ("read", "pop")
            if order.index(first) > order.index(second):
                continue
            kernel = {"map": 7, "slot": 5, "saved": 0}  # A: 12 events in all, 10 counted so far
            deltas = Deltas()
            take(deltas, {A: (10, 1, 1)})
            got = {}

            for name in order:
                gone_step(kernel, got, name)
            total = take(deltas, {}, {A: (got["popped"], got["left"])})
            counted = 10 + sum(d for _, d, _ in total)
            for _ in range(3):  # later drains: whatever is back in the map is taken again
                if "map" in kernel:
                    grew = take(deltas, {}, {A: (kernel.pop("map"), kernel["slot"])})
                else:
                    seen = {A: (kernel["slot"], 1, 1)} if kernel["slot"] else {}
                    grew = take(deltas, seen)
                counted += sum(d for _, d, _ in grew)
            outcomes.add(counted)
        if pop_first:
            assert outcomes == {12}, outcomes
        else:
            assert outcomes != {12}, outcomes  # the checker can fail


def test_removed_keys_are_forgotten_once_nothing_of_them_can_come_back():
    deltas = Deltas()
    take(deltas, {A: (5, 1, 1), B: (3, 1, 1), C: (4, 1, 1)})
    assert take(deltas, {}, {A: (3, 2), B: (3, 0)}) == []  # A: 2 left in a slot; B: none
    for _ in range(RETIRED_SHORT_AGE):
        assert take(deltas, {A: (2, 1, 1)}) == []  # A's slot part, already counted
    assert not retired(deltas, B) and base(deltas, B) is None  # nothing of it in the kernel
    assert retired(deltas, A) and base(deltas, A) == 2 and base(deltas, C) == 4
    assert take(deltas, {}, {A: (2, 0)}) == []  # the slot was evicted: taken from the map
    for _ in range(RETIRED_SHORT_AGE):
        take(deltas, {})
    assert not retired(deltas, A) and base(deltas, A) is None
    # A slot part that keeps being seen keeps its key; one never seen again is forgotten.
    take(deltas, {}, {C: (1, 3)})
    for _ in range(3 * RETIRED_MAX_AGE):
        take(deltas, {C: (3, 1, 1)})
    assert retired(deltas, C)
    for _ in range(RETIRED_MAX_AGE + 1):
        take(deltas, {})
    assert not retired(deltas, C) and not deltas._buckets


def test_key_ids_tell_keys_apart_by_every_field_and_give_them_back():
    """A key's id is its eight fields packed at 64 bits each: keys that differ in any one
    field (high bits and trailing zeros included) get different ids, and the ids decode to
    the same fields."""
    base = (1234, 1200, 0xFFFF_8880_1234_5678, 1 << 63 | 0xE7, 3, 0x4000_0000, 0, 2)
    keys = [base]
    for i in range(len(base)):
        for other in (0, 1, (1 << 64) - 1):
            if other != base[i]:
                keys.append((*base[:i], other, *base[i + 1 :]))
    ids = counting.ids_of(keys)
    assert len(set(ids.tolist())) == len(keys)
    back = counting.key_fields(ids)
    assert [tuple(int(x) for x in row) for row in back.tolist()] == keys


def test_a_removed_key_that_comes_back_is_its_first_owner_s_until_forgotten():
    """What a cache slot puts back after a key's task was removed is that task's (whoever
    has the pid by then): the owner given at the first removal sticks."""
    d = Deltas()
    take(d, {A: (5, 1, 1)})
    take(d, {}, {A: (3, 2)})  # removed with 2 still in a slot
    ids = counting.ids_of([A])
    d.claim(ids, np.array([7]))
    assert d.owners(ids).tolist() == [7]
    # The slot comes back with one more (it was being evicted while the cache was read).
    assert take(d, {}, {A: (3, 0)}) == [(A, 1, (3, 0, 0))]
    d.claim(ids, np.array([9]))  # the pid's next task: not the key's owner
    assert d.owners(ids).tolist() == [7]
    for _ in range(RETIRED_SHORT_AGE):
        take(d, {})
    assert d.owners(ids).tolist() == [-1] and base(d, A) is None


def test_a_removed_key_the_snapshot_had_no_row_for_is_reported_from_its_id():
    d = Deltas()
    assert take(d, {}, {B: (4, 1)}) == [(B, 5, (5, 0, 0))]  # 1 still in a slot
    # The slot's 1 comes back and is taken: counted already, nothing new.
    assert take(d, {A: (2, 5, 6)}, {B: (1, 0)}) == [(A, 2, (2, 5, 6))]


def test_a_removed_key_in_a_left_out_cpu_s_slot_stays_its_owner_s():
    """A busy CPU's cache can be left out drain after drain (it evicted while the snapshot
    read it).  A removed key its slot still holds must outlive that: when the slot is
    finally evicted, what comes back is not counted again, and what follows is its task's.
    (Forgotten after RETIRED_MAX_AGE drains, it came back as a stranger: counted a second
    time, for a task with no row.)"""
    d = Deltas()
    take(d, {A: (5, 1, 1)})
    # Removed with 3 still in a slot: counted now (8), the 3 kept as the key's baseline.
    assert take(d, {}, {A: (5, 3)}) == [(A, 3, (8, 0, 0))]
    ids = counting.ids_of([A])
    d.claim(ids, np.array([7]))
    for _ in range(3 * RETIRED_MAX_AGE):  # the slot's CPU left out, its key still seen
        out, _ = d.take(counting.empty(), None, held=ids)
        assert len(out) == 0
    assert retired(d, A) and d.owners(ids).tolist() == [7]
    # The slot is evicted into the map: those 3 were counted, not again; still task 7's.
    assert take(d, {A: (3, 1, 1)}) == []
    assert take(d, {A: (4, 1, 1)}) == [(A, 1, (4, 1, 1))]  # one more (a reused pid's)
    assert d.owners(ids).tolist() == [7] and d.take_released() == []


def test_a_task_is_released_when_its_last_removed_key_is_forgotten():
    """The recorder keeps an ended task's row while counts can come back to it
    (Deltas.owned), and lets it go when they cannot (take_released): bounded by the keys
    cache slots still hold, however many tasks come and go."""
    d = Deltas()
    take(d, {A: (5, 1, 1), B: (2, 1, 1)})
    take(d, {}, {A: (5, 1), B: (2, 0)})  # A: 1 left in a slot; B: all taken
    d.claim(counting.ids_of([A, B]), np.array([7, 7]))
    assert d.owned == {7: 2}
    for _ in range(RETIRED_SHORT_AGE):
        take(d, {})
    assert d.owned == {7: 1} and d.take_released() == []  # B forgotten, A still held
    for _ in range(RETIRED_MAX_AGE - RETIRED_SHORT_AGE):
        take(d, {})
    assert d.owned == {} and d.take_released() == [7]
    assert d.take_released() == []  # once
