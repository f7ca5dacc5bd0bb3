"""Exact counts from cumulative kernel counters that are read while the kernel writes them.

In the kernel (fptrace.bpf.c) a count lives in one of two places: a per-CPU cache slot, or
the shared ``counts`` map once its slot is evicted.  User space cannot read both at one
instant, so the reading is ordered to err one way only:

- ``counts`` is read first, the cache second, and an eviction zeroes the slot before it adds
  to ``counts`` (and writes a new key's count after the key): a count moving between the two
  reads is missed by this snapshot, never seen twice;
- a CPU whose eviction sequence number moved during the read is left out of the cache part
  (its slots may be half rewritten), which again only misses counts.

A snapshot therefore never exceeds the true cumulative count, and the counts missed show
up in a later one.  :class:`Deltas` turns snapshots into per-interval increments without
ever lowering its baseline, so a snapshot that missed something is made up for later and
nothing is counted twice: the sum of all deltas equals the last snapshot, and the last
snapshot (taken with the probes detached) is exact.

Exited tasks' keys are removed from the shared map once final (collectors/recorder.py),
with their exact cumulative counts (``BpfSession.take_counts``), but a per-CPU cache slot
may still hold part of one and later put it back into ``counts`` (eviction).
``Deltas.take(gone=…)`` moves such a key's baseline to the part the kernel still holds, and
keeps it while that part can still come back: what comes back is not counted again.

Shapes: under process churn a drain handles 100k+ keys, so a snapshot is a
:class:`CountTable` of numpy columns, not a Python object per key (a drain that cost ~20 µs
per key fell behind at ~5,000 processes/s on two CPUs, held more at the next drain, and
spiralled).  A key is known by its *id*: its eight fields packed at 64 bits each into one
``bytes`` (:data:`KEY_DTYPE`), which a dict or set hashes at C speed.  numpy only, no
pandas: pandas takes ~0.3 s to import on a busy machine, and the first drain would wait.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import numpy as np


class CountKey(NamedTuple):
    """One key of the kernel's counts, as both backends give it (``struct count_key`` in
    fptrace.bpf.c): the task, the buffer, what it held and which event."""

    pid: int
    tgid: int
    vso: int  # the fpstate's kernel address: never written out (columns.VsoNamer)
    xfeatures: int  # XSTATE_BV in the buffer; aux events: their argument
    event: int  # FPU_EVENT_IDS / AUX_EVENT_IDS (probes/plan.py)
    load_bits: int  # TIF candidate bits of current, or LOAD_NOT_READ
    arg: int  # aux events: e.g. the arch_prctl option; else 0
    reason: int = 0  # REASONS (probes/plan.py): voluntary/involuntary switch-path saves


class CountVal(NamedTuple):
    """Its value: events, and when the first and last were seen (kernel monotonic ns; the
    last up to one tick early, see fptrace.bpf.c)."""

    events: int  # how many (`count` in the counts table)
    first_ns: int
    last_ns: int


KEY_FIELDS = CountKey._fields
# The key's identity: every field widened to 64 bits, whatever the kernel struct's layout.
KEY_DTYPE = np.dtype([(n, "<u8") for n in KEY_FIELDS])

# How long a removed key's baseline is kept after the key was last seen, in snapshots: long
# while a cache slot is known to hold part of it (it comes back when the slot is evicted),
# short otherwise (only a count that was moving from a slot to the map as the key was
# removed can still come back, and that is over in microseconds).
RETIRED_MAX_AGE = 10
RETIRED_SHORT_AGE = 2


def key_ids(keys: np.ndarray) -> np.ndarray:
    """Ids (an object array of ``bytes``) of the keys in a structured array that has the
    :data:`KEY_FIELDS` (any integer types, any layout)."""
    packed = keys if keys.dtype == KEY_DTYPE else np.empty(len(keys), KEY_DTYPE)
    if packed is not keys:
        for name in KEY_FIELDS:
            packed[name] = keys[name]
    return objects(np.ascontiguousarray(packed).view(f"V{KEY_DTYPE.itemsize}").tolist())


def objects(items: list[bytes]) -> np.ndarray:
    """A 1-d object array of ``items`` (np.array could make bytes into a 2-d array)."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def ids_of(keys: Iterable[CountKey]) -> np.ndarray:
    """Ids of key tuples."""
    arr = np.array(list(keys), dtype=np.uint64).reshape(-1, len(KEY_FIELDS))
    return key_ids(arr.view(KEY_DTYPE).reshape(-1))


