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

Shapes: under process churn a drain handles 100k+ keys, so counts are tables, not Python
objects per key (a drain that costs ~20 µs per key falls behind at ~5,000 processes/s on
two CPUs, holds more at the next drain, and spirals).  A count table is a pandas DataFrame
indexed by the key's *id* — the key's seven fields packed into :data:`KEY_DTYPE` as one
``bytes`` — with the fields as columns and ``count``, ``first_ns``, ``last_ns``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

CountKey = tuple[int, int, int, int, int, int, int]  # pid, tgid, vso, xfeatures, event, bits, arg
CountVal = tuple[int, int, int]  # count, first_ns, last_ns (kernel monotonic; last: see .c)
KEY_FIELDS = ("pid", "tgid", "vso", "xfeatures", "event", "load_bits", "arg")
VALUE_FIELDS = ("count", "first_ns", "last_ns")
# The key's identity: every field widened to 64 bits, whatever the kernel struct's layout.
KEY_DTYPE = np.dtype([(n, "<u8") for n in KEY_FIELDS])
VALUE_DTYPE = np.dtype([(n, "<u8") for n in VALUE_FIELDS])

# How long a removed key's baseline is kept after the key was last seen, in snapshots: long
# while a cache slot is known to hold part of it (it comes back when the slot is evicted),
# short otherwise (only a count that was moving from a slot to the map as the key was
# removed can still come back, and that is over in microseconds).
RETIRED_MAX_AGE = 10
RETIRED_SHORT_AGE = 2


def key_ids(keys: np.ndarray) -> np.ndarray:
    """Ids (an object array of ``bytes``) of the keys in a structured array that has the
    :data:`KEY_FIELDS` (any integer types, any layout)."""
    packed = np.empty(len(keys), KEY_DTYPE)
    for name in KEY_FIELDS:
        packed[name] = keys[name]
    out = np.empty(len(keys), dtype=object)
    out[:] = packed.view(f"V{KEY_DTYPE.itemsize}").tolist()
    return out


def ids_of(keys: Iterable[CountKey]) -> np.ndarray:
    """Ids of key tuples."""
    arr = np.array(list(keys), dtype=np.uint64).reshape(-1, len(KEY_FIELDS))
    return key_ids(arr.view(KEY_DTYPE).reshape(-1))


def key_fields(ids: Iterable[bytes]) -> np.ndarray:
    """The keys (a :data:`KEY_DTYPE` array) that ``ids`` stand for."""
    raw = b"".join(ids)
    return np.frombuffer(raw, dtype=KEY_DTYPE) if raw else np.empty(0, KEY_DTYPE)


def table(keys: np.ndarray, values: np.ndarray) -> pd.DataFrame:
    """A count table from structured arrays of keys (:data:`KEY_FIELDS`) and values
    (:data:`VALUE_FIELDS`)."""
    import pandas as pd

    cols = {n: keys[n].astype(np.uint64) for n in KEY_FIELDS}
    cols["count"] = values["count"].astype(np.int64)
    cols["first_ns"] = values["first_ns"].astype(np.uint64)
    cols["last_ns"] = values["last_ns"].astype(np.uint64)
    return pd.DataFrame(cols, index=pd.Index(key_ids(keys), dtype=object))


def empty() -> pd.DataFrame:
    """A count table with no rows."""
    return table(np.empty(0, KEY_DTYPE), np.empty(0, VALUE_DTYPE))


def table_of(
    counts: Mapping[CountKey, CountVal] | Iterable[tuple[CountKey, CountVal]],
) -> pd.DataFrame:
    """A count table from key tuples (the ftrace backend, a cache read, tests); a key given
    twice is merged (counts added, first the earliest, last the latest)."""
    pairs = list(counts.items() if isinstance(counts, Mapping) else counts)
    keys = np.array([k for k, _ in pairs], dtype=np.uint64).reshape(-1, len(KEY_FIELDS))
    vals = np.array([v for _, v in pairs], dtype=np.uint64).reshape(-1, len(VALUE_FIELDS))
    k = np.empty(len(pairs), KEY_DTYPE)
    v = np.empty(len(pairs), VALUE_DTYPE)
    for i, n in enumerate(KEY_FIELDS):
        k[n] = keys[:, i]
    for i, n in enumerate(VALUE_FIELDS):
        v[n] = vals[:, i]
    out = table(k, v)
    return merged(out) if out.index.has_duplicates else out


