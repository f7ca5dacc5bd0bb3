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


class Deltas:
    """Per-interval increments of cumulative counts that a snapshot may under-read."""

    def __init__(self) -> None:
        self.base: dict[CountKey, int] = {}

    def take(self, counts: dict[CountKey, CountVal]) -> list[tuple[CountKey, int, CountVal]]:
        """(key, increment since the highest count seen before, value) for keys that grew."""
        out = []
        for key, val in counts.items():
            seen = self.base.get(key, 0)
            if val[0] > seen:
                out.append((key, val[0] - seen, val))
                self.base[key] = val[0]
        return out