def key_fields(ids: Iterable[bytes]) -> np.ndarray:
    """The keys (a :data:`KEY_DTYPE` array) that ``ids`` stand for."""
    raw = b"".join(ids)
    return np.frombuffer(raw, dtype=KEY_DTYPE) if raw else np.empty(0, KEY_DTYPE)


def member(ids: np.ndarray, within: Collection[bytes]) -> np.ndarray:
    """For each id, whether it is in ``within`` (a set or dict: hashed, not sorted)."""
    if not len(within):
        return np.zeros(len(ids), dtype=bool)
    return np.fromiter((i in within for i in ids.tolist()), dtype=bool, count=len(ids))


@dataclass
class CountTable:
    """Cumulative counts, one row per key: ids, the key fields, and the value's columns."""

    ids: np.ndarray  # object: bytes (key_ids)
    keys: np.ndarray  # KEY_DTYPE
    count: np.ndarray  # int64
    first_ns: np.ndarray  # uint64, kernel monotonic (0: not known)
    last_ns: np.ndarray  # uint64

    def __len__(self) -> int:
        return len(self.ids)

    @cached_property
    def pos(self) -> dict[bytes, int]:
        """id -> row."""
        return {i: n for n, i in enumerate(self.ids.tolist())}

    def rows(self, which: np.ndarray) -> CountTable:
        """The rows a boolean mask or an index array selects."""
        return CountTable(
            self.ids[which],
            self.keys[which],
            self.count[which],
            self.first_ns[which],
            self.last_ns[which],
        )

    @staticmethod
    def concat(*parts: CountTable) -> CountTable:
        return CountTable(
            np.concatenate([p.ids for p in parts]),
            np.concatenate([p.keys for p in parts]),
            np.concatenate([p.count for p in parts]),
            np.concatenate([p.first_ns for p in parts]),
            np.concatenate([p.last_ns for p in parts]),
        )


def table(keys: np.ndarray, values: np.ndarray) -> CountTable:
    """A count table from structured arrays of keys (:data:`KEY_FIELDS`) and values
    (``count``, ``first_ns``, ``last_ns``), one row per key."""
    packed = np.empty(len(keys), KEY_DTYPE)
    for name in KEY_FIELDS:
        packed[name] = keys[name]
    return CountTable(
        key_ids(packed),
        packed,
        values["count"].astype(np.int64),
        values["first_ns"].astype(np.uint64),
        values["last_ns"].astype(np.uint64),
    )


def empty() -> CountTable:
    """A count table with no rows."""
    values = np.zeros(0, [("count", "<i8"), ("first_ns", "<u8"), ("last_ns", "<u8")])
    return table(np.zeros(0, KEY_DTYPE), values)


def table_of(
    counts: Mapping[CountKey, CountVal] | Iterable[tuple[CountKey, CountVal]],
) -> CountTable:
    """A count table from key tuples (the ftrace backend, a cache read, tests); a key given
    twice is merged (counts added, first the earliest, last the latest)."""
    merged: dict[CountKey, CountVal] = {}
    for key, val in counts.items() if isinstance(counts, Mapping) else counts:
        old = merged.get(key)
        merged[key] = val if old is None else _merge(old, val)
    keys = np.array(list(merged), dtype=np.uint64).reshape(-1, len(KEY_FIELDS))
    vals = np.array(list(merged.values()), dtype=np.uint64).reshape(-1, 3)
    k = keys.view(KEY_DTYPE).reshape(-1)
    return CountTable(
        key_ids(k), k.copy(), vals[:, 0].astype(np.int64), vals[:, 1].copy(), vals[:, 2].copy()
    )


def _blank(n: int) -> CountTable:
    """``n`` rows of zeros (to be filled in)."""
    z = np.zeros(n, dtype=np.uint64)
    return CountTable(
        np.empty(n, dtype=object), np.zeros(n, KEY_DTYPE), z.astype(np.int64), z, z.copy()
    )