def merged(t: pd.DataFrame) -> pd.DataFrame:
    """One row per key: counts added, the earliest first_ns, the latest last_ns."""
    agg = {n: "first" for n in KEY_FIELDS} | {"count": "sum", "first_ns": "min", "last_ns": "max"}
    return t.groupby(level=0, sort=False).agg(agg)


def as_dict(t: pd.DataFrame) -> dict[CountKey, CountVal]:
    """A count table as {key tuple: (count, first_ns, last_ns)} (for tests and checks)."""
    keys = zip(*(t[n].astype(np.int64).tolist() for n in KEY_FIELDS), strict=True)
    vals = zip(*(t[n].astype(np.int64).tolist() for n in VALUE_FIELDS), strict=True)
    return dict(zip(keys, vals, strict=True))


def combine(
    counts: pd.DataFrame,
    cached: Iterable[tuple[int, CountKey, CountVal]],
    unstable: set[int],
) -> tuple[pd.DataFrame, int]:
    """``counts`` (read first) plus the cache slots ``(cpu, key, value)`` (read second) of
    every CPU not in ``unstable``; and how many counts were left for a later snapshot."""
    import pandas as pd

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
    both = slots.index.intersection(counts.index)
    out = counts.copy()
    if len(both):
        s = slots.loc[both]
        out.loc[both, "count"] += s["count"]
        out.loc[both, "first_ns"] = np.minimum(out.loc[both, "first_ns"], s["first_ns"])
        out.loc[both, "last_ns"] = np.maximum(out.loc[both, "last_ns"], s["last_ns"])
    return pd.concat([out, slots.drop(both)]), deferred


