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
"""

from __future__ import annotations

from collections.abc import Iterable

CountKey = tuple[int, int, int, int, int, int, int]  # pid, tgid, vso, xfeatures, event, bits, arg
CountVal = tuple[int, int, int]  # count, first_ns, last_ns (kernel monotonic; last: see .c)


def combine(
    counts: dict[CountKey, CountVal],
    cached: Iterable[tuple[int, CountKey, CountVal]],
    unstable: set[int],
) -> tuple[dict[CountKey, CountVal], int]:
    """``counts`` (read first) plus the cache slots ``(cpu, key, value)`` (read second) of
    every CPU not in ``unstable``; and how many counts were left for a later snapshot."""
    out = dict(counts)
    deferred = 0
    for cpu, key, (count, first, last) in cached:
        if cpu in unstable:
            deferred += count
            continue
        old = out.get(key)
        out[key] = (
            (count, first, last)
            if old is None
            else (old[0] + count, min(old[1], first), max(old[2], last))
        )
    return out, deferred


# How long a removed key's baseline is kept after the key was last seen, in snapshots: long
# while a cache slot is known to hold part of it (it comes back when the slot is evicted),
# short otherwise (only a count that was moving from a slot to the map as the key was
# removed can still come back, and that is over in microseconds).
RETIRED_MAX_AGE = 10
RETIRED_SHORT_AGE = 2


class Deltas:
    """Per-interval increments of cumulative counts that a snapshot may under-read."""

    def __init__(self) -> None:
        self.base: dict[CountKey, int] = {}
        # Removed keys -> the snapshot after which they are forgotten; the buckets (by that
        # snapshot) let a drain expire them without walking every removed key.
        self.retired: dict[CountKey, int] = {}
        self._buckets: dict[int, set[CountKey]] = {}
        # Removed keys -> whose they were (the recorder's task id): what comes back of a
        # key after its task was removed is that task's, whoever has the pid by then.
        self.owner: dict[CountKey, int] = {}
        self._now = 0

    def take(
        self,
        counts: dict[CountKey, CountVal],
        gone: dict[CountKey, tuple[int, int]] | None = None,
    ) -> list[tuple[CountKey, int, CountVal]]:
        """(key, increment since the highest count seen before, value) for keys that grew.

        ``gone``: keys just removed from the shared map, as (the count the removal took,
        the count still in cache slots right after).  What the kernel still holds of such
        a key — in slots, or zeroed in a slot and not yet merged — comes back later, into a
        map element that is removed again; the baseline is moved so that none of it is
        counted twice and all of it is counted once.  A removed key is forgotten
        ``RETIRED_MAX_AGE`` snapshots after it was last seen in a slot, or
        ``RETIRED_SHORT_AGE`` after its removal if no slot held any of it.
        """
        self._now += 1
        gone = gone or {}
        out: list[tuple[CountKey, int, CountVal]] = []
        retired = self.retired
        for key, val in counts.items():
            if key in gone:
                continue
            if key in retired:
                self._stamp(key, RETIRED_MAX_AGE)  # still in the kernel: keep it
            self._grow(key, val, out)
        for key, (popped, left) in gone.items():
            old = counts.get(key)
            val = (popped + left, old[1] if old else 0, old[2] if old else 0)
            self._grow(key, val, out)
            # What we have counted beyond what the removal took is still in the kernel.
            self.base[key] -= popped
            self._stamp(key, RETIRED_MAX_AGE if left else RETIRED_SHORT_AGE)
        for at in [b for b in self._buckets if b <= self._now]:
            for key in self._buckets.pop(at):
                del retired[key]
                self.base.pop(key, None)
                self.owner.pop(key, None)
        return out

    def _stamp(self, key: CountKey, age: int) -> None:
        old = self.retired.get(key)
        if old is not None:
            self._buckets[old].discard(key)
        self.retired[key] = self._now + age
        self._buckets.setdefault(self._now + age, set()).add(key)

    def _grow(
        self, key: CountKey, val: CountVal, out: list[tuple[CountKey, int, CountVal]]
    ) -> None:
        seen = self.base.get(key, 0)
        if val[0] > seen:
            out.append((key, val[0] - seen, val))
            self.base[key] = val[0]
        else:
            self.base[key] = seen
