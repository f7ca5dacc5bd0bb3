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
keeps it until the key has been absent from two complete snapshots in a row: what comes
back is not counted again.
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


RETIRED_MAX_AGE = 10  # snapshots a removed key's baseline is kept at most


class Deltas:
    """Per-interval increments of cumulative counts that a snapshot may under-read."""

    def __init__(self) -> None:
        self.base: dict[CountKey, int] = {}
        # removed keys -> [complete snapshots absent since, snapshots since removal]
        self.retired: dict[CountKey, list[int]] = {}

    def take(
        self,
        counts: dict[CountKey, CountVal],
        gone: dict[CountKey, tuple[int, int]] | None = None,
        complete: bool = True,
    ) -> list[tuple[CountKey, int, CountVal]]:
        """(key, increment since the highest count seen before, value) for keys that grew.

        ``gone``: keys just removed from the shared map, as (the count the removal took,
        the count still in cache slots right after).  What the kernel still holds of such
        a key — in slots, or zeroed in a slot and not yet merged — comes back later, into a
        map element that is removed again; the baseline is moved so that none of it is
        counted twice and all of it is counted once.  A removed key is forgotten once two
        ``complete`` snapshots (every CPU's cache read) in a row lack it, or after
        ``RETIRED_MAX_AGE`` snapshots (memory stays bounded under constant churn, where few
        snapshots are complete; by then its slots have long been evicted).
        """
        gone = gone or {}
        out: list[tuple[CountKey, int, CountVal]] = []
        for key, val in counts.items():
            if key in gone:
                continue
            if key in self.retired:
                self.retired[key][0] = 0
            self._grow(key, val, out)
        for key, (popped, left) in gone.items():
            old = counts.get(key)
            val = (popped + left, old[1] if old else 0, old[2] if old else 0)
            self._grow(key, val, out)
            # What we have counted beyond what the removal took is still in the kernel.
            self.base[key] -= popped
            self.retired[key] = [0, 0]
        for key, age in list(self.retired.items()):
            age[1] += 1
            if key not in counts and key not in gone and complete:
                age[0] += 1
            if age[0] >= 2 or age[1] > RETIRED_MAX_AGE:
                del self.retired[key]
                self.base.pop(key, None)
        return out

    def _grow(
        self, key: CountKey, val: CountVal, out: list[tuple[CountKey, int, CountVal]]
    ) -> None:
        seen = self.base.get(key, 0)
        if val[0] > seen:
            out.append((key, val[0] - seen, val))
            self.base[key] = val[0]
        else:
            self.base[key] = seen