class Deltas:
    """Per-interval increments of cumulative counts that a snapshot may under-read.

    State per key id: ``base`` (the highest count already counted, less what a removal
    took), ``expires`` (removed keys: the snapshot after which they are forgotten; 0 for a
    key still in the kernel's map) and ``owner`` (removed keys: the recorder's task id they
    belonged to, -1 if none was given).
    """

    def __init__(self) -> None:
        self._state: pd.DataFrame | None = None  # made at first use: pandas is imported late
        self._now = 0

    @property
    def state(self) -> pd.DataFrame:
        if self._state is None:
            import pandas as pd

            self._state = pd.DataFrame(
                {
                    "base": np.empty(0, np.int64),
                    "expires": np.empty(0, np.int64),
                    "owner": np.empty(0, np.int64),
                    "pid": np.empty(0, np.uint64),
                },
                index=pd.Index([], dtype=object),
            )
        return self._state

    @state.setter
    def state(self, value: pd.DataFrame) -> None:
        self._state = value

    def take(self, counts: pd.DataFrame, gone: pd.DataFrame | None = None) -> pd.DataFrame:
        """The keys that grew: ``counts``' rows (key fields, ``first_ns``, ``last_ns``) with
        ``count`` their cumulative count and ``delta`` the increment since the highest count
        seen before.

        ``gone`` (indexed by key id, columns ``popped`` and ``left``): keys just removed
        from the shared map, with the count the removal took and the count still in cache
        slots right after.  What the kernel still holds of such a key — in slots, or zeroed
        in a slot and not yet merged — comes back later, into a map element that is removed
        again; the baseline is moved so that none of it is counted twice and all of it is
        counted once.  A removed key is forgotten ``RETIRED_MAX_AGE`` snapshots after it
        was last seen in a slot, or ``RETIRED_SHORT_AGE`` after its removal if no slot held
        any of it.  ``counts`` must have a row for every key of ``gone`` it can (first and
        last times); a key without one is reported with times 0.
        """
        import pandas as pd

        self._now += 1
        now = self._now
        st = self.state
        if gone is None or not len(gone):
            gone = pd.DataFrame(
                {"popped": np.empty(0, np.int64), "left": np.empty(0, np.int64)},
                index=pd.Index([], dtype=object),
            )
        is_gone = counts.index.isin(gone.index)
        live = counts[~is_gone]
        base = st["base"].reindex(live.index, fill_value=0).to_numpy()
        cnt = live["count"].to_numpy(np.int64)
        grew_live = cnt > base
        expires = st["expires"].reindex(live.index, fill_value=0).to_numpy()
        # A removed key still (or again) in the kernel: keep it.
        expires = np.where(expires > 0, now + RETIRED_MAX_AGE, 0)
        live_state = pd.DataFrame(
            {
                "base": np.maximum(base, cnt),
                "expires": expires,
                "owner": st["owner"].reindex(live.index, fill_value=-1).to_numpy(),
                "pid": live["pid"].to_numpy(),
            },
            index=live.index,
        )
        out_live = live[grew_live].assign(delta=(cnt - base)[grew_live])

        popped = gone["popped"].to_numpy(np.int64)
        left = gone["left"].to_numpy(np.int64)
        rows = counts.reindex(gone.index)
        if rows["pid"].isna().any():  # keys this snapshot has no row for: fields from ids
            fields = key_fields(gone.index)
            for n in KEY_FIELDS:
                rows[n] = fields[n]
            for n in ("first_ns", "last_ns"):
                rows[n] = rows[n].fillna(0).astype(np.uint64)
        val = popped + left
        gbase = st["base"].reindex(gone.index, fill_value=0).to_numpy()
        grew_gone = val > gbase
        gone_state = pd.DataFrame(
            {
                # What we have counted beyond what the removal took is still in the kernel.
                "base": np.maximum(gbase, val) - popped,
                "expires": np.where(left > 0, now + RETIRED_MAX_AGE, now + RETIRED_SHORT_AGE),
                "owner": st["owner"].reindex(gone.index, fill_value=-1).to_numpy(),
                "pid": rows["pid"].to_numpy(np.uint64),
            },
            index=gone.index,
        )
        out_gone = rows[grew_gone].assign(count=val[grew_gone], delta=(val - gbase)[grew_gone])

        rest = st[~st.index.isin(live.index) & ~st.index.isin(gone.index)]
        rest = rest[(rest["expires"] == 0) | (rest["expires"] > now)]
        self.state = pd.concat([rest, live_state, gone_state])
        out = pd.concat([out_live, out_gone])
        return out.astype(
            {n: np.uint64 for n in KEY_FIELDS}
            | {"count": np.int64, "delta": np.int64, "first_ns": np.uint64, "last_ns": np.uint64}
        )

    def retired(self) -> pd.Index:
        """Ids of removed keys not forgotten yet."""
        return self.state.index[self.state["expires"].to_numpy() > 0]

    def of_pids(self, pids: np.ndarray) -> pd.Index:
        """Ids of every key this keeps a baseline for whose pid is one of ``pids``."""
        return self.state.index[np.isin(self.state["pid"].to_numpy(), pids)]

    def claim(self, ids: pd.Index, owners: np.ndarray) -> None:
        """Removed keys ``ids`` belonged to the tasks ``owners``; a key that already has an
        owner (it was removed before, and is back) keeps it."""
        st = self.state
        at = st.index.get_indexer(ids)
        cur = st["owner"].to_numpy().copy()
        ok = at >= 0
        at, own = at[ok], np.asarray(owners)[ok]
        unset = cur[at] < 0
        cur[at[unset]] = own[unset]
        st["owner"] = cur

    def owners(self, ids: pd.Index) -> np.ndarray:
        """The owner of each key in ``ids`` (-1: none, i.e. named by its pid now)."""
        return self.state["owner"].reindex(ids, fill_value=-1).to_numpy(np.int64, copy=True)

    def base(self, key: CountKey) -> int | None:
        """The baseline of one key (tests and debugging)."""
        got = self.state["base"].get(ids_of([key])[0])
        return None if got is None else int(got)

    def is_retired(self, key: CountKey) -> bool:
        return bool(ids_of([key])[0] in self.retired())