def _merge(a: CountVal, b: CountVal) -> CountVal:
    return CountVal(a[0] + b[0], min(a[1], b[1]), max(a[2], b[2]))


def as_dict(t: CountTable) -> dict[CountKey, CountVal]:
    """A count table as {key tuple: (count, first_ns, last_ns)} (for tests and checks)."""
    keys = map(CountKey._make, zip(*(t.keys[n].tolist() for n in KEY_FIELDS), strict=True))
    vals = map(
        CountVal._make, zip(t.count.tolist(), t.first_ns.tolist(), t.last_ns.tolist(), strict=True)
    )
    return dict(zip(keys, vals, strict=True))


def combine(
    counts: CountTable,
    cached: Iterable[tuple[int, CountKey, CountVal]],
    unstable: set[int],
) -> tuple[CountTable, int]:
    """``counts`` (read first) plus the cache slots ``(cpu, key, value)`` (read second) of
    every CPU not in ``unstable``; and how many counts were left for a later snapshot."""
    use = []
    deferred = 0
    for cpu, key, val in cached:
        if cpu in unstable:
            deferred += val[0]
        else:
            use.append((key, val))
    if not use:
        return counts, deferred
    slots = table_of(use)  # a few dozen rows at most
    out = CountTable(
        counts.ids, counts.keys, counts.count.copy(), counts.first_ns.copy(), counts.last_ns.copy()
    )
    pos = counts.pos
    new = np.ones(len(slots), dtype=bool)
    for n, i in enumerate(slots.ids.tolist()):
        at = pos.get(i)
        if at is None:
            continue
        new[n] = False
        out.count[at] += slots.count[n]
        out.first_ns[at] = min(out.first_ns[at], slots.first_ns[n])
        out.last_ns[at] = max(out.last_ns[at], slots.last_ns[n])
    return CountTable.concat(out, slots.rows(new)), deferred


@dataclass
class Gone:
    """Keys just removed from the shared map: per id, the count the removal took
    (``popped``) and the count still in cache slots right after (``left``)."""

    ids: np.ndarray  # object: bytes
    popped: np.ndarray  # int64
    left: np.ndarray  # int64

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def of(removed: Mapping[CountKey, tuple[int, int]]) -> Gone:
        """From {key tuple: (popped, left)} (tests)."""
        pairs = list(removed.values())
        return Gone(
            ids_of(removed),
            np.array([p for p, _ in pairs], dtype=np.int64),
            np.array([n for _, n in pairs], dtype=np.int64),
        )


class Deltas:
    """Per-interval increments of cumulative counts that a snapshot may under-read."""

    def __init__(self) -> None:
        self.base: dict[bytes, int] = {}  # id -> the highest count counted (less removals)
        # Removed keys -> the snapshot after which they are forgotten; the buckets (by that
        # snapshot) let a drain expire them without walking every removed key.
        self.retired: dict[bytes, int] = {}
        self._buckets: dict[int, set[bytes]] = {}
        # Removed keys -> whose they were (the recorder's task id): what comes back of a
        # key after its task was removed is that task's, whoever has the pid by then.
        self.owner: dict[bytes, int] = {}
        self.owned: dict[int, int] = {}  # task id -> how many removed keys it owns
        self.released: list[int] = []  # task ids whose last owned key was forgotten
        self._now = 0

    def take(
        self, counts: CountTable, gone: Gone | None = None, held: np.ndarray | None = None
    ) -> tuple[CountTable, np.ndarray]:
        """The rows of ``counts`` that grew (with ``count`` their cumulative count), and
        their increments since the highest count seen before.

        ``gone``: keys just removed from the shared map.  What the kernel still holds of
        such a key — in slots, or zeroed in a slot and not yet merged — comes back later,
        into a map element that is removed again; the baseline is moved so that none of it
        is counted twice and all of it is counted once.  A removed key is forgotten
        ``RETIRED_MAX_AGE`` snapshots after it was last seen in a slot, or
        ``RETIRED_SHORT_AGE`` after its removal if no slot held any of it.  A removed key
        ``counts`` has no row for is reported with its fields from its id and times 0.

        ``held``: ids of the keys in the slots of CPUs whose counts the snapshot left out
        (they evicted while it read).  Their counts are not trusted, their keys are: a
        removed key among them is still in a slot, and is kept.  (A busy CPU can be left
        out drain after drain; a removed key forgotten meanwhile came back as a stranger:
        counted again, and for a task with no row.)
        """
        self._now += 1
        base, retired = self.base, self.retired
        gone_pos = {i: n for n, i in enumerate(gone.ids.tolist())} if gone is not None else {}
        live = counts.rows(~member(counts.ids, gone_pos)) if gone_pos else counts
        ids = live.ids.tolist()
        seen = np.fromiter((base.get(i, 0) for i in ids), dtype=np.int64, count=len(ids))
        grew = live.count > seen
        base.update(zip(live.ids[grew].tolist(), live.count[grew].tolist(), strict=True))
        if retired:
            for i in ids if held is None else [*ids, *held.tolist()]:
                if i in retired:
                    self._stamp(i, RETIRED_MAX_AGE)  # still in the kernel: keep it
        out = [live.rows(grew)]
        deltas = [(live.count - seen)[grew]]
        if gone is not None and len(gone):
            gids = gone.ids.tolist()
            val = gone.popped + gone.left
            gseen = np.fromiter((base.get(i, 0) for i in gids), dtype=np.int64, count=len(gids))
            ggrew = val > gseen
            pos = counts.pos
            at = np.fromiter((pos.get(i, -1) for i in gids), dtype=np.int64, count=len(gids))
            rows = counts.rows(np.maximum(at, 0)) if len(counts) else _blank(len(gids))
            if (at < 0).any():  # keys this snapshot has no row for: fields from their ids
                no = at < 0
                rows.keys[no] = key_fields(gone.ids[no])
                rows.first_ns[no] = 0
                rows.last_ns[no] = 0
            rows.ids = gone.ids
            rows.count = val
            out.append(rows.rows(ggrew))
            deltas.append((val - gseen)[ggrew])
            # What we have counted beyond what the removal took is still in the kernel.
            kept = np.maximum(gseen, val) - gone.popped
            base.update(zip(gids, kept.tolist(), strict=True))
            for i, left in zip(gids, gone.left.tolist(), strict=True):
                self._stamp(i, RETIRED_MAX_AGE if left else RETIRED_SHORT_AGE)
        for when in [b for b in self._buckets if b <= self._now]:
            for i in self._buckets.pop(when):
                del retired[i]
                base.pop(i, None)
                who = self.owner.pop(i, None)
                if who is not None:
                    self._disown(who)
        return CountTable.concat(*out), np.concatenate(deltas)

    def _stamp(self, i: bytes, age: int) -> None:
        old = self.retired.get(i)
        if old is not None:
            self._buckets[old].discard(i)
        self.retired[i] = self._now + age
        self._buckets.setdefault(self._now + age, set()).add(i)

    def of_pids(self, pids: np.ndarray) -> np.ndarray:
        """Ids of every key this keeps a baseline for whose pid is one of ``pids``."""
        if not len(pids) or not self.base:
            return np.empty(0, dtype=object)
        ids = objects(list(self.base))
        return ids[np.isin(key_fields(ids)["pid"], pids)]

    def claim(self, ids: np.ndarray, owners: np.ndarray) -> None:
        """Removed keys ``ids`` belonged to the tasks ``owners``; a key that already has an
        owner (it was removed before, and is back) keeps it."""
        for i, who in zip(ids.tolist(), owners.tolist(), strict=True):
            if i in self.retired and i not in self.owner:
                self.owner[i] = who
                self.owned[who] = self.owned.get(who, 0) + 1

    def _disown(self, who: int) -> None:
        left = self.owned[who] - 1
        if left:
            self.owned[who] = left
        else:
            del self.owned[who]
            self.released.append(who)

    def take_released(self) -> list[int]:
        """Task ids nothing more can come back to (their removed keys are all forgotten)
        since the last call: the recorder stops keeping their rows."""
        out, self.released = self.released, []
        return out

    def owners(self, ids: np.ndarray) -> np.ndarray:
        """The owner of each key in ``ids`` (-1: none, i.e. named by its pid now)."""
        own = self.owner
        return np.fromiter((own.get(i, -1) for i in ids.tolist()), dtype=np.int64, count=len(ids))
